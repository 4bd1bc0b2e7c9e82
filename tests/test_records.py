"""The ledger never forgets: evaluations report per batch (kill -9 included), work records its FLOPs beside its
results, a lost ledger stops a study with the numbers and ``flopcast budget rebuild`` makes it again, and a ledger
that cannot be written is one line."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from helpers import one_stage_plan
from helpers import run_cli as run

from flopcast.budget.ledger import Ledger
from flopcast.budget.records import read_records, recorded_flops
from flopcast.errors import FlopcastError
from flopcast.study.plan import plan_from_dict
from flopcast.study.runner import run_plan

EVAL = dict(contexts=(64,), max_series=4, batch_size=1, baselines=("persistence",), n_boot=10)

# an evaluation killed (SIGKILL) right after the ledger heard of its second batch
KILL_IN_EVAL = textwrap.dedent("""
    import os, signal, sys
    from flopcast.budget import ledger as L
    heard = []
    original = L.Ledger.progress
    def progress(self, *a, **k):
        original(self, *a, **k)
        heard.append(a)
        if len(heard) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    L.Ledger.progress = progress
    from flopcast.api.study import evaluate
    evaluate("tiny-qwen2", data=sys.argv[1], out_dir=sys.argv[2], ledger=sys.argv[3], budget=1e15, **{cfg})
""")


def test_kill9_in_eval_keeps_the_batches_it_finished(tmp_path, sim_file):
    db, out = tmp_path / "l.db", tmp_path / "eval"
    p = subprocess.run([sys.executable, "-c", KILL_IN_EVAL.format(cfg=repr(EVAL)), str(sim_file), str(out), str(db)],
                       capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    (e,) = Ledger(db).entries()  # opening it settles the dead process's row
    assert e.status == "abandoned" and 0 < e.flops_used < e.flops_planned
    (rec,) = read_records(out)  # written after the ledger heard: one batch behind it at most, never ahead
    assert 0 < rec.flops <= e.flops_used and rec.ledger_id == e.id and rec.status == "running"


def test_eval_records_what_it_charged(tmp_path, sim_file):
    from flopcast.api.study import evaluate

    db, out = tmp_path / "l.db", tmp_path / "eval"
    res = evaluate("tiny-qwen2", data=sim_file, out_dir=out, ledger=db, budget=1e15, **EVAL)
    (e,) = Ledger(db).entries()
    (rec,) = read_records(out)
    assert e.status == rec.status == "done" and rec.flops == e.flops_used == res.score(64).flops


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished one-stage study (4 steps of training, an evaluation)."""
    out = tmp_path_factory.mktemp("study") / "s"
    run_plan(plan_from_dict(one_stage_plan()), out, progress=False)
    return out


def test_study_records_cover_its_ledger(study):
    used = Ledger(study / "ledger.db").used()
    assert recorded_flops(study) == used > 0
    kinds = sorted(r.kind for r in read_records(study))
    assert kinds == ["eval", "train"]


def test_deleted_ledger_stops_the_study_then_rebuild_restores_it(study, tmp_path, capsys):
    import shutil

    s = tmp_path / "s"
    shutil.copytree(study, s)
    used = Ledger(s / "ledger.db").used()
    for f in s.glob("ledger.db*"):
        f.unlink()
    plan = tmp_path / "p.toml"
    shutil.copy(s / "plan.toml", plan)
    code, _, err = run(capsys, "run", plan, "--out", s)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "missing" in err and f"{used:.3e}" in err and "budget rebuild" in err
    assert not (s / "ledger.db").exists()  # nothing started a new one

    code, out, _ = run(capsys, "budget", "rebuild", s)
    assert code == 0 and f"{used:.3e}" in out
    assert Ledger(s / "ledger.db").used() == used
    assert Ledger(s / "ledger.db").budget == one_stage_plan()["budget"]
    code, out, _ = run(capsys, "run", plan, "--out", s)
    assert code == 0 and f"FLOPs used {used:.3e}" in out


def test_a_ledger_with_less_than_the_records_stops_the_study(study, tmp_path, capsys):
    import shutil

    s = tmp_path / "s"
    shutil.copytree(study, s)
    for f in s.glob("ledger.db*"):
        f.unlink()
    Ledger(s / "ledger.db", 2e10)  # an empty ledger in its place
    shutil.copy(s / "plan.toml", tmp_path / "p.toml")
    code, _, err = run(capsys, "run", tmp_path / "p.toml", "--out", s)
    assert code == 2 and "holds 0.000e+00 FLOPs used" in err
    code, _, err = run(capsys, "budget", "rebuild", s)
    assert code == 2 and "--force" in err
    code, out, _ = run(capsys, "budget", "rebuild", s, "--force")
    assert code == 0 and "kept as" in out and len(list(s.glob("ledger.db.old-*"))) == 1
    assert Ledger(s / "ledger.db").used() == recorded_flops(s)


def test_rebuild_mistakes_are_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "budget", "rebuild", tmp_path / "nothing")
    assert code == 2 and "no such directory" in err
    code, _, err = run(capsys, "budget", "rebuild", tmp_path)
    assert code == 2 and "no recorded work" in err


def test_read_only_ledger_is_one_line(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    db = tmp_path / "l.db"
    Ledger(db, 1e12)
    db.chmod(0o444)
    with pytest.raises(FlopcastError, match="cannot write the ledger"):
        Ledger(db).reserve("x", "eval", 10)
    code, _, err = run(capsys, "budget", "set", db, "--budget", "2e12")
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("why", ["database or disk is full", "attempt to write a readonly database"])
def test_a_full_disk_or_read_only_file_is_one_line(tmp_path, monkeypatch, why):
    db = tmp_path / "l.db"
    lg = Ledger(db, 1e12)
    i = lg.reserve("x", "eval", 10)

    real = sqlite3.connect

    class Full:
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *a):
            if sql.startswith("UPDATE"):
                raise sqlite3.OperationalError(why)
            return self.con.execute(sql, *a)

        def __getattr__(self, name):
            return getattr(self.con, name)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: Full(real(*a, **k)))
    with pytest.raises(FlopcastError, match=f"{why}.*free disk space") as e:
        lg.progress(i, 5)
    assert "\n" not in str(e.value)


def test_a_full_disk_in_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from flopcast.api import tools

    def full(ds, path, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(tools, "save_h5", full)
    code, _, err = run(capsys, "data", "simulate", "-o", tmp_path / "d.h5", "--n", 2)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err


def test_a_full_disk_at_a_checkpoint_loses_no_flops(tmp_path, data, monkeypatch):
    import errno
    import json

    from helpers import train_tiny

    from flopcast.training.checkpoint import CheckpointManager

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(CheckpointManager, "save", full)
    db = tmp_path / "l.db"
    with pytest.raises(OSError):
        train_tiny(tmp_path / "run", data, steps=12, ledger=Ledger(db, 1e13), eval_every=4, checkpoint_every=4)
    (e,) = Ledger(db).entries()
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val_loss" in rows[-1] and rows[-1]["step"] == 4  # the validation ran just before the checkpoint
    assert e.flops_used == rows[-1]["flops"] == read_records(tmp_path / "run")[0].flops
