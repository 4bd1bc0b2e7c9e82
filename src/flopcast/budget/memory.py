"""Memory a training step or a batch of decoding needs, from the architecture alone, checked before anything is
allocated: a batch that cannot fit is refused in one line that names the largest one that does. No torch.

The estimates are upper bounds of the memory a batch adds on top of the loaded weights:

* a training step keeps every layer's activations for the backward pass -- per token and layer
  ``h * (34 + 5 * a * s / h)`` half-precision bytes (Korthikanti et al., 2022, "Reducing Activation Recomputation in
  Large Transformer Models", with the attention scores materialised), scaled to the working precision -- plus
  the logits and their gradient in float32;
* a decoding batch keeps the KV cache of prompt and generated tokens, the prefill's largest activations and the
  attention scores, and one row of logits per sequence.

Free memory is the host's available RAM (``MemAvailable``) on the CPU; the caller passes a GPU's free memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import FlopcastError
from .flops import Arch

GIB = 1024**3


def train_step_bytes(arch: Arch, batch: int, seq: int, elem_bytes: int = 4, head_tokens: int | None = None) -> int:
    """Activation and logit memory of one training step (``head_tokens``: columns of a numeric head)."""
    h, a = arch.hidden, arch.heads
    per_layer = seq * h * (34 + 5 * a * seq / h) * elem_bytes / 2
    logits = seq * (head_tokens or arch.vocab) * 4 * 2
    return int(batch * (arch.layers * per_layer + logits))


def decode_row_bytes(arch: Arch, prompt_len: int, new_tokens: int, elem_bytes: int = 4) -> int:
    """One decoding row's KV cache of ``prompt_len + new_tokens`` positions, its prefill's largest activations (the
    MLP's) and its attention scores if materialised."""
    length = prompt_len + new_tokens
    kv = 2 * arch.layers * arch.kv_heads * arch.head_dim * length * elem_bytes
    activations = prompt_len * (4 * arch.hidden + 3 * arch.intermediate) * elem_bytes
    scores = arch.heads * prompt_len * length * 4
    return int(kv + activations + scores)


def decode_bytes(arch: Arch, rows: int, prompt_len: int, new_tokens: int, elem_bytes: int = 4) -> int:
    """KV cache, prefill activations, attention scores and logits of one decoding batch of ``rows`` sequences."""
    return rows * (decode_row_bytes(arch, prompt_len, new_tokens, elem_bytes) + arch.vocab * 4)


def host_free_bytes() -> int | None:
    """The RAM the kernel says is available (Linux ``MemAvailable``), None where it cannot tell."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def largest_fitting(need: Callable[[int], int], free: int, upto: int) -> int:
    """The largest batch in [1, upto] whose ``need(batch)`` fits in ``free`` bytes (0 if not even one does)."""
    lo, hi = 0, upto
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= free:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_fits(what: str, need: Callable[[int], int], batch: int, free: int | None, where: str, fix: str) -> None:
    """Refuse ``batch`` when ``need(batch)`` exceeds ``free`` bytes, naming the largest batch that fits (``fix`` is
    the setting to change, e.g. ``train.batch_size``). Nothing is checked when the free memory is unknown."""
    if free is None or need(batch) <= free:
        return
    fits = largest_fitting(need, free, batch)
    hint = (f"batch_size {fits} fits; set {fix} = {fits}" if fits else
            "not even batch_size 1 fits; use shorter sequences")
    raise FlopcastError(f"{what} at batch_size {batch} needs about {need(batch) / GIB:.1f} GiB, and {free / GIB:.1f} "
                        f"GiB are free on {where}: {hint}")
