"""The training loss: next-token cross-entropy over labelled tokens, over the whole vocabulary or the numeric head.

When a batch's fp32 logits would be large (B=64 x S=512 x 152k columns take 20 GiB), the head and the loss run over
sequence chunks, each recomputed in the backward pass, so one chunk's logits are alive at a time.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F_nn
from torch.utils.checkpoint import checkpoint

from ..encoding.chunks import IGNORE
from .heads import SubsetHead
from .parts import base_model, body

MAX_LOGITS_BYTES = 2 << 30  # a batch's fp32 logits above this are computed in chunks (see lm_loss) ...
CHUNK_LOGITS_BYTES = 512 << 20  # ... of about this size


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], table: torch.Tensor | None = None,
            max_logits_bytes: int = MAX_LOGITS_BYTES, chunk_bytes: int = CHUNK_LOGITS_BYTES) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM over labelled tokens (``table``: labels -> restricted columns
    of a :class:`~flopcast.model.heads.SubsetHead`). When a batch's fp32 logits would exceed ``max_logits_bytes``,
    :func:`chunked_loss` computes them ``chunk_bytes`` at a time. A model wrapped in DistributedDataParallel
    (several processes) always goes through its forward, which synchronises the gradients. No KV cache is built:
    models default to one, which copies every layer's keys and values for nothing."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    head = base_model(inner).get_output_embeddings()
    B, S = batch["input_ids"].shape
    cols = len(head.ids) if isinstance(head, SubsetHead) else head.weight.shape[0]
    if B * S * cols * 4 > max_logits_bytes and inner is model:
        return chunked_loss(model, batch, table, max(1, chunk_bytes // (B * cols * 4)))
    if table is None:
        return model(**batch, use_cache=False).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return F_nn.cross_entropy(logits[:, :-1].float().reshape(-1, cols), _targets(batch, table).reshape(-1),
                              ignore_index=IGNORE)


def chunked_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], table: torch.Tensor | None,
                 positions: int) -> torch.Tensor:
    """:func:`lm_loss` with the head and the cross-entropy run ``positions`` sequence positions at a time, each
    chunk recomputed in the backward pass (activation checkpointing), so one chunk's logits are alive at a time."""
    head = base_model(model).get_output_embeddings()
    hidden = body(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         use_cache=False).last_hidden_state[:, :-1]
    labels = _targets(batch, table)
    total = sum(checkpoint(_ce_sum, head, hidden[:, i:i + positions], labels[:, i:i + positions], use_reentrant=False)
                for i in range(0, hidden.shape[1], positions))
    return total / (labels != IGNORE).sum().clamp(min=1)


def _targets(batch: dict[str, torch.Tensor], table: torch.Tensor | None) -> torch.Tensor:
    labels = batch["labels"][:, 1:]
    return labels if table is None else table[torch.where(labels == IGNORE, table.numel() - 1, labels)]


def _ce_sum(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F_nn.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                              reduction="sum")
