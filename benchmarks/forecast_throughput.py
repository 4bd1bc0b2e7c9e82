"""Forecasts per second: flopcast's batched constrained decoder vs a naive per-series loop.

Both run side by side in one process on the same contexts and the same model (the embedded
SmolLM2-135M by default). The naive loop is what one writes first: for each series,
``model.generate(max_new_tokens=H * tokens_per_step, do_sample=False)`` then decode the text.

    python benchmarks/forecast_throughput.py [--n 32] [--steps 12,25] [--batch 32] [--rounds 4] [--model smollm2-135m]

The prompt prefill is compute-bound and costs the same in both paths, so the speed-up shrinks
as contexts grow: batching removes most of the decoding time, not the prefill.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from flopcast.config import CodecConfig, ForecastConfig
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.scaling import Scale
from flopcast.forecasting.forecast import forecast
from flopcast.model.load import load_model

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "lotka_volterra_data.h5"


def contexts(n: int, steps: int) -> tuple[list[np.ndarray], str]:
    if REAL.is_file():
        from flopcast.data.io import load

        ds, src = load(REAL), "reference dataset"
    else:
        from flopcast.config import SimConfig
        from flopcast.data.simulate import simulate

        ds, src = simulate(SimConfig(n_systems=n, seed=0)), "simulated"
    return [s[:steps] for s in ds.series[-n:]], src


def naive(model, tok, codec, ctxs, horizon, scale):
    out = []
    per_step = len(tok(codec.encode(ctxs[0][:1], scale), add_special_tokens=False).input_ids)
    for c in ctxs:
        ids = tok(codec.encode(c, scale), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            g = model.generate(**ids, max_new_tokens=horizon * per_step + 2, do_sample=False,
                               pad_token_id=tok.pad_token_id)
        text = tok.decode(g[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
        out.append(codec.decode(text, c.shape[1], scale).values[:horizon])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", default="12,25", help="context steps (~10 tokens each), comma-separated")
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4,
                    help="the naive loop runs a different 1/ROUNDS of the series in each round, between batched runs")
    a = ap.parse_args()
    lm = load_model(a.model)
    for steps in [int(x) for x in a.steps.split(",")]:
        run(lm, a, steps)


def run(lm, a, steps: int) -> None:
    """Rounds that alternate the two paths, so that a machine whose speed drifts (a shared VM) biases neither:
    each round times the naive loop on its share of the series, then the batched path on all of them."""
    ctxs, src = contexts(a.n, steps)
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(float(np.percentile(np.concatenate(ctxs), 99.7) / 10)))
    n_tok = np.mean([len(lm.tokenizer(codec.encode(c), add_special_tokens=False).input_ids) for c in ctxs])
    print(f"\nmodel {a.model}, {a.n} series ({src}), {steps} context steps (~{n_tok:.0f} tokens), "
          f"horizon {a.horizon}, batch {a.batch}, {torch.get_num_threads()} threads, {a.rounds} rounds")
    naive(lm.model, lm.tokenizer, codec, ctxs[:1], a.horizon, codec.scale)  # warm-up
    cfg = ForecastConfig(horizon=a.horizon, batch_size=a.batch)
    base, ratios, t_naive, t_fast, texts = [], [], 0.0, 0.0, set()
    for share in np.array_split(np.arange(a.n), a.rounds):
        t = time.perf_counter()
        base += naive(lm.model, lm.tokenizer, codec, [ctxs[i] for i in share], a.horizon, codec.scale)
        dt_naive = time.perf_counter() - t
        t = time.perf_counter()
        res = forecast(lm.model, lm.tokenizer, codec, ctxs, cfg)
        dt_fast = time.perf_counter() - t
        texts.add(tuple(x for row in res.texts for x in row))
        ratios.append((dt_naive / len(share)) / (dt_fast / a.n))
        t_naive, t_fast = t_naive + dt_naive, t_fast + dt_fast
        print(f"  round {len(ratios)}: naive {len(share) / dt_naive:.2f} series/s, "
              f"batched {a.n / dt_fast:.2f} series/s, {ratios[-1]:.1f}x")
    naive_ok = np.mean([len(b) == a.horizon and np.isfinite(b).all() for b in base])
    print(f"naive loop      : {a.n / t_naive:7.2f} series/s  ({t_naive:.1f} s), fully parsed {100 * naive_ok:.0f}%")
    parsed = 100 * (1 - res.parse_failure_rate)
    print(f"flopcast batched: {a.n * a.rounds / t_fast:7.2f} series/s  ({t_fast / a.rounds:.1f} s a run), "
          f"fully parsed {parsed:.0f}%, the same text in every round: {len(texts) == 1}")
    print(f"speed-up        : {np.median(ratios):.1f}x median of rounds (range {min(ratios):.1f}-{max(ratios):.1f}x)")


if __name__ == "__main__":
    main()
