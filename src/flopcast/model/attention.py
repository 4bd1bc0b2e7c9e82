"""Attention for forecasting that reads each cached key and value as it is, for grouped-query attention models.

In grouped-query attention several query heads share one key/value head (Qwen2.5-0.5B: 14 query heads, 2
key/value heads; SmolLM2-135M: 9 and 3). With a padding mask, transformers' SDPA attention may copy every cached key
and value out to all query heads first (``repeat_kv``): in a prefill, and in decode steps where its own grouped path
does not apply (some releases, and under ``torch.compile``). For Qwen2.5-0.5B that writes 7 times the KV cache, and
reads it back, in every layer.

:func:`grouped_decoding` switches a model's attention, for a block, to :func:`decode_attention`, which instead:

* in a decode step (one query token per row) folds the query heads that share a key/value head into query rows --
  (B, heads, 1, D) -> (B, kv_heads, group, D) -- so the kernel reads the cache as it is. Each query row meets the
  same keys, values and mask as before (a padding mask is one row per sequence, the same for every head), so the
  arithmetic per row is the same;
* in a prefill on the CPU (several query tokens per row) asks SDPA for grouped heads (``enable_gqa``): the CPU's
  flash kernel reads each key/value head in place and gives the numbers of the copying path, bit for bit (tested).
  CUDA's kernels fall back to the slow math kernel for grouped heads with a mask, so there transformers' own path
  stays;
* on the CPU, reads only the cache positions that some query may see (:func:`_visible`): the static cache is
  allocated for the whole generation, and the positions not written yet are masked anyway. The same numbers to
  float rounding (tested). Not under ``torch.compile``: the cut length changes every decode step, and a compiled
  step would be compiled again for each one.

Everything else (models without grouped heads, a per-head mask, no mask) goes to transformers' own SDPA function,
unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.compiler import is_compiling as compiling
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from .parts import base_model

NAME = "flopcast_decode_sdpa"  # the name under which transformers finds decode_attention (and its mask)


def decode_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; query (B, heads, q_len, D), key and value (B, kv_heads, S, D).
    Grouped heads with a mask shared by the heads: one query token per row -> the heads folded onto the key/value
    heads; several on the CPU -> SDPA's grouped heads; else transformers' SDPA function."""
    groups = getattr(module, "num_key_value_groups", 1)
    B, heads, q_len, D = query.shape
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1
    extras = any(kwargs.get(k) is not None for k in ("softcap", "position_bias"))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    on_cpu = query.device.type == "cpu"
    if groups > 1 and shared_mask and not extras:
        if on_cpu and attention_mask is not None and attention_mask.dtype == torch.bool and not compiling():
            key, value, attention_mask = _visible(key, value, attention_mask)
        if q_len == 1:
            folded = query.reshape(B, heads // groups, groups, D)  # head h = kv_head * groups + g, as repeat_kv pairs
            out = sdpa(folded, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
            return out.reshape(B, heads, 1, out.shape[-1]).transpose(1, 2).contiguous(), None
        if on_cpu and attention_mask is not None:
            out = sdpa(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
            return out.transpose(1, 2).contiguous(), None
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                           scaling=scaling, is_causal=is_causal, **kwargs)


def _visible(key: torch.Tensor, value: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys, values and a boolean mask cut after the last cache position that some query may see: a static cache
    is allocated for the whole generation, and the positions not written yet are masked anyway. (A look at the
    mask, so on the CPU only, where it costs no wait.)"""
    seen = mask.flatten(0, 2).any(0).nonzero()
    n = int(seen.max()) + 1 if len(seen) else mask.shape[-1]
    return key[:, :, :n], value[:, :, :n], mask[..., :n]


def _register() -> None:
    AttentionInterface.register(NAME, decode_attention)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # the same masks as SDPA's


@contextmanager
def grouped_decoding(model: Any) -> Iterator[None]:
    """Within the block, a model that uses transformers' SDPA attention uses :func:`decode_attention` (any other
    attention implementation is left as it is)."""
    causal = base_model(model)
    if getattr(causal.config, "_attn_implementation", None) != "sdpa":
        yield
        return
    _register()
    causal.set_attn_implementation(NAME)
    try:
        yield
    finally:
        causal.set_attn_implementation("sdpa")
