"""LM heads flopcast puts on a model: the numeric head, and a low-precision head with an fp32 bias.

LLMTime text uses a dozen tokens (digits, separators, the point). The numeric head computes logits for those
tokens only: in training (``TrainConfig.head = "numeric"``) the loss is the softmax over them, so the head's matmul
and the loss shrink from the whole vocabulary (49k for SmolLM2, 152k for Qwen2.5) to ~13 columns, which the FLOP
count follows, and no gradient is spent pushing down tokens that grammar-constrained decoding never allows.
Decoding always uses it: greedy constrained decoding picks the same token from full or restricted logits, so an
adapter trained either way forecasts unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F_nn

from ..config import CodecConfig
from ..encoding.chunks import IGNORE
from ..encoding.grammar import LLMTimeGrammar
from ..errors import FlopcastError
from .parts import base_model


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
    def bias(self) -> torch.Tensor | None:
        return getattr(self.head, "bias", None)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = self.bias
        out = F_nn.linear(h, self.head.weight[self.ids])
        return out if b is None else out + b[self.ids].to(out.dtype)


def numeric_token_ids(tokenizer: Any, codec_config: CodecConfig, signed: bool = False) -> list[int]:
    """The sorted token ids of the characters LLMTime text is written in (digits, separators, the point, and the
    sign when ``signed``): the numeric head's columns. Each character must be one token, as constrained decoding
    needs too."""
    ids = []
    for ch in sorted(LLMTimeGrammar(codec_config, 1, signed=signed).alphabet):
        tok = tokenizer(ch, add_special_tokens=False).input_ids
        if len(tok) != 1:
            raise FlopcastError(f"the numeric head needs one token per character, and the tokenizer splits {ch!r}")
        ids.append(tok[0])
    return sorted(ids)


def head_ids_for(tokenizer: Any, codec_config: CodecConfig, *label_arrays: np.ndarray) -> list[int]:
    """The numeric head's columns, checked against the training targets (which must all be among them); the sign
    is a column only when a target is one (series that are never negative keep the head they always had)."""
    seen = {int(t) for a in label_arrays for t in np.unique(a) if t != IGNORE}
    ids = numeric_token_ids(tokenizer, codec_config, signed=has_sign(tokenizer, seen))
    outside = sorted(seen - set(ids))
    if outside:
        raise FlopcastError(f"training targets include tokens outside the series' alphabet ({outside[:5]}): "
                            "the numeric head cannot score them; use head = 'full'")
    return ids


def has_sign(tokenizer: Any, token_ids: set[int]) -> bool:
    """Whether the ``-`` character's token is among ``token_ids``."""
    return bool(set(tokenizer("-", add_special_tokens=False).input_ids) & token_ids)


def remap_table(ids: list[int], vocab: int, device: Any) -> torch.Tensor:
    """vocab id -> column of the restricted head (IGNORE stays IGNORE via the extra last slot)."""
    table = torch.full((vocab + 1,), IGNORE, dtype=torch.long, device=device)
    table[torch.as_tensor(ids, device=device)] = torch.arange(len(ids), device=device)
    return table


@contextmanager
def numeric_head(model: Any, ids: list[int]) -> Iterator[None]:
    """Swap the causal LM's head for a :class:`SubsetHead` for the duration of the block."""
    causal = base_model(model)
    original = causal.get_output_embeddings()
    causal.set_output_embeddings(SubsetHead(original, ids))
    try:
        yield
    finally:
        causal.set_output_embeddings(original)
