"""The Python API: Forecaster on arrays and long DataFrames, adapters as self-describing artifacts, run_study and
evaluate as functions."""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_PLAN, tiny_plan

import flopcast
from flopcast import Forecaster
from flopcast.errors import DataError

PLAN = tiny_plan(name="api", eval={**TINY_PLAN["eval"], "contexts": [64, 96]},
                 train={**TINY_PLAN["train"], "eval_every": 3, "checkpoint_every": 3},
                 stages=[{"name": "train", "kind": "train", "steps": 4}])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return out, flopcast.run_study(PLAN, out, progress=False)


def _long_frame(rng) -> pd.DataFrame:
    """Three series of different lengths; "b" is sampled every 0.5 time units, "c" daily."""
    parts = []
    for key, n, t in (("a", 9, np.arange(9.0)), ("b", 14, 10 + 0.5 * np.arange(14)), ("c", 6, None)):
        v = rng.random((n, 2)) * 5
        stamps = t if t is not None else pd.date_range("2026-01-01", periods=n, freq="D")
        parts.append(pd.DataFrame({"item": key, "when": stamps, "prey": v[:, 0], "predator": v[:, 1]}))
    frames = [p.astype({"when": "object"}) for p in parts]
    return pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=0)  # shuffled rows


def test_predict_on_a_long_dataframe_round_trip(tiny):
    rng = np.random.default_rng(0)
    df = _long_frame(rng)
    fc = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2")
    out = fc.predict(df, horizon=3, samples=4, quantiles=(0.1, 0.9), id_column="item", timestamp_column="when")
    assert list(out.columns) == ["item", "when", "prey", "predator", "prey_q0.1", "predator_q0.1", "prey_q0.9",
                                 "predator_q0.9"]
    order = list(dict.fromkeys(df["item"]))  # ids in order of first appearance
    assert list(out["item"]) == [k for k in order for _ in range(3)]
    by_id = {k: list(g["when"]) for k, g in out.groupby("item")}
    assert by_id["a"] == [9.0, 10.0, 11.0] and by_id["b"] == [17.0, 17.5, 18.0]  # each series' own spacing
    assert by_id["c"] == list(pd.date_range("2026-01-07", periods=3, freq="D"))
    assert np.isfinite(out[["prey", "predator"]].to_numpy()).all()
    assert (out["prey_q0.1"] <= out["prey_q0.9"]).all()
    # the same series as arrays: the same point forecasts, step indices as timestamps
    arrays = [df[df["item"] == k].sort_values("when")[["prey", "predator"]].to_numpy() for k in order]
    again = fc.predict(arrays, horizon=3, samples=4, quantiles=(0.1, 0.9))
    np.testing.assert_array_equal(again[["x0", "x1"]].to_numpy(), out[["prey", "predator"]].to_numpy())
    assert list(again["timestamp"][:3]) == [len(arrays[0]) + k for k in range(3)] and list(again["id"][:3]) == [0] * 3
    greedy = fc.predict(arrays[0], horizon=2)  # one array; greedy: no quantile columns
    assert list(greedy.columns) == ["id", "timestamp", "x0", "x1"] and len(greedy) == 2


def test_predict_names_the_series_at_fault(tiny):
    fc = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2")
    df = pd.DataFrame({"id": ["ok"] * 5 + ["short"], "timestamp": [0, 1, 2, 3, 4, 0], "y": [1.0, 2, 3, 4, 5, 6]})
    with pytest.raises(DataError, match=r"^series 'short' has 1 step\(s\); forecasting needs at least 2$"):
        fc.predict(df)
    df.loc[2, "y"] = np.nan
    with pytest.raises(DataError, match=r"1 missing value\(s\); the first in series 'ok', variable 'y', row 2"):
        fc.predict(df[df.id == "ok"])
    with pytest.raises(DataError, match="has time 1 twice"):
        fc.predict(pd.DataFrame({"id": [1, 1, 1], "timestamp": [0, 1, 1], "y": [1.0, 2, 3]}))


