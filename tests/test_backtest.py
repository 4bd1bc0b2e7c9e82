"""Backtesting one's own series (issue 27): the time split, MASE and quantile scores, statsforecast's methods on the
same windows, training on one series, and Forecaster.fit."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli as run

from flopcast.config import CodecConfig, EvalConfig, SplitConfig
from flopcast.data.dataset import Dataset, split_dataset
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.errors import DataError
from flopcast.evaluation.classical import run_classical
from flopcast.evaluation.evaluate import EvalRun, evaluate
from flopcast.evaluation.metrics import mase_per_window, mase_scale, quantile_scores


def _seasonal(T: int = 60, season: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return (10 + 3 * np.sin(2 * np.pi * t / season) + 0.05 * t + 0.3 * rng.normal(size=T))[:, None]


def test_a_time_split_of_one_series_keeps_the_tail_out_of_training():
    s = np.arange(40.0)[:, None]
    sp, parts = split_dataset(Dataset([s]), SplitConfig(by="time", test_windows=3), horizon=5)
    assert parts["train"].series[0].max() == 19  # nothing at or after the validation origin is trained on
    assert parts["val"].origins == [[20]] and len(parts["val"].series[0]) == 25
    assert parts["test"].origins == [[25, 30, 35]] and len(parts["test"].series[0]) == 40
    assert sp.cuts == [[20, 25, 30, 35]] and '"by": "time"' in sp.to_json()
    with pytest.raises(DataError, match=r"series 0 has 21 steps; .* needs 22"):
        split_dataset(Dataset([s[:21]]), SplitConfig(by="time", test_windows=3), horizon=5)
    with pytest.raises(DataError, match="too few to split by series .* split by time"):
        split_dataset(Dataset([s]), SplitConfig(), horizon=5)


def test_mase_against_a_hand_computation():
    history = np.array([[1.0], [3.0], [2.0], [5.0], [4.0]])
    scale = mase_scale(history, season=2)
    assert scale.tolist() == [pytest.approx((1 + 2 + 2) / 3)]
    pred, truth = np.array([[[6.0], [6.0]]]), np.array([[[5.0], [8.0]]])
    assert mase_per_window(pred, truth, scale[None]).tolist() == [pytest.approx(1.5 / (5 / 3))]


def test_weighted_quantile_loss_and_coverage_by_hand():
    truth = np.array([[[1.0], [4.0]]])
    q = {0.1: np.array([[[0.0], [5.0]]]), 0.9: np.array([[[2.0], [6.0]]])}
    # pinball at 0.1: (1-0)*0.1 + (4-5)*(0.1-1) = 0.1 + 0.9; at 0.9: (1-2)*(0.9-1) + (4-6)*(0.9-1) = 0.1 + 0.2
    got = quantile_scores(q, truth)
    assert got["wql"] == pytest.approx(np.mean([2 * 1.0 / 5, 2 * 0.3 / 5]))
    assert got["coverage"] == {"0.1-0.9": 0.5}


def test_a_method_that_cannot_forecast_a_window_says_so():
    pred, missing = run_classical("auto_ets", [_seasonal(8), _seasonal(40)], horizon=3, season=6)
    assert np.isnan(pred[0]).all() and np.isfinite(pred[1]).all()
    assert str(missing) == "1 window(s): history shorter than 12 steps (season 6)"


def test_statsforecast_methods_score_the_time_splits_windows(tiny, tmp_path):
    from statsforecast.models import AutoETS

    s = _seasonal()
    test = split_dataset(Dataset([s]), SplitConfig(by="time", test_windows=3), horizon=6)[1]["test"]
    cfg = EvalConfig(contexts=(64,), horizon=6, baselines=("seasonal_naive", "auto_ets", "theta"), season=6,
                     n_boot=10)
    res = evaluate(tiny.model, tiny.tokenizer, LLMTimeCodec(CodecConfig(scale_mode="per_series")), test, cfg,
                   EvalRun(out_dir=tmp_path, progress=False))
    with open(tmp_path / "windows.csv") as fh:
        cuts = {(r["method"], int(r["cut"])) for r in csv.DictReader(fh)}
    assert cuts == {(m, c) for m in ("model", "seasonal_naive", "auto_ets", "theta") for c in (42, 48, 54)}
    scores = res.contexts[64].scores
    direct = [AutoETS(season_length=6).forecast(y=s[:c, 0], h=6)["mean"] for c in (42, 48, 54)]
    want = np.mean([np.abs(d - s[c:c + 6, 0]).mean() / mase_scale(s[:c], 6)[0] for d, c in zip(direct, (42, 48, 54))])
    assert scores["auto_ets"].mase == pytest.approx(want, rel=1e-6)
    assert scores["seasonal_naive"].mase_relative == pytest.approx(1.0)
    assert all(scores[m].mase is not None for m in scores) and scores["model"].flops > 0


def test_train_on_one_series_split_by_time(tmp_path, capsys):
    f = tmp_path / "one.csv"
    months = pd.date_range("2000-01-01", periods=60, freq="MS").strftime("%Y-%m-%d")
    pd.DataFrame({"ds": months, "y": _seasonal(60, 12)[:, 0]}).to_csv(f, index=False)
    code, _, err = run(capsys, "train", "--model", "tiny-qwen2", "--data", f, "--steps", 2, "--seq-len", 32,
                       "--batch-size", 1, "--context", 64, "--budget", 1e12, "-o", tmp_path / "T")
    assert code == 2 and "split by time" in err  # one series cannot be split by series
    code, out, err = run(capsys, "train", "--model", "tiny-qwen2", "--data", f, "--steps", 2, "--seq-len", 32,
                         "--batch-size", 1, "--context", 64, "--budget", 1e12, "-o", tmp_path / "T",
                         "--split-by", "time", "--test-windows", 2, "--horizon", 4)
    assert code == 0, err
    report = (tmp_path / "T" / "report.md").read_text()
    assert "Should I fine-tune?" in report


def test_fit_on_a_dataframe_returns_a_forecaster_with_its_adapter(tiny, tmp_path):
    from flopcast.api.forecaster import Forecaster
    from flopcast.budget.ledger import Ledger

    df = pd.DataFrame({"unique_id": "a", "ds": np.arange(50), "y": _seasonal(50)[:, 0]})
    base = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2")
    tuned = base.fit(df, tmp_path / "fit", budget=1e12, steps=2, seq_len=32, batch_size=1, horizon=4,
                     progress=False)
    assert tuned.adapter is not None and tuned.adapter.is_dir()
    assert (tmp_path / "fit" / "report.md").is_file()
    used = Ledger(tmp_path / "fit" / "ledger.db").used()
    assert 0 < used <= 1e12
    out = tuned.predict(df, horizon=3)
    assert list(out["ds"]) == [50, 51, 52] and np.isfinite(out["y"]).all()


def test_fit_on_differences_records_the_lag_and_forecasts_levels(tiny, tmp_path, capsys):
    """``fit(..., difference=m)`` trains on each series' lag-m differences, and its adapter says m: reloaded (API
    or ``flopcast forecast --adapter``), it forecasts differences and integrates them back unless told otherwise;
    a lag the series cannot give is one line before anything is written."""
    from flopcast.api.forecaster import Forecaster
    from flopcast.data.differences import differenced

    y = _seasonal(50)
    df = pd.DataFrame({"unique_id": "a", "ds": np.arange(50), "y": y[:, 0]})
    base = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2")
    with pytest.raises(DataError, match=r"^series 0 has 50 step\(s\); difference=49 needs at least 51$"):
        base.fit(df, tmp_path / "bad", budget=1e12, difference=49, progress=False)
    with pytest.raises(DataError, match="difference must be a whole number"):
        base.fit(df, tmp_path / "bad", budget=1e12, difference=-6, progress=False)
    assert not (tmp_path / "bad").exists()
    tuned = base.fit(df, tmp_path / "fit", budget=1e12, steps=2, seq_len=32, batch_size=1, horizon=4,
                     difference=6, progress=False)
    seen = pd.read_csv(tmp_path / "fit" / "series.csv")
    assert list(seen["time"]) == list(range(6, 50)) and np.allclose(seen["y"], differenced(y, 6)[:, 0])
    again = Forecaster.from_pretrained(tuned.adapter)
    assert tuned.difference == again.difference == 6 and "difference=6" in repr(again)
    own, said, levels = (again.forecast([y], horizon=3, difference=d).point for d in (None, 6, 0))
    assert np.array_equal(own, said) and not np.array_equal(own, levels)
    f = tmp_path / "y.csv"
    df.to_csv(f, index=False)
    outs = []
    for extra in ([], ["--difference", 6]):
        code, _, err = run(capsys, "forecast", "--adapter", tuned.adapter, "-i", f, "--steps", 3,
                           "-o", tmp_path / f"f{len(extra)}.csv", *extra)
        assert code == 0, err
        outs.append(pd.read_csv(tmp_path / f"f{len(extra)}.csv"))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    assert np.allclose(outs[0]["y"], own[0][:, 0])


def test_validation_under_a_time_split_scores_only_its_horizon():
    from flopcast.encoding.chunks import IGNORE, make_chunks

    toks = list(range(10, 60))  # 50 tokens; the validation horizon starts at token 40
    whole = make_chunks([toks], 16, 0)
    held = make_chunks([toks], 16, 0, targets_from=[40])
    assert whole.n_targets == 50 and held.n_targets == 10  # every label once; none before the origin
    scored = {int(t) for row in held.labels for t in row if t != IGNORE}
    assert scored == set(toks[40:])
    short = make_chunks([toks[:12]], 16, 0, targets_from=[8])
    assert [int(t) for t in short.labels[0] if t != IGNORE] == toks[8:12]


def test_eval_backtests_a_csv_against_the_classical_methods(tmp_path, capsys):
    f = tmp_path / "sales.csv"
    quarters = pd.date_range("2000-01-01", periods=48, freq="QS").strftime("%Y-%m-%d")
    rows = [pd.DataFrame({"unique_id": k, "ds": quarters, "y": _seasonal(48, 4, seed)[:, 0]})
            for seed, k in enumerate(("north", "south"))]
    pd.concat(rows).to_csv(f, index=False)
    code, out, err = run(capsys, "eval", "--model", "tiny-qwen2", "--data", f, "--split-by", "time",
                         "--test-windows", 2, "--horizon", 4, "--context", 64, "--baselines",
                         "seasonal_naive,theta", "-o", tmp_path / "E")
    assert code == 0, err
    assert "MASE" in out and "theta" in out
    import json
    metrics = json.loads((tmp_path / "E" / "metrics.json").read_text())
    scores = metrics["contexts"]["64"]
    assert scores["seasonal_naive"]["mase_relative"] == pytest.approx(1.0)
    assert len(scores["model"]["mase_per_series"]) == 2 and scores["model"]["n_windows"] == 4
    with open(tmp_path / "E" / "windows.csv") as fh:
        naive = {(int(r["series"]), int(r["cut"])): float(r["mse"]) for r in csv.DictReader(fh)
                 if r["method"] == "seasonal_naive"}
    s = _seasonal(48, 4, 0)[:, 0]  # quarterly dates: a season of 4, read from the timestamps
    assert naive[(0, 40)] == pytest.approx(np.mean((s[36:40] - s[40:44]) ** 2))


def test_fit_settings_are_checked_before_any_work():
    from flopcast.api.fit import FitSettings, fit_plan
    from flopcast.errors import FlopcastError

    for bad in (dict(head="bogus"), dict(steps=0), dict(budget=float("nan"))):
        with pytest.raises(FlopcastError):
            FitSettings(**{"budget": 1e12, **bad})
    plan = fit_plan("tiny-qwen2", {"path": "s.csv"}, FitSettings(1e12, head="numeric", horizon=7))
    assert plan["train"]["head"] == "numeric" and plan["split"] == {"by": "time", "test_windows": 1}
    assert plan["eval"]["horizon"] == 7 and plan["codec"]["offset"] is True


def test_differences_integrate_back_and_zero_is_seasonal_naive():
    """Integrating the true future differences after a history gives the true future, past one season too; zero
    differences give the seasonal naive forecast (the classical baseline's own function)."""
    from flopcast.data.differences import differenced, integrate
    from flopcast.evaluation.classical import seasonal_naive

    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=(40, 2)), axis=0) + 10 * np.sin(np.arange(40) * np.pi / 2)[:, None]
    T, H, m = 30, 10, 4
    future_d = differenced(y, m)[T - m:T - m + H]  # d_t = y_t - y_{t-m} for t = T..T+H-1
    np.testing.assert_allclose(integrate(y[:T], future_d, m), y[T:T + H])
    np.testing.assert_allclose(integrate(y[:T], np.zeros((H, 2)), m), seasonal_naive(y[:T], m, H))
    paths = np.stack([future_d, np.zeros((H, 2))])  # (samples, H, V): each path integrated on its own
    np.testing.assert_allclose(integrate(y[:T], paths, m)[1], seasonal_naive(y[:T], m, H))
    assert differenced(y, 0) is not None and np.array_equal(integrate(y[:T], future_d, 0), future_d)


