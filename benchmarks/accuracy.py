"""Accuracy per FLOP on the reference dataset: embedded SmolLM2-135M under <= 1e15 FLOPs.

Runs a study (zero-shot test evaluation, then LoRA training with what the budget leaves, then
its test evaluation) with the reference's `seed` protocol at S = 128/512/768, and prints the
seed-protocol MSE/MAE next to the persistence / linear / LV-ODE baselines on the same windows and
the reference study's published numbers (Qwen2.5-0.5B, 1e17 FLOPs). Every FLOP of training and
evaluation is charged to the study's ledger.

    python benchmarks/accuracy.py --out runs/accuracy [--budget 1e15] [--max-series 100] [--seq-len 512]
    python benchmarks/accuracy.py --out runs/accuracy --no-point       # a variant: digits only
    python benchmarks/accuracy.py --out runs/accuracy --head numeric   # a variant: softmax over the series' tokens
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flopcast.study.plan import plan_from_dict
from flopcast.study.runner import run_plan

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "lotka_volterra_data.h5"
REFERENCE = {  # S: (untrained MSE, MAE, initial MSE, MAE, final MSE, MAE)
    128: (0.5510, 0.3427, 0.1356, 0.1746, 0.0263, 0.0726),
    512: (0.1048, 0.1509, 0.0362, 0.0834, 0.0028, 0.0240),
    768: (0.0700, 0.1167, 0.0297, 0.0651, 0.0020, 0.0191),
}


def plan(a) -> dict:
    return {
        "name": "accuracy", "budget": a.budget, "data": str(a.data), "seed": 0,
        "model": {"name": a.model},
        "codec": {"decimals": 2, "scale_mode": "global", "per_variable": False, "drop_decimal_point": a.no_point},
        "eval": {"protocol": "seed", "contexts": [128, 512, 768], "max_series": a.max_series, "batch_size": 16},
        "lora": {"rank": a.rank, "targets": ["q_proj", "v_proj"]},
        "train": {"batch_size": 4, "seq_len": a.seq_len, "lr": a.lr, "warmup_steps": 10, "schedule": a.schedule,
                  "head": a.head,
                  "eval_every": 25, "val_batches": 4, "checkpoint_every": 25},
        "stages": [{"name": "zero_shot", "kind": "eval"},
                   {"name": "trained", "kind": "train", "steps": "remaining"}],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/accuracy")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--budget", type=float, default=1e15)
    ap.add_argument("--max-series", type=int, default=100, help="test series evaluated (the test split has 100)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "linear"])
    ap.add_argument("--head", default="full", choices=["full", "numeric"], help="LM head during training")
    ap.add_argument("--no-point", action="store_true")
    a = ap.parse_args()
    if not Path(a.data).is_file():
        raise SystemExit(f"dataset not found: {a.data}")
    summary = run_plan(plan_from_dict(plan(a)), a.out)
    st = summary.stages
    print(f"\nseed protocol, test split ({a.max_series} series), budget {a.budget:.1e}, "
          f"used {summary.ledger['used']:.3e} FLOPs")
    print(f"{'S':>4} | {'zero-shot':>17} | {'trained':>17} | {'persistence':>17} | {'linear':>17} | {'LV-ODE':>17} |"
          f" {'ref untrained':>17} | {'ref initial':>17} | {'ref final':>17}")
    for S in (128, 512, 768):
        z, t = st["zero_shot"].test, st["trained"].test
        cells = [z.score(S), t.score(S), z.score(S, "persistence"), z.score(S, "linear"), z.score(S, "lv_ode")]
        ref = REFERENCE[S]
        row = " | ".join(f"{c.mse:.4f} / {c.mae:.4f}" if c else f"{'no windows':>17}" for c in cells)
        refs = " | ".join(f"{ref[i]:.4f} / {ref[i + 1]:.4f}" for i in (0, 2, 4))
        print(f"{S:>4} | {row} | {refs}")
    print("cells: MSE / MAE in original units")


if __name__ == "__main__":
    main()
