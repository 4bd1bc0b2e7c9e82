"""The pieces of one training step: learning-rate schedule, batch order, batches, :func:`train_step`, validation.

:func:`train_step` is the step :func:`flopcast.training.engine.fit` runs and the benchmarks time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig
from ..encoding.chunks import IGNORE, Chunks
from .losses import skip_update


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warmup then constant / cosine / linear decay to 0."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1 - frac)


class BatchOrder:
    """Seeded epoch shuffles; its state (epoch, position) is checkpointed for exact resume."""

    def __init__(self, n: int, batch: int, seed: int, epoch: int = 0, pos: int = 0):
        self.n, self.batch, self.seed, self.epoch, self.pos = n, batch, seed, epoch, pos

    def _perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next(self) -> np.ndarray:
        out: list[int] = []
        while len(out) < self.batch:
            perm = self._perm()
            take = perm[self.pos:self.pos + self.batch - len(out)]
            out.extend(take.tolist())
            self.pos += len(take)
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return np.array(out)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}


def make_batch(chunks: Chunks, idx: np.ndarray, device: Any) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of ``chunks`` on ``device``; chunks already there (see :func:`on_device`) are indexed in place,
    with no copy from the host."""
    keys = ("input_ids", "attention_mask", "labels")
    if isinstance(chunks.input_ids, torch.Tensor):
        i = torch.as_tensor(idx, dtype=torch.long).to(chunks.input_ids.device, non_blocking=True)
        return {k: getattr(chunks, k).index_select(0, i) for k in keys}
    return {k: torch.as_tensor(getattr(chunks, k)[idx], device=device) for k in keys}


def on_device(chunks: Chunks, device: Any) -> Chunks:
    """``chunks`` as tensors on an accelerator (a few MB), so a training step copies nothing from the host;
    on the CPU they stay as they are."""
    if torch.device(device).type == "cpu":
        return chunks
    return Chunks(*(torch.as_tensor(a).to(device) for a in (chunks.input_ids, chunks.attention_mask, chunks.labels)))


def make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for every parameter): it can skip a step on the device (see :func:`train_step`)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


@dataclass
class Learner:
    """What a training step updates, and how: the model, its optimizer and trainable parameters, the loss, and
    Accelerate (``acc``; None: one plain process)."""

    model: Any
    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    acc: Any = None


def train_step(learner: Learner, batch: dict[str, torch.Tensor], lr: float, grad_clip: float = 0.0,
               seen_nonfinite: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step on ``batch`` at learning rate ``lr``; returns the loss (mean over processes) as a
    0-d tensor on the device: nothing here waits for the device, reading the loss does.

    A non-finite loss leaves the weights as they were: the fused optimizer skips the update on the device
    (``found_inf``, from :func:`~flopcast.training.losses.skip_update`, which ``seen_nonfinite`` makes sticky).
    """
    acc, opt = learner.acc, learner.opt
    for g in opt.param_groups:
        g["lr"] = lr
    torch.compiler.cudagraph_mark_step_begin()  # a new step for a body under CUDA graphs; nothing otherwise
    loss = learner.loss_fn(batch)
    (acc.backward if acc is not None else torch.Tensor.backward)(loss)
    value = (acc.reduce(loss.detach(), reduction="mean") if acc is not None else loss.detach()).float()
    skip = skip_update(value, seen_nonfinite)
    if grad_clip:
        (acc.clip_grad_norm_ if acc is not None else torch.nn.utils.clip_grad_norm_)(learner.params, grad_clip)
    inner = getattr(opt, "optimizer", opt)  # under Accelerate, the optimizer it wraps
    inner.found_inf = skip.float()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return value


@torch.no_grad()
def validation_loss(learner: Learner, chunks: Chunks | None, batch: int) -> float | None:
    """Mean loss per target token over ``chunks`` (None when there are none) in batches of ``batch`` rows, the last
    one filled up (as the FLOP count assumes); each process scores its share of every batch, and the sums are read
    once at the end (one host sync)."""
    if chunks is None or len(chunks) == 0:
        return None
    model, acc = learner.model, learner.acc
    was = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64, device=acc.device)
    for i in range(0, len(chunks), batch):
        # a full last batch (one shape: no compiled variant for it), filled with rows that hold no targets
        pos = np.arange(i, i + batch)[acc.process_index::acc.num_processes]
        b = make_batch(chunks, pos % len(chunks), acc.device)
        if pos[-1] >= len(chunks):
            filler = torch.as_tensor(pos >= len(chunks), device=b["labels"].device)[:, None]
            b["labels"] = b["labels"].masked_fill(filler, IGNORE)
        k = (b["labels"][:, 1:] != IGNORE).sum().double()
        tot += torch.stack([learner.loss_fn(b).double() * k, k])  # summed on the device
    tot = acc.reduce(tot, reduction="sum")
    model.train(was)
    return float(tot[0] / max(float(tot[1]), 1.0))
