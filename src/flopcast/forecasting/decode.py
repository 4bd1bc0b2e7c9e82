"""Grammar-constrained decoding of one batch of prompts, kept on the device.

:class:`Decoder` left-pads a batch of token prompts, prefills them into a KV cache allocated up front for the whole
generation (``StaticCache``; on the CPU a few positions per forward, :func:`prefill_tokens`), then decodes token by
token: model -> grammar mask -> argmax (or sample) -> next grammar state, all tensors
(:class:`~flopcast.forecasting.automaton.TokenAutomaton`). The host looks only at "is every row done", every
``check_every`` steps (each look is a host sync). The attention mask covers the whole cache from the start
(causality hides what is not written yet), so every decode step has the same shapes; on CUDA that step is
compiled (:class:`DecodeStep`: ``torch.compile`` with CUDA graphs).

:func:`rows_per_batch` picks a batch size: a number as given, or ``"auto"``, which on a GPU is the largest
batch whose KV cache and prefill activations fit in the free memory.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StaticCache

from ..budget.costs import shape_bucket
from ..budget.flops import Arch
from ..budget.memory import decode_row_bytes
from ..model.compile import allow_recompiles
from ..model.load import free_memory
from ..model.parts import base_model, text_config
from .automaton import Sampling, TokenAutomaton

CPU_BATCH = 16            # rows per batch for batch_size "auto" on the CPU
MAX_AUTO_BATCH = 512      # ... and at most this many on a GPU (a power of two)
FREE_MEMORY_SHARE = 0.6   # share of the free GPU memory "auto" plans to use
MIN_CACHE_LENGTH = 64    # compiled decoding's KV cache holds at least this many positions (see decode_span)
PREFILL_CHUNK_BYTES = 8 << 20  # on the CPU, a prefill forward's largest activation stays under this (prefill_tokens)


@dataclass
class Generation:
    texts: list[str]  # generated characters per row
    steps: int        # decode steps run (the batch's generated length, as computed)
    prompt_len: int   # the prompts' padded length, as computed
    rows: int         # rows computed (compiled decoding fills a batch up to its fixed size)


def cache_kwarg(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` where the model has it, else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(base_model(model).forward).parameters else "past_key_values"


class DecodeStep:
    """The logits of the next token after one new token per row; compiled when asked (CUDA graphs on CUDA).
    A compiled step that fails on its first call warns once and runs eagerly from then on."""

    def __init__(self, model: Any, compiled: bool = False):
        kwarg = cache_kwarg(model)

        def step(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache_position: torch.Tensor,
                 cache: Any) -> torch.Tensor:
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, cache_position=cache_position,
                         use_cache=True, **{kwarg: cache}).logits[:, -1, :]

        self.model, self.eager, self.compiled, self.proven = model, step, compiled, False
        self._cache: Any = None
        self._cache_shape: tuple[int, int] | None = None
        if compiled:
            allow_recompiles()  # a graph per (batch, length, adapter shape): a study makes more than torch's 8
            mode = "reduce-overhead" if next(model.parameters()).is_cuda else None
            self.fn = torch.compile(step, dynamic=False, mode=mode)
        else:
            self.fn = step

    def cache(self, batch: int, length: int) -> Any:
        """A KV cache of ``length`` positions for ``batch`` rows: the last one, emptied, when its shape fits (its
        tensors keep their addresses, which CUDA graphs replay on), else a new one (allocated on first use)."""
        if self._cache_shape == (batch, length):
            self._cache.reset()
        else:
            self._cache = StaticCache(config=self.model.config, max_cache_len=length)
            self._cache_shape = (batch, length)
        return self._cache

    def __call__(self, *args: Any) -> torch.Tensor:
        if not self.compiled or self.proven:
            return self.fn(*args)
        try:
            out = self.fn(*args)
        except Exception as e:  # noqa: BLE001 -- a compiler failure: said once, then eager decoding
            warnings.warn(f"compiled decoding failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "decoding eagerly (forecast compile = 'off' skips the attempt)", stacklevel=2)
            self.fn, self.compiled = self.eager, False
            return self.fn(*args)
        self.proven = True
        return out


def decode_span(prompt_len: int, new_tokens: int, compiled: bool) -> int:
    """Positions of the KV cache for prompts of ``prompt_len`` tokens and ``new_tokens`` generated ones: exactly
    that eagerly; compiled, rounded up to a :func:`~flopcast.budget.costs.shape_bucket` size (the compiled step
    sees the cache's length, so a context compiles one or two shapes, not one per prompt length). The prefill
    runs eagerly on the unpadded prompts; the unused positions are masked by causality."""
    n = prompt_len + new_tokens
    return shape_bucket(n, MIN_CACHE_LENGTH) if compiled else n


def _left_padded(prompts: list[list[int]], pad_id: int,
                 device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, positions) of left-padded prompts."""
    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p)
        attn[i, L - len(p):] = 1
    ids, attn = ids.to(device, non_blocking=True), attn.to(device, non_blocking=True)
    return ids, attn, (attn.cumsum(-1) - 1).clamp(min=0)


