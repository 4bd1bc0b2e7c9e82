"""Budget planning: how many training steps each configuration can afford. No torch."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FlopcastError
from .flops import Arch, LoraShape, generate_total, train_step


@dataclass(frozen=True)
class PlanRow:
    seq: int
    batch: int
    rank: int
    flops_per_step: int
    eval_flops: int
    steps: int
    share_per_100_steps: float

    def as_dict(self) -> dict:
        return {"S": self.seq, "B": self.batch, "r": self.rank, "FLOPs/step": self.flops_per_step,
                "eval FLOPs": self.eval_flops, "affordable steps": self.steps,
                "budget % per 100 steps": 100 * self.share_per_100_steps}


def eval_flops(arch: Arch, n_windows: int, seq: int, new_tokens: int, batch: int = 16,
               lora: LoraShape | None = None) -> int:
    """FLOPs to generate ``new_tokens`` after each of ``n_windows`` prompts of ``seq`` tokens, in batches."""
    new = new_tokens
    full, rest = divmod(n_windows, batch)
    total = full * generate_total(arch, batch, seq, new, lora)
    return total + (generate_total(arch, rest, seq, new, lora) if rest else 0)


def affordable(arch: Arch, budget: float, seqs: list[int], batches: list[int], ranks: list[int],
               targets: tuple[str, ...] = ("q_proj", "v_proj"), eval_windows: int = 0, horizon: int = 5,
               head_bias: bool = False) -> list[PlanRow]:
    """For every (S, B, r): FLOPs per training step and steps affordable after evaluation."""
    if budget <= 0:
        raise FlopcastError(f"budget must be > 0, got {budget}")
    rows = []
    for s in seqs:
        for b in batches:
            for r in ranks:
                per = train_step(arch, b, s, LoraShape(r, targets, head_bias)).total
                new = (horizon + 1) * 10  # ~10 tokens per step, +1 step for a partial first one
                ev = eval_flops(arch, eval_windows, s, new, lora=LoraShape(r, targets, head_bias)) if eval_windows else 0
                rows.append(PlanRow(s, b, r, per, ev, max(0, int((budget - ev) // per)), 100 * per / budget))
    return rows
