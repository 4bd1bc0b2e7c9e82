"""What only a CUDA device can show: the compiled training step, compiled decoding with CUDA graphs, the batch
size chosen from free memory, and B=64 x S=512 training on the Qwen2.5-0.5B architecture in 24 GiB.

Skipped without CUDA (every CPU path these touch is tested elsewhere). On a GPU machine:
``python -m pytest tests/test_gpu.py`` (``benchmarks/gpu_check.sh`` runs it beside the speed benchmark).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import lively_tiny

from flopcast.config import CodecConfig, ForecastConfig, LoraSpec, ModelSpec, SimConfig, TrainConfig
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.scaling import Scale
from flopcast.forecasting.decode import CPU_BATCH, rows_per_batch
from flopcast.forecasting.forecast import forecast
from flopcast.model.load import load_model
from flopcast.training.engine import RunSpec, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GIB = 1 << 30


@pytest.fixture(scope="module")
def data():
    from flopcast.data.simulate import simulate

    ds = simulate(SimConfig(n_systems=24, n_steps=40, seed=2))
    return ds.series[:16], ds.series[16:], LLMTimeCodec.fit(CodecConfig(), ds.series[:16])


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_compiled_cuda_training_gives_the_eager_losses(tmp_path, data):
    """bf16 on CUDA, losses read every 16 steps: compiled runs (with and without CUDA graphs) and the eager run
    agree to bf16 precision."""
    tr, va, codec = data
    losses = {}
    for setting in ("off", "on", "graphs"):
        lm = load_model(ModelSpec("tiny-qwen2", device="cuda"), seed=0)
        cfg = TrainConfig(steps=20, batch_size=4, seq_len=64, lr=3e-3, eval_every=10, val_batches=2,
                          checkpoint_every=20, wandb=False, compile=setting)
        spec = RunSpec(tmp_path / setting, LoraSpec(rank=4), cfg, codec, tr, va, name="t", model_name="tiny-qwen2")
        train(lm.model, lm.tokenizer, spec, progress=False)
        losses[setting] = _losses(tmp_path / setting)
    assert len(losses["off"]) == 20 and np.isfinite(losses["off"]).all()
    assert np.allclose(losses["off"], losses["on"], rtol=3e-2, atol=3e-2)
    assert np.allclose(losses["off"], losses["graphs"], rtol=3e-2, atol=3e-2)
    assert losses["off"][-1] < losses["off"][0]  # it learns


def test_compiled_cuda_decoding_gives_the_eager_tokens(data):
    """CUDA graphs replayed across batches of one shape (short batches filled up), the static cache reused: the
    greedy text of eager decoding, batch after batch, on a model whose rows decode different texts (fp32, so that
    the comparison is exact); sampling on the device is reproducible for a seed."""
    _, te, codec = data
    model, tok = lively_tiny()
    model = model.to("cuda")
    ctxs = [s[: 10 + i % 7] for i, s in enumerate(te * 3)]
    out = {c: forecast(model, tok, codec, ctxs, ForecastConfig(horizon=4, batch_size=8, compile=c))
           for c in ("off", "on")}
    assert out["off"].texts == out["on"].texts and len({t[0] for t in out["off"].texts}) > 1
    assert np.array_equal(out["off"].point, out["on"].point, equal_nan=True)
    assert len({b["B"] for b in out["on"].batches}) == 1
    cfg = ForecastConfig(horizon=4, batch_size=8, n_samples=3, seed=5)
    assert forecast(model, tok, codec, ctxs, cfg).texts == forecast(model, tok, codec, ctxs, cfg).texts


def test_memory_is_given_back_between_stages():
    """A model with compiled, graph-recorded decoding, dropped and released: the free memory measured afterwards
    is what the device had before (within 64 MiB)."""
    from flopcast.model.load import free_memory, release_memory

    before = free_memory("cuda")
    model, tok = lively_tiny()
    model = model.to("cuda")
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    forecast(model, tok, codec, [np.ones((12, 2))] * 8, ForecastConfig(horizon=4, batch_size=8, compile="on"))
    del model
    release_memory()
    assert abs(free_memory("cuda") - before) < 64 << 20


def test_auto_batch_comes_from_free_cuda_memory(data):
    _, te, codec = data
    lm = load_model(ModelSpec("tiny-qwen2", device="cuda"), seed=0)
    rows = rows_per_batch("auto", lm.model, prompt_len=768, new_tokens=60)
    assert rows > CPU_BATCH
    res = forecast(lm.model, lm.tokenizer, codec, [s[:12] for s in te], ForecastConfig(horizon=3, batch_size="auto"))
    assert len(res.batches) == 1 and res.batches[0]["B"] == len(te)


def test_b64_s512_training_fits_in_24_gib(qwen_arch_dir):
    """The reference model's architecture (random weights), bf16, LoRA r=4 on q/v, B=64 x S=512: one forward and
    backward through flopcast's loss (logits in chunks) peaks under 24 GiB."""
    from flopcast.model.lora import attach_lora
    from flopcast.model.loss import lm_loss

    lm = load_model(ModelSpec(f"random:{qwen_arch_dir}", device="cuda"), seed=0)
    model = attach_lora(lm.model, LoraSpec(rank=4, targets=("q_proj", "v_proj")))
    model.train()
    x = torch.randint(0, 1000, (64, 512), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    lm_loss(model, {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}).backward()
    peak = torch.cuda.max_memory_allocated()
    print(f"B=64 S=512 peak {peak / GIB:.1f} GiB")
    assert peak < 24 * GIB
