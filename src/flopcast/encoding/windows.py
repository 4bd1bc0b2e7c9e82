"""Evaluation windows for the two protocols: which tokens the model sees, which steps are scored.

* ``seed`` (:func:`seed_windows`) reproduces the reference study: each series is tokenized whole, and windows of
  exactly S tokens start every ``window_stride_tokens`` tokens; the completion of a step cut by the window is
  generated but not scored;
* ``aligned`` (:func:`aligned_windows`) uses contexts of whole steps (as many as fit in S tokens) before cut
  points every ``stride`` steps.

Needs a tokenizer (for token counts and offsets) but no torch.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import EvalConfig
from ..errors import FlopcastError
from .codec import LLMTimeCodec
from .grammar import LLMTimeGrammar, grammar_for
from .scaling import Scale, collapse_warning


@dataclass
class Window:
    series: int            # index into the evaluated dataset
    cut: int               # first scored step
    context: np.ndarray    # whole steps visible to the model (for baselines and plots)
    truth: np.ndarray      # (H, V)
    scale: Scale           # the map its values were written with
    prompt: list[int]      # token ids given to the model
    prefix: str = ""       # prompt text after its last complete step (seed protocol)


def build_windows(series: list[np.ndarray], codec: LLMTimeCodec, tokenizer: Any, S: int,
                  cfg: EvalConfig, origins: list[list[int]] | None = None) -> list[Window]:
    """The windows of ``cfg.protocol`` at context length ``S`` (tokens), or with ``origins`` (per series, the steps
    to forecast from: a time split's) aligned windows at exactly those; a warning names the variables some
    context writes with fewer than two significant digits."""
    if origins is not None and cfg.protocol == "seed":
        raise FlopcastError("the seed protocol places its own windows; a time split needs protocol 'aligned'")
    if cfg.protocol == "seed":
        wins = seed_windows(series, codec, tokenizer, S, cfg.horizon, cfg.window_stride_tokens)
    else:
        wins = aligned_windows(series, codec, tokenizer, S, cfg.horizon, cfg.stride, cfg.min_context_steps, origins)
    lost = collapse_warning([w.context for w in wins], [w.scale for w in wins], codec.config.decimals)
    if lost:
        warnings.warn(f"S={S}: {lost}", stacklevel=2)
    return wins


def window_grammar(windows: list[Window], tokenizer: Any, codec: LLMTimeCodec, n_vars: int) -> LLMTimeGrammar:
    """The decoding grammar of these windows (sign and integer digits derived from their prompts)."""
    return grammar_for([tokenizer.decode(w.prompt) for w in windows], codec.config, n_vars)


def _step_token_counts(ids_offsets: list[tuple[int, int]], step_ends: list[int]) -> np.ndarray:
    """Tokens whose text starts inside each step (step k spans chars [end_{k-1}, end_k))."""
    counts = np.zeros(len(step_ends), dtype=int)
    for start, _ in ids_offsets:
        k = bisect_left(step_ends, start + 1)
        if k < len(counts):
            counts[k] += 1
    return counts


def aligned_windows(series: list[np.ndarray], codec: LLMTimeCodec, tokenizer: Any, S: int, horizon: int,
                    stride: int, min_context_steps: int, origins: list[list[int]] | None = None) -> list[Window]:
    """Contexts of whole steps (as many as fit in ``S`` tokens) before cut points every ``stride`` steps (or at
    ``origins[i]`` for series ``i``)."""
    sep = codec.config.step_sep
    out = []
    for i, s in enumerate(series):
        T = len(s)
        whole = codec.series_scale(s[: max(min_context_steps, 1)] if codec.config.scale_mode == "per_series" else s)
        text = codec.encode(s, whole)  # for the tokens per step; each context is written with its own scale
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ends = [j + 1 for j, ch in enumerate(text) if ch == sep]
        per_step = _step_token_counts(enc["offset_mapping"], ends)
        cuts = origins[i] if origins is not None else range(min_context_steps, T - horizon + 1, stride)
        for c in cuts:
            n, total = 0, 0
            while n < c and total + per_step[c - 1 - n] <= S:
                total += per_step[c - 1 - n]
                n += 1
            while n >= 1:
                ctx = s[c - n:c]
                a = codec.series_scale(ctx)
                prompt = tokenizer(codec.encode(ctx, a), add_special_tokens=False).input_ids
                if len(prompt) <= S:
                    out.append(Window(i, c, ctx, s[c:c + horizon], a, prompt))
                    break
                n -= 1
    return out


def seed_windows(series: list[np.ndarray], codec: LLMTimeCodec, tokenizer: Any, S: int, horizon: int,
                 stride_tokens: int = 256) -> list[Window]:
    """The reference protocol: windows of exactly ``S`` tokens at 0, stride, 2*stride, ... of each series."""
    if codec.config.scale_mode != "global":
        raise FlopcastError("the seed protocol reproduces the reference and needs global scaling (scale_mode='global')")
    sep = codec.config.step_sep
    out = []
    for i, s in enumerate(series):
        a = codec.series_scale(s)
        text = codec.encode(s, a)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = enc["input_ids"], enc["offset_mapping"]
        semis = [j for j, ch in enumerate(text) if ch == sep]
        for st in range(0, len(ids) - S + 1, stride_tokens):
            start_char, end_char = offs[st][0], offs[st + S - 1][1]
            n_complete = bisect_left(semis, end_char)  # steps whose ';' lies inside the window
            step_start = semis[n_complete - 1] + 1 if n_complete else 0
            prefix = text[step_start:end_char]
            cut = n_complete + (1 if prefix else 0)
            if cut + horizon > len(s):
                continue
            first = bisect_left(semis, start_char)  # step containing the window's first char
            if start_char != (semis[first - 1] + 1 if first else 0):
                first += 1  # it starts mid-step: that step is not fully visible
            if first >= n_complete:
                continue  # no complete step visible
            out.append(Window(i, cut, s[first:n_complete], s[cut:cut + horizon], a, list(ids[st:st + S]), prefix))
    return out
