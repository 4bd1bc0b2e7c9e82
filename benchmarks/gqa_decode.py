"""Decode steps of grouped-query models: transformers' SDPA path, which copies the KV cache out to every query
head (``repeat_kv``), against flopcast's :func:`flopcast.model.attention.decode_attention`, which reads it as it is.

transformers takes the copying path in decode steps under ``torch.compile``, and always in releases without its
``pack_gqa`` (5.17 among them); the first variant here forces that path (eager, or compiled with ``--compile on``).
Both variants forecast the same windows in alternating rounds, in one process; it prints each one's time per
decode step (the prefill excluded), the ratio, and whether the forecasts are the same.

    python benchmarks/gqa_decode.py [--model smollm2-135m] [--n 32] [--steps 25] [--rounds 2] [--compile off]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
from forecast_throughput import contexts  # beside this script
from study_speed import sync

import flopcast.forecasting.decode as decode
import flopcast.forecasting.forecast as fc
from flopcast.config import CodecConfig, ForecastConfig
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.scaling import Scale
from flopcast.model.load import load_model


@contextlib.contextmanager
def transformers_copying():
    """transformers' SDPA as under torch.compile (or in a release without pack_gqa), and flopcast's attention off."""
    import transformers.integrations.sdpa_attention as sa

    saved = getattr(sa, "is_torchdynamo_compiling", None), fc.grouped_decoding  # None: a release without pack_gqa
    sa.is_torchdynamo_compiling, fc.grouped_decoding = (lambda: True), (lambda m: contextlib.nullcontext())
    try:
        yield
    finally:
        sa.is_torchdynamo_compiling, fc.grouped_decoding = saved


@contextlib.contextmanager
def timed_steps():
    """Yields a list that collects the seconds of each decode step (DecodeStep call) while the block runs."""
    times: list[float] = []
    real = decode.DecodeStep.__call__

    def call(self, *args):
        sync()
        t = time.perf_counter()
        out = real(self, *args)
        sync()
        times.append(time.perf_counter() - t)
        return out

    decode.DecodeStep.__call__ = call
    try:
        yield times
    finally:
        decode.DecodeStep.__call__ = real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25, help="context steps")
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", default="off", choices=["off", "on"])
    a = ap.parse_args()
    lm = load_model(a.model)
    device = next(lm.model.parameters()).device
    c = lm.model.config
    ctxs, src = contexts(a.n, a.steps)
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(float(np.percentile(np.concatenate(ctxs), 99.7) / 10)))
    cfg = ForecastConfig(horizon=a.horizon, batch_size=a.n, compile=a.compile)
    print(f"model {a.model} ({c.num_attention_heads} query heads, {c.num_key_value_heads} key/value heads), "
          f"{a.n} series ({src}) x {a.steps} context steps in one batch, compile {a.compile}, {device}")
    variants = {"transformers (copies K/V per head)": transformers_copying,
                "flopcast decode_attention": contextlib.nullcontext}
    fc.forecast(lm.model, lm.tokenizer, codec, ctxs[:2], cfg)  # warm-up (and compiling, for each variant below)
    with transformers_copying():
        fc.forecast(lm.model, lm.tokenizer, codec, ctxs[:2], cfg)
    per_step: dict[str, list[float]] = {k: [] for k in variants}
    texts: dict[str, set] = {k: set() for k in variants}
    for _ in range(a.rounds):
        for name, ctx in variants.items():
            with ctx(), timed_steps() as times:
                res = fc.forecast(lm.model, lm.tokenizer, codec, ctxs, cfg)
            per_step[name].append(1e3 * float(np.median(times)))
            texts[name].add(tuple(t for row in res.texts for t in row))
            print(f"  {name:36s}: {per_step[name][-1]:7.1f} ms per decode step ({len(times)} steps)", flush=True)
    (slow, fast) = (min(v) for v in per_step.values())
    same = len(set().union(*texts.values())) == 1
    print(f"best of rounds: {slow:.1f} against {fast:.1f} ms per step: {slow / fast:.2f}x; the same forecasts: {same}")


if __name__ == "__main__":
    main()
