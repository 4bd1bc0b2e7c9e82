"""When the training loop reads its losses from the device, and what a loss that is not finite does.

Reading a loss waits for the device, so each step's loss stays on the device and :class:`LossReader` reads the
losses of several steps at once: every ``train.sync_every`` steps (:func:`sync_every`: every step on the CPU,
where a read costs nothing, and every 16 on an accelerator, so the host queues work ahead instead of waiting), and
before a validation, a checkpoint or the end of the run. Every read is a host sync.

A non-finite loss must not change the weights. :func:`skip_update` is the flag a training step hands the fused
optimizer (its ``found_inf``): true for a non-finite loss and, once one was seen, for every later step, so the
weights stay those from before it until the next read finds the loss and the run stops as ``diverged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..config import TrainConfig

SYNC_EVERY_ACCELERATOR = 16


def sync_every(cfg: TrainConfig, device: Any) -> int:
    """``train.sync_every``, or (None) 1 on the CPU and :data:`SYNC_EVERY_ACCELERATOR` on an accelerator."""
    return cfg.sync_every or (1 if torch.device(device).type == "cpu" else SYNC_EVERY_ACCELERATOR)


def skip_update(loss: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
    """A 0-d bool tensor: skip this step's update. True when ``loss`` is not finite; with ``seen`` (a 0-d bool on
    the device, updated in place) also after any earlier non-finite loss. Computed on the device: no sync."""
    bad = ~torch.isfinite(loss)
    return bad if seen is None else seen.logical_or_(bad)


@dataclass
class StepRecord:
    """One optimizer step whose loss has not been read yet."""

    step: int
    lr: float
    flops: int
    time: float
    loss: torch.Tensor  # 0-d, on the device


class LossReader:
    """Steps' losses kept on the device until they are read; ``diverged`` once a read found one not finite."""

    def __init__(self, every: int, device: Any):
        self.every = every
        self.seen_nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # see skip_update
        self.diverged = False
        self._pending: list[StepRecord] = []

    def add(self, record: StepRecord) -> None:
        self._pending.append(record)

    @property
    def due(self) -> bool:
        """``every`` steps are waiting to be read."""
        return len(self._pending) >= self.every

    def read(self) -> list[tuple[StepRecord, float]]:
        """Every pending step with its loss, in step order (a host sync: one wait for the device); a loss that is
        not finite sets ``diverged`` for good."""
        if not self._pending:
            return []
        rows, self._pending = self._pending, []
        losses = torch.stack([r.loss for r in rows]).tolist()
        self.diverged = self.diverged or not all(math.isfinite(v) for v in losses)
        return list(zip(rows, losses))
