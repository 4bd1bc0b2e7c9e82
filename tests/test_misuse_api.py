"""The misuse harness for the Python API (see test_misuse.py for the CLI): Hypothesis draws one argument of a
public function from a pool of wrong values -- numbers at and past their edges, strings, containers of the wrong
shape, paths that are missing, a directory, an empty file, another program's database, the ledger -- and every
call must return, or raise a :class:`FlopcastError` with one line; no file it was given changes."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_PLAN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flopcast.budget.ledger import Ledger
from flopcast.config import SimConfig
from flopcast.data.io import save_h5
from flopcast.data.simulate import simulate
from flopcast.errors import FlopcastError

BOX = Path(tempfile.mkdtemp(prefix="flopcast-misuse-api-"))
WRONG: list[Any] = [None, 0, -1, 2.5, math.nan, math.inf, 1e30, True, "", "ü€", "a,b", [], [0.5], {}, (1, 2),
                    np.array([]), np.array([[np.nan, 1.0]]), object(), b"bytes", pd.DataFrame()]
PATHS = ["", "missing/x.h5", "dir", "empty.csv", "other.db", "junk.bin", "l.db", "d.h5"]
HYP = settings(max_examples=int(os.environ.get("FLOPCAST_MISUSE_EXAMPLES", 80)), deadline=None,
               suppress_health_check=[HealthCheck.too_slow], derandomize=True)
FEW = settings(HYP, max_examples=max(HYP.max_examples // 3, 10))


def _box() -> Path:
    """Files the calls get as arguments (made once; every call must leave them as they are)."""
    if (BOX / "d.h5").exists():
        return BOX
    ds = simulate(SimConfig(n_systems=6, n_steps=30, seed=4))
    save_h5(ds, BOX / "d.h5")
    Ledger(BOX / "l.db", 1e15)
    (BOX / "dir").mkdir()
    (BOX / "empty.csv").write_bytes(b"")
    (BOX / "junk.bin").write_bytes(bytes(range(256)))
    with sqlite3.connect(BOX / "other.db") as c:
        c.execute("CREATE TABLE t (x)")
    return BOX


def _hashes() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in BOX.iterdir()
            if p.is_file() and not p.name.endswith(("-wal", "-shm")) and p.name != "l.db"}


def wrong_value() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(WRONG), st.sampled_from(PATHS).map(lambda n: str(BOX / n) if n else n))


def holds(call: Any, value: Any = None) -> None:
    """The invariant: a result, or one FlopcastError line; the box's files unchanged, the ledger a ledger, nothing
    written into the working directory (an empty one, here) but a file the drawn ``value`` names."""
    before, used = _hashes(), Ledger(BOX / "l.db").used()
    cwd, here = os.getcwd(), BOX / "cwd"
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir()
    os.chdir(here)
    try:
        call()
    except FlopcastError as e:
        assert str(e) and "\n" not in str(e), repr(e)
    finally:
        os.chdir(cwd)
    assert _hashes() == before
    assert Ledger(BOX / "l.db").used() >= used
    unasked = [p.name for p in here.iterdir() if p.name != value]
    assert not unasked, f"written into the working directory: {unasked}"


@pytest.fixture(scope="module")
def forecaster():
    from flopcast import Forecaster

    _box()
    return Forecaster.from_pretrained("tiny-qwen2")


FRAME = pd.DataFrame({"id": ["a"] * 6 + ["b"] * 6, "timestamp": list(range(6)) * 2,
                      "prey": np.linspace(1, 3, 12), "pred": np.linspace(2, 4, 12)})
PREDICT = {"data": FRAME, "horizon": 2, "samples": 1, "quantiles": (0.1, 0.9), "context_tokens": None,
           "id_column": None, "timestamp_column": None, "target_columns": None, "seed": 0, "batch_size": 4}


@pytest.mark.slow
@HYP
@given(name=st.sampled_from(sorted(PREDICT)), value=wrong_value())
def test_predict(forecaster, name, value):
    holds(lambda: forecaster.predict(**{**PREDICT, name: value}), value)


FORECAST = {"series": [np.linspace(1, 2, 8)[:, None]], "horizon": 2, "samples": 1, "quantiles": (0.5,),
            "context_tokens": None, "seed": 0, "batch_size": 4, "temperature": 1.0}


@pytest.mark.slow
@HYP
@given(name=st.sampled_from(sorted(FORECAST)), value=wrong_value())
def test_forecast(forecaster, name, value):
    holds(lambda: forecaster.forecast(**{**FORECAST, name: value}), value)


@pytest.mark.slow
@FEW
@given(name=st.sampled_from(["model_or_adapter", "adapter", "ledger", "budget", "device", "dtype"]),
       value=wrong_value())
def test_from_pretrained(name, value):
    from flopcast import Forecaster

    _box()
    base = {"model_or_adapter": "tiny-qwen2", "ledger": str(BOX / "l.db")}
    holds(lambda: Forecaster.from_pretrained(**{**base, name: value}), value)


EVALUATE = {"model": "tiny-qwen2", "data": None, "adapter": None, "config": None, "out_dir": None, "ledger": None,
            "budget": None, "contexts": (64,), "max_series": 1, "baselines": ("persistence",), "n_boot": 10}


@pytest.mark.slow
@FEW
@given(name=st.sampled_from(sorted(EVALUATE)), value=wrong_value())
def test_evaluate(name, value):
    from flopcast import evaluate

    _box()
    holds(lambda: evaluate(**{**EVALUATE, "data": str(BOX / "d.h5"), name: value}), value)


@pytest.mark.slow
@FEW
@given(name=st.sampled_from(["plan", "out_dir", "restart", "only", "budget", "stages", "eval"]), value=wrong_value())
def test_run_study(name, value, tmp_path_factory):
    from flopcast import run_study

    _box()
    plan = {**TINY_PLAN, "name": "m", "simulate": {"n_systems": 10, "n_steps": 30}, "stages": [
        {"name": "zs", "kind": "eval"}], "eval": {**TINY_PLAN["eval"], "max_series": 1, "n_boot": 10}}
    out = tmp_path_factory.mktemp("study") / "s"
    kwargs: dict[str, Any] = {"plan": plan, "out_dir": out, "progress": False}
    if name in ("budget", "stages", "eval"):
        kwargs["plan"] = {**plan, name: value}
    else:
        kwargs[name] = value
    holds(lambda: run_study(**kwargs), value)


@pytest.mark.slow
@HYP
@given(which=st.sampled_from(["simulate", "split", "inspect", "rebuild", "export", "init", "flops", "plan"]),
       value=wrong_value())
def test_tools(which, value):
    from flopcast.api import tools
    from flopcast.config import DataSpec, SimConfig, SplitConfig

    _box()
    out = BOX / "dir" / "new"
    calls = {
        "simulate": lambda: tools.simulate_to_file(value, SimConfig(n_systems=2, n_steps=10)),
        "split": lambda: tools.split_file(DataSpec(value), out.with_suffix(".json"), SplitConfig()),
        "inspect": lambda: tools.inspect_file(DataSpec(str(BOX / "d.h5")), plot=value),
        "rebuild": lambda: tools.rebuild_ledger(value),
        "export": lambda: tools.export_ledger(value, out.with_suffix(".csv"), force=True),
        "init": lambda: tools.init_ledger(value, 1e12),
        "flops": lambda: tools.flops_breakdown("tiny-qwen2", value, 2, 0, ("q_proj",), "train"),
        "plan": lambda: tools.plan_table("tiny-qwen2", 1e12, value, [2], [2]),
    }
    holds(calls[which], value)
