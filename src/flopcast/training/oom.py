"""A training step's memory: checked against the free memory before the run starts (:func:`check_step_memory`,
from the architecture: :mod:`flopcast.budget.memory`), and, where a step runs out all the same, the largest batch
that fits, found by halving the batch until a forward and backward of its leading rows fit; each probe is work
done, so the caller charges it (the ledger never counts less than the work done). Both say so in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..budget.flops import Arch
from ..budget.memory import check_fits, train_step_bytes
from ..config import TrainConfig
from ..errors import FlopcastError
from ..model.compile import uncompile_body
from ..model.load import free_memory, release_memory
from .step import Learner


def check_step_memory(model: Any, cfg: TrainConfig, head_tokens: int | None, device: Any) -> None:
    """Refuse, before anything is allocated or charged, a batch whose training step cannot fit in ``device``'s free
    memory, naming the largest that does."""
    arch, elem = Arch.from_config(model.config), next(model.parameters()).element_size()
    check_fits("a training step", lambda b: train_step_bytes(arch, b, cfg.seq_len, elem, head_tokens), cfg.batch_size,
               free_memory(device), str(device), "train.batch_size (--batch-size)")


def largest_batch(loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], batch: dict[str, torch.Tensor],
                  zero_grad: Callable[[], None]) -> tuple[int, list[int]]:
    """The largest leading slice of ``batch`` (halving from half of it) whose forward and backward fit in memory,
    0 if none, and every size probed. ``zero_grad`` clears gradients before each probe."""
    probed, b = [], batch["input_ids"].shape[0] // 2
    while b >= 1:
        zero_grad()
        release_memory()
        probed.append(b)
        try:
            loss_fn({k: v[:b] for k, v in batch.items()}).backward()
            return b, probed
        except torch.OutOfMemoryError:
            b //= 2
    return 0, probed


def probe_batch(learner: Learner, batch: dict[str, torch.Tensor], batch_size: int) -> tuple[FlopcastError, list[int]]:
    """After a training step ran out of memory (called outside its ``except``, so that the failed step's
    activations are gone): the one-line error naming the largest batch that fits, and every size probed. The
    probes run eagerly -- the compiled layers are given back first, since each new batch size would compile them
    again -- so what fits is what the eager step needs (a compiled step needs no more)."""
    uncompile_body(learner.acc.unwrap_model(learner.model))
    fits, probed = largest_batch(learner.loss_fn, batch, lambda: learner.opt.zero_grad(set_to_none=True))
    learner.opt.zero_grad(set_to_none=True)
    S = batch["input_ids"].shape[1]
    return out_of_memory(batch_size, S, learner.acc.device, fits * learner.acc.num_processes), probed


def out_of_memory(batch_size: int, seq_len: int, device: Any, fits: int) -> FlopcastError:
    """The one-line error: the batch that failed, and the largest that fits (``fits``, over every process)."""
    hint = (f"batch_size {fits} fits (probed); set train.batch_size = {fits}" if fits else
            "not even batch_size 1 fits; lower train.seq_len")
    return FlopcastError(f"out of memory in a training step at batch_size {batch_size}, seq_len {seq_len} on "
                         f"{device}: {hint}")
