import json

import numpy as np
import pytest

from flopcast.budget.ledger import Ledger
from flopcast.config import CodecConfig, EvalConfig
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.scaling import Scale
from flopcast.encoding.windows import aligned_windows, seed_windows
from flopcast.errors import FlopcastError
from flopcast.evaluation.baselines import linear, lv_ode, persistence, run_baseline
from flopcast.evaluation.evaluate import EvalRun, evaluate
from flopcast.evaluation.metrics import score
from flopcast.model.load import tiny_tokenizer

ZS = dict(name="zs", model_name="tiny-qwen2", progress=False)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _series(T=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((T, 2)) * 3


def test_seed_windows_match_reference_layout(tok):
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0))
    s = _series(100)  # every step is "d.dd,d.dd;" = 10 tokens -> 1000 tokens
    for S, starts in [(128, [0, 256, 512, 768]), (512, [0, 256]), (768, [0])]:
        wins = seed_windows([s], codec, tok, S, 5)
        assert len(wins) == len(starts)
        for w, st in zip(wins, starts):
            assert len(w.prompt) == S
            end = st + S  # tokens [st, end): steps end at multiples of 10 tokens
            assert w.prefix == codec.encode(s)[end - end % 10:end]
            assert w.cut == end // 10 + (1 if end % 10 else 0)
            np.testing.assert_array_equal(w.truth, s[w.cut:w.cut + 5])
            assert len(w.context) == w.cut - (1 if end % 10 else 0) - (st + 9) // 10


def test_seed_protocol_requires_global_scale(tok):
    with pytest.raises(FlopcastError, match="global"):
        seed_windows([_series()], LLMTimeCodec(CodecConfig(scale_mode="per_series")), tok, 64, 5)


def test_aligned_windows_fit_and_are_whole_steps(tok):
    codec = LLMTimeCodec(CodecConfig(scale_mode="per_series"))
    s = _series(60)
    wins = aligned_windows([s], codec, tok, 55, horizon=5, stride=7, min_context_steps=4)
    assert [w.cut for w in wins] == list(range(4, 56, 7))
    for w in wins:
        assert len(w.prompt) <= 55 and w.prefix == ""
        assert tok.decode(w.prompt).endswith(";")
        assert len(w.context) == min(w.cut, 5)  # 10 tokens per step -> 5 steps fit in 55
        np.testing.assert_array_equal(w.context, s[w.cut - len(w.context):w.cut])


def test_metrics_known_values():
    truth = np.zeros((4, 2, 1))
    pred = np.ones((4, 2, 1)) * np.array([1, 2, 3, np.nan])[:, None, None]
    m = score(pred, truth, alphas=np.full(4, 2.0), n_boot=200)
    assert m["n_scored"] == 3 and m["parse_failure_rate"] == 0.25
    assert m["mae"] == pytest.approx(2.0) and m["mse"] == pytest.approx(14 / 3)
    assert m["mae_scaled"] == pytest.approx(1.0)
    assert m["mse_ci95"][0] <= m["mse"] <= m["mse_ci95"][1]
    assert m["mae_per_step"] == pytest.approx([2.0, 2.0])


def test_baselines_simple_cases():
    ctx = np.array([[1.0, 2.0], [2.0, 2.5], [3.0, 3.0]])
    np.testing.assert_array_equal(persistence(ctx, 2), [[3, 3], [3, 3]])
    np.testing.assert_allclose(linear(ctx, 2), [[4, 3.5], [5, 4]])
    assert run_baseline("linear", [ctx, ctx], 3).shape == (2, 3, 2)


def test_lv_ode_recovers_simulated_dynamics():
    from flopcast.config import SimConfig
    from flopcast.data.simulate import simulate

    ds = simulate(SimConfig(n_systems=6, seed=11))
    dt = ds.time[1] - ds.time[0]
    ode = np.stack([lv_ode(s[:40], 5, dt) for s in ds.series])
    pers = np.stack([persistence(s[:40], 5) for s in ds.series])
    truth = np.stack([s[40:45] for s in ds.series])
    assert np.abs(ode - truth).mean() < 0.5 * np.abs(pers - truth).mean()


def test_lv_ode_batched_and_in_processes_match_one_window_at_a_time(tmp_path):
    from flopcast.config import SimConfig
    from flopcast.data.simulate import simulate
    from flopcast.evaluation.baselines import lv_ode_many, stored_baseline

    ds = simulate(SimConfig(n_systems=4, seed=3))
    dt = float(ds.time[1] - ds.time[0])
    ctxs = [s[:n] for s in ds.series for n in (3, 12, 30)]  # mixed lengths, some too short to fit
    one = np.stack([lv_ode(c, 4, dt) for c in ctxs])
    np.testing.assert_allclose(lv_ode_many(ctxs, 4, dt), one, rtol=1e-12)
    np.testing.assert_array_equal(one[0], persistence(ctxs[0], 4))
    np.testing.assert_allclose(run_baseline("lv_ode", ctxs, 4, dt, workers=2), one, rtol=1e-12)
    stored = stored_baseline("linear", ctxs, 4, dt, tmp_path)
    (path,) = tmp_path.glob("linear-*.npy")
    np.save(path, stored + 1)  # a stored result is read back, not recomputed
    np.testing.assert_array_equal(stored_baseline("linear", ctxs, 4, dt, tmp_path), stored + 1)
    stored_baseline("linear", ctxs[1:], 4, dt, tmp_path)  # other windows: another entry
    assert len(list(tmp_path.glob("linear-*.npy"))) == 2


