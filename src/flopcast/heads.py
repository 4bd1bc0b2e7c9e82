"""Train with the LM head restricted to the tokens a series is written in (``TrainConfig.head``).

LLMTime text uses a dozen tokens (digits, separators, the point). With ``head = "numeric"`` the
training forward computes logits for those tokens only, and the loss is the softmax over them:
the head's matmul and the loss shrink from the full vocabulary (49k for SmolLM2, 152k for Qwen2.5)
to ~13 columns, which the FLOP count follows, and no gradient is spent pushing down tokens that
grammar-constrained decoding never allows anyway. Greedy constrained decoding picks the same
token from full or restricted logits, so a trained adapter is used unchanged at forecast time.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch.nn import functional as F_nn

from .adapters import base_model
from .chunks import IGNORE
from .errors import FlopcastError
from .grammar import LLMTimeGrammar

MAX_LOGITS_BYTES = 2 << 30  # a batch's fp32 logits above this are computed in chunks (see lm_loss) ...
CHUNK_LOGITS_BYTES = 512 << 20  # ... of about this size


class Fp32BiasHead(torch.nn.Linear):
    """An LM head whose trained bias stays fp32 while its weight is bf16/fp16: a bf16 bias would not move under
    updates below its precision (at lr 1e-4, a bias near 0.5 moves by less than half a bf16 step). The logits
    get the bias rounded to their dtype; the optimizer updates the fp32 copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F_nn.linear(x, self.weight)
        return out + self.bias.to(out.dtype)


class SubsetHead(torch.nn.Module):
    """The original LM head, computing only the columns ``ids`` (weights shared, not copied)."""

    def __init__(self, head: torch.nn.Module, ids: list[int]):
        super().__init__()
        self.head = head
        self.ids = torch.as_tensor(ids, dtype=torch.long, device=head.weight.device)  # not a buffer: no state

    @property
    def weight(self) -> torch.Tensor:  # callers that inspect the head see the original one
        return self.head.weight

    @property
    def bias(self):
        return getattr(self.head, "bias", None)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = self.bias
        out = F_nn.linear(h, self.head.weight[self.ids])
        return out if b is None else out + b[self.ids].to(out.dtype)


def numeric_token_ids(tokenizer, codec_config) -> list[int]:
    """The sorted token ids of the characters LLMTime text is written in (digits, separators, the point):
    the numeric head's columns. Each character must be one token, as constrained decoding needs too."""
    ids = []
    for ch in sorted(LLMTimeGrammar(codec_config, 1).alphabet):
        tok = tokenizer(ch, add_special_tokens=False).input_ids
        if len(tok) != 1:
            raise FlopcastError(f"the numeric head needs one token per character, and the tokenizer splits {ch!r}")
        ids.append(tok[0])
    return sorted(ids)


def head_ids_for(tokenizer, codec_config, *label_arrays: np.ndarray) -> list[int]:
    """The numeric head's columns, checked against the training targets (which must all be among them)."""
    ids = numeric_token_ids(tokenizer, codec_config)
    seen = {int(t) for a in label_arrays for t in np.unique(a) if t != IGNORE}
    outside = sorted(seen - set(ids))
    if outside:
        raise FlopcastError(f"training targets include tokens outside the series' alphabet ({outside[:5]}): "
                            "the numeric head cannot score them; use head = 'full'")
    return ids


def remap_table(ids: list[int], vocab: int, device) -> torch.Tensor:
    """vocab id -> column of the restricted head (IGNORE stays IGNORE via the extra last slot)."""
    table = torch.full((vocab + 1,), IGNORE, dtype=torch.long, device=device)
    table[torch.as_tensor(ids, device=device)] = torch.arange(len(ids), device=device)
    return table


def lm_loss(model, batch: dict[str, torch.Tensor], table: torch.Tensor | None = None,
            max_logits_bytes: int = MAX_LOGITS_BYTES, chunk_bytes: int = CHUNK_LOGITS_BYTES) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM over labelled tokens (``table``: labels -> restricted columns
    of a :class:`SubsetHead`). When a batch's fp32 logits would exceed ``max_logits_bytes``, the head and the
    loss run over sequence chunks of ``chunk_bytes`` of logits, each recomputed in the backward pass (activation
    checkpointing), so one chunk's logits are alive at a time: B=64 x S=512 x 152k columns would otherwise take
    20 GiB. Below the threshold (the reference plan's B=4, S<=768 on Qwen2.5) nothing changes, and so it is for a
    model wrapped in DistributedDataParallel (several processes), whose gradients are synchronised by its forward.
    No KV cache is built: models default to one, which copies every layer's keys and values for nothing."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    causal = base_model(inner)
    head = causal.get_output_embeddings()
    B, S = batch["input_ids"].shape
    cols = len(head.ids) if isinstance(head, SubsetHead) else head.weight.shape[0]
    if B * S * cols * 4 <= max_logits_bytes or inner is not model:  # under DDP, through its forward (grad sync)
        if table is None:
            return model(**batch, use_cache=False).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        return F_nn.cross_entropy(logits[:, :-1].float().reshape(-1, cols), _targets(batch, table).reshape(-1),
                                  ignore_index=IGNORE)
    from torch.utils.checkpoint import checkpoint

    body = getattr(causal, causal.base_model_prefix)
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  use_cache=False).last_hidden_state[:, :-1]
    labels = _targets(batch, table)
    step = max(1, chunk_bytes // (B * cols * 4))
    total = sum(checkpoint(_ce_sum, head, hidden[:, i:i + step], labels[:, i:i + step], use_reentrant=False)
                for i in range(0, S - 1, step))
    return total / (labels != IGNORE).sum().clamp(min=1)


def _targets(batch: dict[str, torch.Tensor], table: torch.Tensor | None) -> torch.Tensor:
    labels = batch["labels"][:, 1:]
    return labels if table is None else table[torch.where(labels == IGNORE, table.numel() - 1, labels)]


def _ce_sum(head, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F_nn.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                              reduction="sum")


@contextmanager
def numeric_head(model, ids: list[int]):
    """Swap the causal LM's head for a :class:`SubsetHead` for the duration of the block."""
    causal = base_model(model)
    original = causal.get_output_embeddings()
    causal.set_output_embeddings(SubsetHead(original, ids))
    try:
        yield
    finally:
        causal.set_output_embeddings(original)