def test_forecaster_forecasts_differences_and_returns_levels(tiny):
    """``difference=m``: the model forecasts the lag-m differences (the same text as forecasting the differenced
    series), and the point, samples and quantiles come back as levels; a lag the series cannot give is one line."""
    from flopcast import Forecaster
    from flopcast.data.differences import differenced, integrate

    fc = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2")
    x = np.abs(np.cumsum(np.random.default_rng(3).normal(size=(24, 1)), axis=0)) + 5
    plain = fc.forecast([differenced(x, 4)], horizon=6)
    levels = fc.forecast([x], horizon=6, difference=4)
    assert levels.texts == plain.texts
    np.testing.assert_allclose(levels.point[0], integrate(x, plain.point[0], 4))
    assert len(levels.contexts[0]) == len(x)
    sampled = fc.forecast([x], horizon=6, samples=5, seed=1, difference=4)
    raw = fc.forecast([differenced(x, 4)], horizon=6, samples=5, seed=1)
    paths = integrate(x, raw.samples[0], 4)
    np.testing.assert_allclose(sampled.samples[0], paths)
    np.testing.assert_allclose(sampled.point[0], np.median(paths, axis=0))
    np.testing.assert_allclose(sampled.quantiles[0.9][0], np.quantile(paths, 0.9, axis=0))
    with pytest.raises(DataError, match=r"^series 0 has 24 step\(s\); difference=23 needs at least 25$"):
        fc.forecast([x], horizon=2, difference=23)
    with pytest.raises(DataError, match="difference must be a whole number"):
        fc.forecast([x], horizon=2, difference=-1)


def test_forecast_cli_differences_at_the_season(tmp_path, capsys):
    """``flopcast forecast --difference 12`` on a monthly CSV: dated levels out; a lag longer than the series is one
    line and exit 2, with nothing written."""
    f, out = tmp_path / "m.csv", tmp_path / "f.csv"
    months = pd.date_range("2000-01-01", periods=36, freq="MS").strftime("%Y-%m-%d")
    pd.DataFrame({"ds": months, "y": _seasonal(36, 12)[:, 0] + 50}).to_csv(f, index=False)
    code, _, err = run(capsys, "forecast", "--model", "tiny-qwen2", "-i", f, "--steps", 3, "--difference", 12,
                       "-o", out)
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert [r["ds"] for r in rows] == ["2003-01-01", "2003-02-01", "2003-03-01"]
    code, _, err = run(capsys, "forecast", "--model", "tiny-qwen2", "-i", f, "--steps", 3, "--difference", 40,
                       "-o", tmp_path / "g.csv")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "difference=40 needs at least 42" in err
    assert not (tmp_path / "g.csv").exists()
