"""Training text -> fixed-length token chunks, dropping no data. No torch.

Each series is encoded and tokenized whole, then cut into windows of ``seq_len`` tokens every
``stride`` tokens (default ``seq_len - 1``: a window's first token has no prediction, so windows
overlap by one). If the windows do not reach the end of the series, one more window ending at the
last token is added. Targets already covered by an earlier window get label -100, so every token
but the first of a series is a training target exactly once. Series shorter than ``seq_len`` are right-padded with
labels -100 (the reference study instead dropped series tails because of a padding bug).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .codec import LLMTimeCodec

IGNORE = -100


@dataclass
class Chunks:
    input_ids: np.ndarray       # (n, S) int64
    attention_mask: np.ndarray  # (n, S)
    labels: np.ndarray          # (n, S), -100 where not a target

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        return int((self.labels != IGNORE).sum())


def series_token_ids(series: list[np.ndarray], codec: LLMTimeCodec, tokenizer: Any) -> list[list[int]]:
    """Each series encoded whole and tokenized (no special tokens)."""
    return [tokenizer(codec.encode(s), add_special_tokens=False).input_ids for s in series]


def target_starts(series: list[np.ndarray], steps: list[int], codec: LLMTimeCodec, tokenizer: Any) -> list[int]:
    """Per series, the index of the first token of step ``steps[i]`` in its whole text (written with the whole
    series' scale, as :func:`series_token_ids` writes it): where a time split's validation targets begin."""
    return [len(tokenizer(codec.encode(s[:k], codec.series_scale(s)), add_special_tokens=False).input_ids)
            for s, k in zip(series, steps)]


def make_chunks(token_lists: list[list[int]], seq_len: int, pad_id: int, stride: int | None = None,
                targets_from: list[int] | None = None) -> Chunks:
    """Windows of ``seq_len`` tokens over each token list (see the module doc). With ``targets_from``, the tokens of
    list ``i`` before index ``targets_from[i]`` are context only (a time split's validation: its history is
    seen, its last horizon scored), and windows without a target are left out."""
    stride = stride or seq_len - 1
    ids, mask, labels = [], [], []
    for i, toks in enumerate(token_lists):
        n, first = len(toks), targets_from[i] if targets_from is not None else 0
        if n == 0 or first >= n:
            continue
        if n <= seq_len:
            pad = seq_len - n
            ids.append(toks + [pad_id] * pad)
            mask.append([1] * n + [0] * pad)
            labels.append([IGNORE] * first + toks[first:] + [IGNORE] * pad)
            continue
        covered = first  # tokens [0, covered) are context or already targets
        starts = list(range(0, n - seq_len + 1, stride))
        if starts[-1] + seq_len < n:
            starts.append(n - seq_len)
        for st in starts:
            if st + seq_len <= covered:
                continue  # nothing new to score in this window
            window = toks[st:st + seq_len]
            lab = list(window)
            first_new = max(covered - st, 0)
            lab[:first_new] = [IGNORE] * first_new
            ids.append(window)
            mask.append([1] * seq_len)
            labels.append(lab)
            covered = st + seq_len
    if not ids:
        raise ValueError("no training tokens")
    return Chunks(np.array(ids, dtype=np.int64), np.array(mask, dtype=np.int64), np.array(labels, dtype=np.int64))