def test_evaluate_writes_results_and_charges_ledger(tmp_path, tiny, sim_ds):
    codec = LLMTimeCodec.fit(CodecConfig(), sim_ds.series)
    lg = Ledger(tmp_path / "ledger.db", budget=1e13)
    cfg = EvalConfig(contexts=(64, 128), max_series=3, stride=10, baselines=("persistence", "linear"), n_boot=50)
    res = evaluate(tiny.model, tiny.tokenizer, codec, sim_ds, cfg, EvalRun(out_dir=tmp_path / "ev", ledger=lg, **ZS))
    for S in (64, 128):
        e = res.contexts[S]
        assert e.model.parse_failure_rate == 0 and e.model.flops > 0
        assert e.scores["persistence"].n_windows == e.n_windows > 0
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["contexts"]["64"]["model"]["mse"] == pytest.approx(res.score(64).mse)  # the JSON keeps its layout
    assert (tmp_path / "ev" / "windows.csv").read_text().count("\n") > 2
    assert (tmp_path / "ev" / "forecasts_S128.png").stat().st_size > 1000
    charged = {e.name: e.flops_used for e in lg.entries()}
    assert charged == {"zs/S=64": res.score(64).flops, "zs/S=128": res.score(128).flops}
    assert all(e.status == "done" for e in lg.entries())


def test_context_without_windows_is_skipped_not_fatal(tmp_path, tiny, sim_ds):
    codec = LLMTimeCodec.fit(CodecConfig(), sim_ds.series)
    cfg = EvalConfig(protocol="seed", contexts=(64, 100000), max_series=2, baselines=("persistence",), n_boot=20)
    with pytest.warns(UserWarning, match="no windows of 100000 tokens"):
        res = evaluate(tiny.model, tiny.tokenizer, codec, sim_ds, cfg, EvalRun(out_dir=tmp_path, progress=False))
    assert res.contexts[100000].n_windows == 0 and res.contexts[100000].skipped
    assert res.score(64).n_windows > 0
    with pytest.raises(FlopcastError, match="at any context length"):
        evaluate(tiny.model, tiny.tokenizer, codec, sim_ds, EvalConfig(protocol="seed", contexts=(100000,)),
                 EvalRun(progress=False))


def test_interrupted_evaluation_charges_finished_batches_and_resumes(tmp_path, tiny, sim_ds, monkeypatch):
    from flopcast.budget.costs import batch_flops
    from flopcast.budget.flops import Arch

    codec = LLMTimeCodec.fit(CodecConfig(), sim_ds.series)
    cfg = EvalConfig(contexts=(64, 128), max_series=3, stride=10, batch_size=2, baselines=("persistence",), n_boot=20)
    ref = evaluate(tiny.model, tiny.tokenizer, codec, sim_ds, cfg,
                   EvalRun(ledger=Ledger(tmp_path / "ref.db", 1e13), **ZS))
    lg = Ledger(tmp_path / "ledger.db", budget=1e13)
    from flopcast.forecasting.decode import Decoder

    real, seen = Decoder.generate, []

    def flaky(self, prompts, *a, **k):  # Ctrl-C during the second batch at S=128
        if len(prompts[0]) > 64 and len(seen) == 1:
            raise KeyboardInterrupt
        out = real(self, prompts, *a, **k)
        if len(prompts[0]) > 64:
            seen.append({"B": len(prompts), "prompt_len": max(map(len, prompts)), "new_tokens": out.steps})
        return out

    monkeypatch.setattr(Decoder, "generate", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny.model, tiny.tokenizer, codec, sim_ds, cfg, EvalRun(out_dir=tmp_path / "ev", ledger=lg, **ZS))
    rows = {e.name: e for e in lg.entries()}
    assert rows["zs/S=64"].status == "done" and rows["zs/S=128"].status == "failed"
    # work done stays counted
    assert rows["zs/S=128"].flops_used == batch_flops(Arch.from_config(tiny.model.config), seen[0]) > 0
    monkeypatch.setattr(Decoder, "generate", real)
    res = evaluate(tiny.model, tiny.tokenizer, codec, sim_ds, cfg, EvalRun(out_dir=tmp_path / "ev", ledger=lg, **ZS))
    assert [e.name for e in lg.entries()] == ["zs/S=64", "zs/S=128", "zs/S=128"]  # S=64 came from its saved result
    for S in (64, 128):
        assert res.score(S).mse == ref.score(S).mse
        assert res.score(S).flops == ref.score(S).flops
    # another model (here: other weights under the same names) is not served from the saved results
    from flopcast.config import LoraSpec
    from flopcast.model.load import load_model
    from flopcast.model.lora import attach_lora

    peft = attach_lora(load_model("tiny-qwen2", seed=0).model, LoraSpec(rank=2))
    evaluate(peft, tiny.tokenizer, codec, sim_ds, cfg, EvalRun(out_dir=tmp_path / "ev", ledger=lg, **ZS))
    assert len(lg.entries()) == 5


def test_results_round_trip_and_read_older_files(tmp_path, tiny, sim_ds):
    """Typed results write the JSON layout flopcast always wrote (plus a format number) and read it back."""
    from flopcast.results import FORMAT, EvalResult

    codec = LLMTimeCodec.fit(CodecConfig(), sim_ds.series)
    cfg = EvalConfig(contexts=(64,), max_series=2, baselines=("persistence",), n_boot=20)
    res = evaluate(tiny.model, tiny.tokenizer, codec, sim_ds, cfg, EvalRun(out_dir=tmp_path, progress=False))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["format"] == FORMAT and set(on_disk["contexts"]["64"]) >= {"n_windows", "model", "persistence"}
    assert EvalResult.from_dict(on_disk) == res
    older = {k: v for k, v in on_disk.items() if k != "format"}  # written before typed results
    assert EvalResult.from_dict(older).score(64, "persistence") == res.score(64, "persistence")
    assert [r["method"] for r in res.rows()] == ["model", "persistence"]
