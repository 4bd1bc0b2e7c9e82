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

from .chunks import IGNORE
from .errors import FlopcastError
from .grammar import LLMTimeGrammar


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
        return F_nn.linear(h, self.head.weight[self.ids], None if b is None else b[self.ids])


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


def restricted_loss(model, batch: dict[str, torch.Tensor], table: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the restricted columns (same targets as ``model(**batch).loss``)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    labels = table[torch.where(labels == IGNORE, table.numel() - 1, labels)]
    return F_nn.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                              ignore_index=IGNORE)


@contextmanager
def numeric_head(model, ids: list[int]):
    """Swap the causal LM's head for a :class:`SubsetHead` for the duration of the block."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    original = causal.get_output_embeddings()
    causal.set_output_embeddings(SubsetHead(original, ids))
    try:
        yield
    finally:
        causal.set_output_embeddings(original)
