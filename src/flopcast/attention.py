"""Decode-step attention that reads each cached key and value once, for grouped-query attention models.

In grouped-query attention several query heads share one key/value head (Qwen2.5-0.5B: 14 query heads, 2
key/value heads; SmolLM2-135M: 9 and 3). In a decode step with a padding mask, transformers' SDPA function
copies every cached key and value out to all query heads first (``repeat_kv``): always in releases without its
``pack_gqa`` (5.17, the GPU image's, among them), and in every release under ``torch.compile``, which
flopcast's decoding uses on CUDA. For Qwen2.5-0.5B that writes 7 times the whole KV cache, and reads it back,
in every layer of every decode step.

:func:`grouped_decoding` switches a model's attention, for a block, to :func:`decode_attention`, which instead
folds the query heads that share a key/value head into query rows -- (B, heads, 1, D) -> (B, kv_heads, group,
D) -- so the kernel reads the cache as it is. Each query row meets the same keys, values and mask as before
(a padding mask is one row per sequence, the same for every head), so the arithmetic per row is the same;
it is what transformers 5.2x does itself in eager decoding. Everything else (the prefill, models without
grouped heads, a per-head mask) goes to transformers' own SDPA function, unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .adapters import base_model

NAME = "flopcast_decode_sdpa"  # the name under which transformers finds decode_attention (and its mask)


def decode_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; query (B, heads, q_len, D), key and value (B, kv_heads, S, D).
    One query token per row with grouped heads: the heads folded onto the key/value heads; else transformers'
    SDPA function."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    groups = getattr(module, "num_key_value_groups", 1)
    B, heads, q_len, D = query.shape
    per_head_mask = attention_mask is not None and attention_mask.shape[1] != 1
    extras = any(kwargs.get(k) is not None for k in ("softcap", "position_bias"))
    if q_len != 1 or groups == 1 or per_head_mask or extras:
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                               scaling=scaling, is_causal=is_causal, **kwargs)
    folded = query.reshape(B, heads // groups, groups, D)  # head h = kv_head * groups + g, as repeat_kv pairs them
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling)
    return out.reshape(B, heads, 1, out.shape[-1]).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(NAME, decode_attention)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # the same masks as SDPA's


@contextmanager
def grouped_decoding(model):
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
