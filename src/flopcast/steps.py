"""The pieces of one training step: learning-rate schedule, batch order, :func:`train_step`, validation loss.

:func:`train_step` is the step :func:`flopcast.train.fit` runs and ``benchmarks/throughput.py`` times.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .chunks import IGNORE, Chunks
from .config import TrainConfig


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
        out = []
        while len(out) < self.batch:
            perm = self._perm()
            take = perm[self.pos:self.pos + self.batch - len(out)]
            out.extend(take.tolist())
            self.pos += len(take)
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return np.array(out)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}


def make_batch(chunks: Chunks, idx: np.ndarray, device) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of ``chunks`` on ``device``; chunks already there (see :func:`on_device`) are indexed in place,
    with no copy from the host."""
    keys = ("input_ids", "attention_mask", "labels")
    if isinstance(chunks.input_ids, torch.Tensor):
        i = torch.as_tensor(idx, dtype=torch.long).to(chunks.input_ids.device, non_blocking=True)
        return {k: getattr(chunks, k).index_select(0, i) for k in keys}
    return {k: torch.as_tensor(getattr(chunks, k)[idx], device=device) for k in keys}


def on_device(chunks: Chunks | None, device) -> Chunks | None:
    """``chunks`` as tensors on an accelerator (a few MB), so a training step copies nothing from the host;
    on the CPU they stay as they are."""
    if chunks is None or torch.device(device).type == "cpu":
        return chunks
    return Chunks(*(torch.as_tensor(a).to(device) for a in (chunks.input_ids, chunks.attention_mask, chunks.labels)))


def make_optimizer(params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for every parameter): it can skip a step on the device (see :func:`train_step`)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def train_step(model, optimizer, batch: dict, loss_fn: Callable[[dict], torch.Tensor], lr: float,
               grad_clip: float = 0.0, acc=None, params: list | None = None,
               skip: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step on ``batch`` at learning rate ``lr``; returns the loss (mean over processes) as a
    0-d tensor on the device: nothing here waits for the device, reading the loss does.

    A non-finite loss leaves the weights as they were: the fused optimizer skips its update on the device
    (``found_inf``). With ``skip`` (a 0-d bool tensor, updated in place), every step after a non-finite loss is
    skipped too, until the caller reads the losses and stops: the run diverged at that step.
    """
    for g in optimizer.param_groups:
        g["lr"] = lr
    torch.compiler.cudagraph_mark_step_begin()  # a new step for a body under CUDA graphs; nothing otherwise
    loss = loss_fn(batch)
    (acc.backward if acc is not None else torch.Tensor.backward)(loss)
    value = (acc.reduce(loss.detach(), reduction="mean") if acc is not None else loss.detach()).float()
    bad = ~torch.isfinite(value)
    if skip is not None:
        bad = skip.logical_or_(bad)
    if grad_clip:
        params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        (acc.clip_grad_norm_ if acc is not None else torch.nn.utils.clip_grad_norm_)(params, grad_clip)
    inner = getattr(optimizer, "optimizer", optimizer)  # under Accelerate, the optimizer it wraps
    inner.found_inf = bad.float()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


@torch.no_grad()
def validation_loss(model, chunks: Chunks | None, batch: int, acc, loss_fn=None) -> float | None:
    """Mean loss per target token; each process scores its share of every batch."""
    loss_fn = loss_fn or (lambda b: model(**b, use_cache=False).loss)
    if chunks is None or len(chunks) == 0:
        return None
    was = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64, device=acc.device)
    for i in range(0, len(chunks), batch):
        idx = np.arange(i, min(i + batch, len(chunks)))[acc.process_index::acc.num_processes]
        if len(idx) == 0:
            continue
        b = make_batch(chunks, idx, acc.device)
        k = (b["labels"][:, 1:] != IGNORE).sum().double()
        tot += torch.stack([loss_fn(b).double() * k, k])  # summed on the device: one read at the end
    tot = acc.reduce(tot, reduction="sum")
    model.train(was)
    return float(tot[0] / max(float(tot[1]), 1.0))
