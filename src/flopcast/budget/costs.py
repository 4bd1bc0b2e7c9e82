"""Every FLOP cost flopcast plans, reserves or charges, in one place. No torch.

:mod:`flopcast.budget.flops` counts one forward / training step / generation of a model; this module turns
those counts into what the rest of flopcast charges to the ledger:

* a training run: FLOPs per optimizer step, per validation pass, and its planned total
  (:func:`run_cost`);
* an evaluation or forecast: the bound reserved before it starts (:func:`generation_bound` with every
  row generating the grammar's longest output, over the rows decoding computes: :func:`decode_batches`) and the
  charge of each finished batch (:func:`batch_flops`, :func:`charge_batches`);

Padded tokens are computed, so they count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from .flops import Arch, LoraShape, forward, generate_total, train_step
from .ledger import RunLedger
from .rows import Charge


@dataclass(frozen=True)
class RunCost:
    """What one training run costs: per step, per validation pass, and planned in total."""

    per_step: int
    per_val: int
    planned: int


def head_arch(arch: Arch, head_tokens: int | None) -> Arch:
    """The architecture as the count sees it with the numeric head (logits over ``head_tokens`` columns)."""
    return replace(arch, vocab=head_tokens) if head_tokens else arch


def run_cost(arch: Arch, cfg: TrainConfig, lora: LoraShape, val_chunks: int, head_tokens: int | None = None) -> RunCost:
    """Per-step, per-validation and planned FLOPs of a run over ``val_chunks`` validation chunks
    (a validation pass runs every ``eval_every`` steps and after the last one; ``max_flops`` caps the plan)."""
    a = head_arch(arch, head_tokens)
    per_step = train_step(a, cfg.batch_size, cfg.seq_len, lora).total
    per_val = forward(a, cfg.batch_size, cfg.seq_len, lora=lora,
                      loss=True).total * math.ceil(val_chunks / cfg.batch_size)
    # a validation every eval_every steps, and one after the last step
    n_val = cfg.steps // cfg.eval_every + (1 if cfg.steps % cfg.eval_every else 0)
    planned = per_step * cfg.steps + per_val * n_val
    if cfg.max_flops is not None:
        planned = min(planned, int(cfg.max_flops))
    return RunCost(per_step, per_val, planned)


def val_chunks_used(n_chunks: int, cfg: TrainConfig) -> int:
    """Validation chunks a run scores: the first ``val_batches`` batches of the validation split."""
    return min(n_chunks, cfg.val_batches * cfg.batch_size)


def generation_bound(arch: Arch, n_prompts: int, prompt_len: int, new_tokens: int,
                     lora: LoraShape | None = None) -> int:
    """FLOPs to generate ``new_tokens`` after each of ``n_prompts`` prompts of ``prompt_len`` tokens (the count is
    linear in the batch, so how the prompts are batched does not change it)."""
    return generate_total(arch, n_prompts, prompt_len, new_tokens, lora)


def shape_bucket(n: int, floor: int = 1) -> int:
    """The smallest of ``floor`` and the sizes 2^k and 3 x 2^(k-1) (1, 2, 3, 4, 6, 8, 12, 16, 24, ...) that holds
    ``n``: compiled decoding rounds its batch and KV-cache length up to these, so that a study compiles at most two
    shapes per doubling of either, not one per prompt length or row count (less than half of any shape is filler)."""
    n = max(n, floor, 1)
    pow2 = 1 << (n - 1).bit_length()
    return pow2 * 3 // 4 if pow2 >= 4 and pow2 * 3 // 4 >= n else pow2


def decode_batches(n_rows: int, size: int, fixed: bool) -> list[int]:
    """The rows each batch of a decoding computes: batches of ``size`` and the rest; with ``fixed`` (compiled
    decoding, where every new shape is a compile) the rows are split into equally many per batch and each batch is
    filled up to one :func:`shape_bucket` size of at most ``size`` with rows that are finished from the start. The
    filler rows are computed, so the bound and the charges count them."""
    size = max(1, size)
    k = math.ceil(n_rows / size)
    if not fixed:
        return [min(size, n_rows)] * (k - 1) + [n_rows - size * (k - 1)]
    while shape_bucket(math.ceil(n_rows / k)) > size:
        k += 1
    return [shape_bucket(math.ceil(n_rows / k))] * k


def batch_flops(arch: Arch, batch: dict[str, int], lora: LoraShape | None = None) -> int:
    """FLOPs of one generated batch (a ``ForecastResult.batches`` entry: B, prompt_len, new_tokens)."""
    return generate_total(arch, batch["B"], batch["prompt_len"], batch["new_tokens"], lora)


def model_shape(model: Any) -> tuple[Arch, LoraShape | None]:
    """The count's view of a loaded model: its architecture and LoRA shape (None for a plain model)."""
    cfg = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
    lora = None
    if cfg is not None:
        head = model.get_output_embeddings()
        lora = LoraShape(int(cfg.r), tuple(sorted(cfg.target_modules)), getattr(head, "bias", None) is not None)
    return Arch.from_config(model.config), lora


def charged(ledger: RunLedger | None, name: str, kind: str, flops: int, record: Path | None = None,
            **fields: Any) -> AbstractContextManager[Charge]:
    """``ledger.reserved(name, kind, flops, ...)``: ``flops`` reserved before the block, each addition to the
    yielded :class:`~flopcast.budget.rows.Charge` reported at once (and kept in ``record/charges.json``), the
    total settled after it; without a ledger, a charge kept nowhere."""
    return nullcontext(Charge()) if ledger is None else ledger.reserved(name, kind, flops, record, **fields)


def charge_batches(charge: Charge, model: Any) -> Callable[[dict[str, int]], None]:
    """An ``on_batch`` that adds each finished batch's FLOPs to a ledger ``Charge`` and reports them at once, so a
    forecast stopped in any way (``kill -9`` included) has charged the batches it finished."""
    arch, lora = model_shape(model)

    def on_batch(batch: dict[str, int]) -> None:
        charge.add(batch_flops(arch, batch, lora))
    return on_batch