class Decoder:
    """Constrained generation with one model, grammar automaton and sampling rule, batch after batch.

    ``pad_id`` pads prompts on the left; ``compiled`` compiles the decode step; ``check_every``: decode steps between
    looks at whether every row is done (each look is a host sync)."""

    def __init__(self, model: Any, automaton: TokenAutomaton, pad_id: int, sampling: Sampling | None = None,
                 compiled: bool = False, check_every: int = 1):
        self.model, self.automaton, self.pad_id = model, automaton, pad_id
        self.sampling = sampling or Sampling()
        self.step = DecodeStep(model, compiled)
        self.check_every = check_every

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], targets: list[int], prefixes: list[str],
                 max_new_tokens: int | None = None, rows: int | None = None) -> Generation:
        """Generate for one batch of token-id prompts: ``targets`` steps per row, after ``prefixes`` (each prompt's
        text after its last complete step). Compiled, the batch is filled up to ``rows`` rows with copies of the
        first prompt that have nothing to generate (one batch shape for every batch of an evaluation)."""
        model, automaton, step = self.model, self.automaton, self.step
        device = next(model.parameters()).device
        n = len(prompts)
        if step.compiled and rows is not None and rows > n:
            fill = rows - n  # copies of the first row with a target of 0 steps: done before they start
            prompts, prefixes = prompts + prompts[:1] * fill, prefixes + prefixes[:1] * fill
            targets = targets + [0] * fill
        ids, attn, pos = _left_padded(prompts, self.pad_id, device)
        state, steps, target = automaton.start(targets, prefixes, device)
        limit = max_new_tokens or automaton.grammar.max_tokens(max(targets))
        B, L = ids.shape
        span = decode_span(L, limit, step.compiled)
        cache = step.cache(B, span)
        mask = torch.cat([attn, torch.ones((B, span - L), dtype=attn.dtype, device=device)], dim=1)
        written = torch.full((B, limit), -1, dtype=torch.long, device=device)
        logits = _prefill(model, ids, mask, pos, cache, prefill_tokens(model, B, L))
        pos = pos[:, -1:]
        cache_pos = torch.arange(L, L + limit, device=device)  # on the device once: no host copy per token
        for t in range(limit):
            done = steps >= target
            char = automaton.choose(logits, state, done, self.sampling)
            written[:, t] = torch.where(done, -1, char)
            state, steps = automaton.advance(state, steps, char, ~done)
            if (t + 1) % self.check_every == 0 and bool((steps >= target).all()):  # host sync
                break
            pos = pos + 1
            logits = step(automaton.token_ids[char][:, None], mask, pos, cache_pos[t:t + 1], cache)
        return Generation(automaton.text(written)[:n], t + 1, L, B)


def prefill_tokens(model: Any, rows: int, length: int) -> int:
    """Prompt positions per prefill forward: the whole prompt on an accelerator; on the CPU as many as keep the
    forward's largest activation (rows x positions x the MLP's width) under :data:`PREFILL_CHUNK_BYTES`, in equal
    chunks. glibc maps every block over 32 MiB afresh from the kernel and returns it when freed, so activations
    larger than that page-fault their memory in again in every forward; blocks of a few MiB are reused. The chunks
    write the same cache and give the same logits, to float rounding (tested)."""
    p = next(model.parameters())
    if p.device.type != "cpu":
        return length
    c = text_config(model.config)
    width = max(c.hidden_size, getattr(c, "intermediate_size", None) or 4 * c.hidden_size)
    chunks = math.ceil(length / max(1, PREFILL_CHUNK_BYTES // (rows * width * p.element_size())))
    return math.ceil(length / chunks)  # equal chunks (no short last one)


def _prefill(model: Any, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any,
             chunk: int) -> torch.Tensor:
    """Write the prompts ``ids`` into ``cache``, ``chunk`` positions per forward; the logits after the last one.
    ``mask`` covers the whole cache (causality hides what is not written yet)."""
    L = ids.shape[1]
    for start in range(0, L, chunk):
        end = min(L, start + chunk)
        logits = model(input_ids=ids[:, start:end], attention_mask=mask, position_ids=pos[:, start:end],
                       cache_position=torch.arange(start, end, device=ids.device), use_cache=True, logits_to_keep=1,
                       **{cache_kwarg(model): cache}).logits[:, -1, :]
    return logits


def rows_per_batch(requested: int | str, model: Any, prompt_len: int, new_tokens: int, compiled: bool = False) -> int:
    """``requested`` rows, or for "auto": :data:`CPU_BATCH` on the CPU, and on a GPU the most rows whose KV cache
    (of :func:`decode_span` positions) and prefill activations fit in :data:`FREE_MEMORY_SHARE` of its free memory
    (at most :data:`MAX_AUTO_BATCH`), measured after :func:`~flopcast.model.load.release_memory`."""
    if requested != "auto":
        return int(requested)
    p = next(model.parameters())
    if not p.is_cuda:
        return CPU_BATCH
    span = decode_span(prompt_len, new_tokens, compiled)
    return batch_for_memory(free_memory(p.device) or 0, model.config, prompt_len, span - prompt_len, p.element_size())


def batch_for_memory(free_bytes: int, config: Any, prompt_len: int, new_tokens: int, elem_bytes: int) -> int:
    """Rows that fit in ``FREE_MEMORY_SHARE * free_bytes``, rounded down to a power of two: per row, the KV cache of
    ``prompt_len + new_tokens`` positions, and the prefill's largest activations (the MLP's, the attention scores if
    materialised). The rounding keeps the batch, and so the compiled decoding's shapes, the same from one
    evaluation to the next while free memory varies a little."""
    c = text_config(config)
    heads = c.num_attention_heads
    arch = Arch(c.hidden_size, c.num_hidden_layers, heads, getattr(c, "num_key_value_heads", None) or heads,
                getattr(c, "head_dim", None) or c.hidden_size // heads, c.intermediate_size,
                getattr(c, "vocab_size", 0))
    per_row = decode_row_bytes(arch, prompt_len, new_tokens, elem_bytes)
    rows = int(max(1, min(MAX_AUTO_BATCH, FREE_MEMORY_SHARE * free_bytes // per_row)))
    return 1 << (rows.bit_length() - 1)