def test_adapter_alone_reproduces_the_cli_forecast(study, tmp_path, capsys):
    from flopcast.cli import main

    out, res = study
    adapter = out / "stages" / "train" / res.stages["train"].best.run / "adapter_best"
    rng = np.random.default_rng(3)
    rows = [{"series": k, "t": t, "prey": v[0], "predator": v[1]}
            for k in ("s1", "s2") for t, v in enumerate(rng.random((12, 2)) * 3)]
    pd.DataFrame(rows).to_csv(tmp_path / "in.csv", index=False)
    code = main(["forecast", "-i", str(tmp_path / "in.csv"), "--model", "tiny-qwen2", "--adapter", str(adapter),
                 "--steps", "3", "-o", str(tmp_path / "cli.csv")])
    assert code == 0, capsys.readouterr().err
    cli = pd.read_csv(tmp_path / "cli.csv")
    fc = Forecaster.from_pretrained(adapter)  # the adapter names its base model and codec
    from flopcast.config import load_toml

    assert fc.model_name == "tiny-qwen2" and fc.codec.state() == load_toml(adapter.parent / "config.toml")["codec"]
    api = fc.predict(pd.DataFrame(rows), horizon=3, id_column="series", timestamp_column="t")
    np.testing.assert_allclose(api[["prey", "predator"]].to_numpy(), cli[["prey", "predator"]].to_numpy(), rtol=1e-6)
    assert list(api["series"]) == list(cli["series"])


def _card_table(text: str, heading: str) -> list[list[str]]:
    block = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in block.splitlines()
            if ln.startswith("|") and not ln.startswith("| ---")][1:]


def test_model_card_numbers_are_the_runs_files(study):
    import json

    out, res = study
    run = out / "stages" / "train" / res.stages["train"].best.run
    card = (run / "adapter_best" / "README.md").read_text()
    metrics = json.loads((out / "stages" / "train" / "eval" / "metrics.json").read_text())
    status = json.loads((run / "status.json").read_text())
    table = _card_table(card, "## Test metrics")
    assert [int(r[0]) for r in table] == [64, 96]
    for S, windows, mse, mae, _, flops in table:
        m = metrics["contexts"][S]["model"]
        assert float(mse) == pytest.approx(m["mse"], rel=1e-5) and float(mae) == pytest.approx(m["mae"], rel=1e-5)
        assert int(windows) == metrics["contexts"][S]["n_windows"] and int(flops) == m["flops"]
    settings = dict(r[:2] for r in _card_table(card, "## Training"))
    assert settings["training FLOPs"].startswith(f"{status['flops']} (")
    assert settings["base model"] == "`tiny-qwen2`" and re.search(r"rank 2, alpha", settings["LoRA"])
    assert f"Forecaster.from_pretrained(\"{run / 'adapter_best'}\")" in card
    assert "Not evaluated yet" in (run / "adapter" / "README.md").read_text()  # the last adapter was not evaluated


def test_run_study_and_evaluate_return_typed_results(study, sim_file):
    from flopcast.results import EvalResult, StudyResult

    out, res = study
    assert isinstance(res, StudyResult) and res.stages["train"].test.score(64).n_windows > 0
    again = flopcast.run_study(PLAN, out, progress=False)  # resumes: the same results, nothing redone
    assert again.stages["train"].test.score(64).mse == res.stages["train"].test.score(64).mse
    ev = flopcast.evaluate("tiny-qwen2", data=sim_file, contexts=(64,), max_series=2, baselines=("persistence",),
                           n_boot=10)
    assert isinstance(ev, EvalResult) and set(ev.contexts[64].scores) == {"model", "persistence"}


def test_import_flopcast_is_light_and_exports_the_api():
    code = ("import sys, flopcast; assert 'torch' not in sys.modules; "
            "assert callable(flopcast.evaluate) and callable(flopcast.run_study); "
            "import flopcast.evaluation; assert flopcast.evaluate.__module__ == 'flopcast.api.study'; "
            "assert flopcast.Forecaster.__module__ == 'flopcast.api.forecaster'")
    subprocess.run([sys.executable, "-c", code], check=True)
