"""Any numeric series in (issue 26): signed values, a scale per variable, gaps, long histories, dates and the long
layout, sampling settings -- in the codec, the grammar, the readers, the Forecaster and the CLI."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT, lively_tiny
from helpers import run_cli as run

from flopcast.api.forecaster import Forecaster
from flopcast.config import ZERO_SHOT_CODEC, CodecConfig, DataSpec, ForecastConfig
from flopcast.data.calendar import future_timestamps, infer_frequency
from flopcast.data.io import load, load_csv
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.grammar import LLMTimeGrammar, grammar_for
from flopcast.encoding.scaling import collapse_warning, fit_scale
from flopcast.errors import DataError, FlopcastError
from flopcast.forecasting.automaton import TokenAutomaton, nucleus
from flopcast.forecasting.forecast import forecast

SIGNED = re.compile(r"(?:-?\d{1,4}\.\d{2},-?\d{1,4}\.\d{2};)+")


def _text(g: LLMTimeGrammar, chars: str) -> bool:
    """Whether the grammar accepts ``chars`` as two complete steps."""
    st = g.start(2)
    for ch in chars:
        g.advance(st, ch)
    return st.done and not st.broken


def test_the_grammar_allows_one_sign_only_where_contexts_have_one():
    cfg = CodecConfig()
    unsigned, signed = grammar_for(["1.00,2.00;"], cfg, 2), grammar_for(["1.00,-2.00;"], cfg, 2)
    assert "-" not in unsigned.alphabet and "-" in signed.alphabet
    assert _text(signed, "-1.00,2.00;3.00,-0.50;") and not _text(unsigned, "-1.00,2.00;3.00,-0.50;")
    assert not _text(signed, "--1.00,2.00;3.00,0.50;") and not _text(signed, "1.-00,2.00;3.00,0.50;")
    assert signed.max_tokens(3) == unsigned.max_tokens(3) + 3 * 2 + 2  # one more character per value


def test_an_unsigned_automaton_is_the_one_non_negative_data_always_had(tiny):
    """No sign state and no sign column for non-negative contexts: the tables greedy decoding reads are those of a
    grammar built without signs at all."""
    cfg = CodecConfig()
    derived = TokenAutomaton(grammar_for(["12.00,3.50;"], cfg, 2), tiny.tokenizer)
    plain = TokenAutomaton(LLMTimeGrammar(cfg, 2, 3), tiny.tokenizer)
    assert derived.chars == plain.chars and torch.equal(derived.allowed, plain.allowed)
    assert torch.equal(derived.next_state, plain.next_state) and not any(k[3] for k in derived.states)


def test_signed_series_forecast_signed_wellformed_text():
    model, tok = lively_tiny()
    rng = np.random.default_rng(0)
    contexts = [rng.normal(size=(12, 2)) * [1.0, 1e-3] for _ in range(4)]
    codec = LLMTimeCodec(CodecConfig(scale_mode="per_series"))
    res = forecast(model, tok, codec, contexts, ForecastConfig(horizon=3, batch_size=2, n_samples=6, temperature=3))
    assert all(SIGNED.fullmatch(t) for row in res.texts for t in row) and res.parse_ok.all()
    assert any("-" in t for row in res.texts for t in row)  # the model does write signs
    # each variable forecast in its own units: the small one within 100x its context's size, and not 0.00
    small = np.abs(res.samples[..., 1])
    assert np.all(small < 101 * max(np.abs(c[:, 1]).max() for c in contexts)) and (small > 0).mean() > 0.9


def test_one_pooled_scale_collapses_small_variables_and_says_so():
    x = np.column_stack([np.linspace(12000, 13000, 30), np.linspace(90, 100, 30), np.linspace(4, 7, 30)])
    pooled = fit_scale(x, CodecConfig(per_variable=False))
    message = collapse_warning([x], [pooled], 2, ("realgdp", "cpi", "unemp"))
    assert message is not None and "unemp in 1 context" in message and "realgdp" not in message
    assert collapse_warning([x], [fit_scale(x, CodecConfig())], 2) is None


def _macro_csv(path, rows=40):
    t = np.arange(rows)
    df = pd.DataFrame({"date": pd.date_range("1990-01-01", periods=rows, freq="QS").strftime("%Y-%m-%d"),
                       "realgdp": 12000 + 40 * t + 50 * np.sin(t), "cpi": 90 + 0.5 * t,
                       "unemp": 5 + np.sin(t / 3), "growth": np.sin(t / 2) - 0.2})
    df.to_csv(path, index=False)
    return df


def test_a_multi_scale_csv_forecasts_every_variable_on_its_own_scale(tmp_path, capsys, monkeypatch):
    src = _macro_csv(tmp_path / "macro.csv")
    lm = lively_tiny()
    monkeypatch.setattr("flopcast.api.forecaster.load_for_inference",
                        lambda spec, adapter: type("LM", (), {"model": lm[0], "tokenizer": lm[1]})())
    code, out, err = run(capsys, "forecast", "-i", tmp_path / "macro.csv", "--model", "tiny-qwen2", "--steps", "3",
                         "-o", tmp_path / "f.csv")
    assert code == 0, err
    f = pd.read_csv(tmp_path / "f.csv")
    assert list(f["date"]) == ["2000-01-01", "2000-04-01", "2000-07-01"]  # quarters continue on the calendar
    for name in ("realgdp", "cpi", "unemp", "growth"):
        own = fit_scale(src[[name]].to_numpy(), ZERO_SHOT_CODEC)  # the variable's own scale and offset
        written = np.abs(f[name] - own.beta[0]) / own.alpha[0]  # the decoder allows 3 integer digits here
        assert (f[name] != 0).all() and (written < 1000).all(), name  # not 0.00, in its own units
    assert "significant digits" not in err


def test_a_gap_is_reported_then_filled(tmp_path):
    p = tmp_path / "gap.csv"
    p.write_text("id,t,y,z\na,0,1,10\na,1,,20\na,2,3,30\nb,0,5,50\nb,1,6,\n")
    with pytest.raises(DataError, match=r"2 missing value\(s\); the first in series 'a', variable 'y', row 3; "
                                        "fill them with --fill linear\\|ffill"):
        load_csv(p)
    with pytest.warns(UserWarning, match=r"2 missing value\(s\) in 2 series filled \(linear\)"):
        linear = load(DataSpec(str(p), fill="linear"))
    np.testing.assert_array_equal(linear.series[0][:, 0], [1, 2, 3])
    np.testing.assert_array_equal(linear.series[1][:, 1], [50, 50])  # an end is held
    with pytest.warns(UserWarning):
        ffill = load(DataSpec(str(p), fill="ffill"))
    np.testing.assert_array_equal(ffill.series[0][:, 0], [1, 1, 3])


def test_a_blank_line_in_a_one_column_csv_is_a_gap_not_a_shift(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("y\n1\n2\n\n4\n5\n\n")  # the trailing blank line is the end of the file
    with pytest.raises(DataError, match="row 4"):
        load_csv(p)
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(load_csv(p, fill="linear").series[0][:, 0], [1, 2, 3, 4, 5])


def test_the_long_layout_and_a_year_column_are_recognised(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("unique_id,ds,y,price\nsun,1700,5.0,1\nsun,1701,11.0,2\nsun,1702,16.0,3\n"
                 "moon,1700,1.0,4\nmoon,1701,2.0,5\n")
    with pytest.warns(UserWarning, match="price are not forecast in the unique_id, ds, y layout"):
        ds = load_csv(p)
    assert ds.ids == ("sun", "moon") and ds.variables == ("y",) and ds.time_column == "ds"
    assert load_csv(p, columns=["y", "price"]).variables == ("y", "price")  # --value-columns picks them
    q = tmp_path / "year.csv"
    q.write_text("YEAR,SUNACTIVITY\n1700,5.0\n1701,11.0\n1702,16.0\n")
    ys = load_csv(q)
    assert ys.variables == ("SUNACTIVITY",) and ys.time_column == "YEAR"
    assert list(future_timestamps(ys.stamps[0], 3, 2)) == [1703, 1704]


@pytest.mark.parametrize("freq, last, expect", [
    ("MS", "1960-12-01", ["1961-01-01", "1961-02-01", "1961-03-01"]),
    ("ME", "1960-12-31", ["1961-01-31", "1961-02-28", "1961-03-31"]),
    ("QS-OCT", "1960-10-01", ["1961-01-01", "1961-04-01", "1961-07-01"]),
    ("QE-DEC", "1960-12-31", ["1961-03-31", "1961-06-30", "1961-09-30"]),
    ("B", "2024-05-31", ["2024-06-03", "2024-06-04", "2024-06-05"]),
])
def test_dates_continue_on_the_calendar(freq, last, expect):
    ts = pd.date_range(end=last, periods=24, freq=freq).to_numpy()
    assert infer_frequency(ts) is not None
    assert [str(pd.Timestamp(t).date()) for t in future_timestamps(ts, 24, 3)] == expect


def test_predict_continues_monthly_series_and_reads_the_nixtla_layout(tiny):
    months = pd.date_range("1959-01-01", periods=24, freq="MS")
    df = pd.DataFrame({"unique_id": "air", "ds": months.strftime("%Y-%m-%d"), "y": 100 + np.arange(24.0)})
    out = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2").predict(df, horizon=2)
    assert list(out.columns) == ["unique_id", "ds", "y"]
    assert list(out["ds"]) == [pd.Timestamp("1961-01-01"), pd.Timestamp("1961-02-01")]


def test_a_long_series_is_cut_to_the_models_positions_with_a_note(tiny, monkeypatch):
    fc = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2")
    monkeypatch.setattr(tiny.model.config, "max_position_embeddings", 200)
    series = np.abs(np.random.default_rng(0).normal(size=(300, 1))) * 10
    with pytest.warns(UserWarning, match=r"1 series longer than \d+ tokens \(200 positions of tiny-qwen2, less "):
        res = fc.forecast([series], horizon=3)
    steps = len(res.contexts[0])
    assert 1 < steps < 300 and np.array_equal(res.contexts[0], series[-steps:])
    assert res.prompt_tokens[0] + fc.codec.config.decimals + 3 * 7 <= 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the limit: no note
        fc.forecast([series[:10]], horizon=3)
    with pytest.raises(DataError, match="shorter than one step"):
        fc.forecast([series], horizon=3, context_tokens=3)


def test_top_p_keeps_the_nucleus_and_is_checked():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    kept = nucleus(probs, 0.7)
    np.testing.assert_allclose(kept.numpy(), [[0.625, 0.375, 0, 0], [0, 0, 0.375, 0.625]], rtol=1e-6)
    assert torch.equal(nucleus(probs, 0.01) > 0, probs == probs.max(-1, keepdim=True).values)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(FlopcastError, match="top_p"):
            ForecastConfig(top_p=bad)


def test_sampling_settings_reach_the_samples(tiny):
    fc = Forecaster(tiny.model, tiny.tokenizer, "tiny-qwen2")
    series = [np.linspace(1, 9, 20)[:, None]]
    wide = fc.forecast(series, horizon=3, samples=12, temperature=3.0, seed=1).samples
    narrow = fc.forecast(series, horizon=3, samples=12, temperature=3.0, top_p=0.05, seed=1).samples
    assert np.nanstd(narrow) < np.nanstd(wide)
    assert np.all(np.ptp(narrow, axis=1) == 0)  # the nucleus of one character is greedy decoding


def test_plans_and_the_cli_take_fill_and_value_columns(tmp_path, capsys):
    from flopcast.study.plan import plan_from_dict

    p = tmp_path / "gap.csv"
    p.write_text("series,step,a,b,c\nx,0,1,5,9\nx,1,,6,9\nx,2,3,7,9\n")
    plan = plan_from_dict({"name": "p", "budget": 1e12, "data": {"path": str(p), "fill": "ffill",
                                                                 "value_columns": ["a", "b"]},
                           "stages": [{"name": "e", "kind": "eval"}]})
    with pytest.warns(UserWarning):
        assert load(plan.data).variables == ("a", "b")
    code, _, err = run(capsys, "data", "inspect", p)
    assert code == 2 and "fill them with --fill" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "data", "inspect", p, "--fill", "linear", "--value-columns", "a,c")
    assert code == 0 and "'a', 'c'" in out.replace('"', "'")


def test_an_evaluation_scores_the_median_of_samples_and_reserves_for_every_sample(tiny):
    from flopcast.config import EvalConfig
    from flopcast.data.dataset import Dataset
    from flopcast.evaluation.evaluate import EvalRun, evaluate

    rng = np.random.default_rng(0)
    ds = Dataset([rng.normal(size=(30, 2)) for _ in range(3)])  # signed series
    codec = LLMTimeCodec(CodecConfig(scale_mode="per_series"))
    base = dict(contexts=(64,), baselines=("persistence",), n_boot=10, horizon=3, stride=10)
    greedy = evaluate(tiny.model, tiny.tokenizer, codec, ds, EvalConfig(**base), EvalRun(progress=False))
    sampled = evaluate(tiny.model, tiny.tokenizer, codec, ds, EvalConfig(**base, samples=3, top_p=0.9),
                       EvalRun(progress=False))
    g, s = greedy.contexts[64].scores["model"], sampled.contexts[64].scores["model"]
    assert g.n_scored == s.n_scored > 0 and s.flops > 2 * g.flops  # three rows per window, each charged
    with pytest.raises(FlopcastError, match="top_p"):
        EvalConfig(**base, top_p=2.0)


def test_the_reference_data_is_written_and_decoded_as_before_signs_existed(real_data_path, qwen_arch_dir):
    """The reference plan's scaling (one pooled alpha, no offset) on the reference data: the text is x / alpha with
    two decimals, as the reference study wrote it, and the decoder's tables are those of a grammar without signs --
    so greedy forecasts are token for token what they were."""
    from flopcast.config import EvalConfig
    from flopcast.encoding.windows import build_windows, window_grammar
    from flopcast.model.load import load_tokenizer
    from flopcast.study.plan import load_plan

    plan = load_plan(ROOT / "plans" / "reference.toml")
    assert not plan.codec.per_variable and not plan.codec.offset
    ds = load(real_data_path)
    train = ds.series[:800]
    codec = LLMTimeCodec.fit(plan.codec, train)
    alpha = np.percentile(np.concatenate(train), 99.7) / 10
    assert codec.scale.alpha.tolist() == [alpha] and codec.scale.beta.tolist() == [0.0]
    s = ds.series[900][:20]
    assert codec.encode(s) == "".join(",".join(f"{v / alpha:.2f}" for v in row) + ";" for row in s)
    tok = load_tokenizer(str(qwen_arch_dir))
    wins = build_windows(ds.series[900:920], codec, tok, 128, EvalConfig(protocol="seed", contexts=(128,)))
    grammar = window_grammar(wins, tok, codec, 2)
    assert not grammar.signed
    derived, plain = TokenAutomaton(grammar, tok), TokenAutomaton(LLMTimeGrammar(plan.codec, 2, grammar.max_int), tok)
    assert derived.chars == plain.chars and torch.equal(derived.allowed, plain.allowed)
    assert torch.equal(derived.next_state, plain.next_state) and torch.equal(derived.ends_step, plain.ends_step)
