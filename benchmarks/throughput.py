"""Throughput, measured side by side in one run.

1. fp32 matmul throughput of this machine (2048^3 matmuls): the practical peak.
2. LoRA training steps of the embedded SmolLM2-135M (r=8, q/v, batch 4) at S=128 and 512:
   tokens/s, achieved FLOP/s by the reference convention (backward = 2 x forward) and by what
   torch actually executes (FlopCounterMode), each as a fraction of the measured peak.
3. Forecasting series/s, batched constrained decoder vs a naive per-series loop
   (see forecast_throughput.py; ``--forecast`` to include it, it takes a few minutes).

    python benchmarks/throughput.py [--steps 3] [--seq 128,512] [--forecast]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from flopcast import flops as F
from flopcast.config import LoraSpec
from flopcast.models import attach_lora, load_model


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * n ** 3 / (time.perf_counter() - t)


def train_steps(model, batch: dict, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    def step():
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def executed_flops(model, batch: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seq", default="128,512")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--forecast", action="store_true")
    a = ap.parse_args()
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    lm = load_model(a.model)
    model = attach_lora(lm.model, LoraSpec(rank=8))
    model.train()
    arch = F.Arch.from_config(lm.model.config)
    print(f"{'S':>5} {'s/step':>8} {'tokens/s':>9} {'ref GFLOP/s':>12} {'ref/peak':>9} {'exec GFLOP/s':>13} {'exec/peak':>10} {'ref/exec':>9}")
    for S in [int(s) for s in a.seq.split(",")]:
        ids = torch.randint(0, lm.tokenizer.vocab_size, (a.batch, S))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        dt = train_steps(model, batch, a.steps)
        ref = F.train_step(arch, a.batch, S, F.LoraShape(8)).total
        exe = executed_flops(model, batch)
        print(f"{S:>5} {dt:>8.2f} {a.batch * S / dt:>9.0f} {ref / dt / 1e9:>12.1f} {ref / dt / peak:>9.2f} "
              f"{exe / dt / 1e9:>13.1f} {exe / dt / peak:>10.2f} {ref / exe:>9.2f}")
    print("ref = reference convention (backward = 2 x forward); exec = matmul FLOPs torch ran (FlopCounterMode).\n"
          "LoRA freezes the base weights, so their weight gradients are never computed: ref/exec > 1.")
    if a.forecast:
        sys.path.insert(0, str(Path(__file__).parent))
        import forecast_throughput

        sys.argv = [sys.argv[0], "--model", a.model]
        forecast_throughput.main()


if __name__ == "__main__":
    main()
