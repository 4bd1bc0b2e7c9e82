"""Budget planning: how many training steps each configuration can afford. No torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import check_budget, check_ints
from .costs import generation_bound
from .flops import Arch, LoraShape, train_step


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


def affordable(arch: Arch, budget: float, seqs: list[int], batches: list[int], ranks: list[int],
               targets: tuple[str, ...] = ("q_proj", "v_proj"), eval_windows: int = 0, horizon: int = 5,
               head_bias: bool = False) -> list[PlanRow]:
    """For every (S, B, r): FLOPs per training step and steps affordable after evaluation."""
    check_budget(budget)
    for name, values in (("seq", seqs), ("batch", batches), ("rank", ranks)):
        check_ints(name, values)
    check_ints("eval_windows", [eval_windows], minimum=0)
    rows = []
    for s in seqs:
        for b in batches:
            for r in ranks:
                per = train_step(arch, b, s, LoraShape(r, targets, head_bias)).total
                new = (horizon + 1) * 10  # ~10 tokens per step, +1 step for a partial first one
                ev = generation_bound(arch, eval_windows, s, new,
                                      lora=LoraShape(r, targets, head_bias)) if eval_windows else 0
                rows.append(PlanRow(s, b, r, per, ev, max(0, int((budget - ev) // per)), 100 * per / budget))
    return rows
