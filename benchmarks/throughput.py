"""Throughput, measured side by side in one run.

1. fp32 matmul throughput of this machine (2048^3 matmuls): the practical peak.
2. LoRA training steps of the embedded SmolLM2-135M (r=8, q/v, batch 4) at S=128 and 512:
   tokens/s, achieved FLOP/s by the reference convention (backward = 2 x forward) and by what
   torch actually executes (FlopCounterMode), each as a fraction of the measured peak.
   Each S is measured with the full LM head and with ``head = "numeric"`` (logits and softmax
   over the series' tokens only, model/heads.py): the same batch of LLMTime text, side by side.
3. Forecasting series/s, batched constrained decoder vs a naive per-series loop
   (see forecast_throughput.py; ``--forecast`` to include it, it takes a few minutes).

    python benchmarks/throughput.py [--steps 3] [--seq 128,512] [--heads full,numeric] [--forecast]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from flopcast.budget import flops
from flopcast.config import CodecConfig, LoraSpec, SimConfig
from flopcast.data.simulate import simulate
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.model.heads import head_ids_for, numeric_head, remap_table
from flopcast.model.load import load_model
from flopcast.model.lora import attach_lora
from flopcast.model.loss import lm_loss
from flopcast.training.step import Learner, make_optimizer, train_step


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * n ** 3 / (time.perf_counter() - t)


def llmtime_batch(tokenizer, batch: int, seq: int) -> dict:
    """``batch`` rows of ``seq`` tokens of LLMTime text (simulated Lotka-Volterra series)."""
    ds = simulate(SimConfig(n_systems=4 * batch, n_steps=200, seed=0))
    codec = LLMTimeCodec.fit(CodecConfig(), ds.series)
    rows = [tokenizer(codec.encode(x), add_special_tokens=False).input_ids for x in ds.series]
    stream = [t for r in rows for t in r]
    ids = torch.tensor(stream[:batch * seq]).view(batch, seq)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def train_steps(model, loss_fn, batch: dict, steps: int) -> float:
    """Seconds per optimizer step of flopcast's own training step (flopcast.training.step.train_step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    learner = Learner(model, make_optimizer(params, 1e-4, 0.0), params, loss_fn)  # the fused AdamW training uses
    train_step(learner, batch, lr=1e-4, grad_clip=1.0)  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        train_step(learner, batch, lr=1e-4, grad_clip=1.0)
    return (time.perf_counter() - t) / steps


def executed_flops(model, loss_fn, batch: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        loss_fn(batch).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def measure(model, loss_fn, batch: dict, steps: int, arch, S: int, B: int) -> tuple[float, int, int]:
    """(seconds per step, reference-convention FLOPs, executed FLOPs) of one training step."""
    return (train_steps(model, loss_fn, batch, steps), flops.train_step(arch, B, S, flops.LoraShape(8)).total,
            executed_flops(model, loss_fn, batch))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seq", default="128,512")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", default="full,numeric", help="LM heads to compare (full, numeric)")
    ap.add_argument("--forecast", action="store_true")
    a = ap.parse_args()
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    lm = load_model(a.model)
    model = attach_lora(lm.model, LoraSpec(rank=8))
    model.train()
    arch = flops.Arch.from_config(lm.model.config)
    print(f"{'S':>5} {'head':>8} {'s/step':>8} {'tokens/s':>9} {'ref GFLOP/s':>12} {'ref/peak':>9} "
          f"{'exec GFLOP/s':>13} {'exec/peak':>10} {'ref/exec':>9}")
    for S in [int(s) for s in a.seq.split(",")]:
        batch = llmtime_batch(lm.tokenizer, a.batch, S)
        ids = head_ids_for(lm.tokenizer, CodecConfig(), batch["labels"].numpy())
        table = remap_table(ids, arch.vocab, "cpu")
        for head in a.heads.split(","):
            if head == "numeric":
                with numeric_head(model, ids):
                    dt, ref, exe = measure(model, lambda b, t=table: lm_loss(model, b, t), batch, a.steps,
                                           replace(arch, vocab=len(ids)), S, a.batch)
            else:
                dt, ref, exe = measure(model, lambda b: model(**b).loss, batch, a.steps, arch, S, a.batch)
            print(f"{S:>5} {head:>8} {dt:>8.2f} {a.batch * S / dt:>9.0f} {ref / dt / 1e9:>12.1f} "
                  f"{ref / dt / peak:>9.2f} "
                  f"{exe / dt / 1e9:>13.1f} {exe / dt / peak:>10.2f} {ref / exe:>9.2f}")
    print("numeric: logits and softmax over the series' tokens only; its reference FLOPs count that smaller head.")
    print("ref = reference convention (backward = 2 x forward); exec = matmul FLOPs torch ran (FlopCounterMode).\n"
          "LoRA freezes the base weights, so their weight gradients are never computed: ref/exec > 1.")
    if a.forecast:
        sys.path.insert(0, str(Path(__file__).parent))
        import forecast_throughput

        sys.argv = [sys.argv[0], "--model", a.model]
        forecast_throughput.main()


if __name__ == "__main__":
    main()
