"""Each variable's map to text scale, x -> (x - beta) / alpha, and the check that no variable collapses. No torch.

LLMTime writes every value with a fixed number of decimals, so the scale decides what survives: a variable 1000x
smaller than another, divided by the same alpha, is written ``0.00``. A :class:`Scale` therefore holds one
``alpha`` (and one offset ``beta``) per variable by default (``CodecConfig.per_variable``); one pooled value for
all variables is what the reference study did and stays available.

* ``alpha``: the ``percentile``-th percentile of ``|x - beta|`` maps to ``target`` (reference: 99.7 -> 10). For
  non-negative data without an offset this is the percentile of ``x`` itself, as before signs were allowed.
* ``beta``: 0, or with ``CodecConfig.offset`` LLMTime's offset ``min - 0.3 (max - min)``, which puts a level far
  from zero (1000 +- 1) into the digits that are written.

A scale is fitted on the training split (``scale_mode = "global"``), on each context alone (``"per_series"``) or
is the identity (``"none"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import CodecConfig
from ..errors import DataError, FlopcastError

OFFSET_MARGIN = 0.3   # LLMTime's beta: the offset lies this share of the range below the minimum
MIN_SIGNIFICANT = 2   # digits every variable keeps in its encoded context (else a warning)


@dataclass(frozen=True, eq=False)
class Scale:
    """``alpha`` and ``beta`` per variable ((V,) arrays), or one value each for every variable ((1,) arrays)."""

    alpha: np.ndarray
    beta: np.ndarray

    def __post_init__(self) -> None:
        a = np.atleast_1d(np.asarray(self.alpha, dtype=np.float64))
        b = np.atleast_1d(np.asarray(self.beta, dtype=np.float64))
        if a.ndim != 1 or b.ndim != 1 or not (np.all(np.isfinite(a)) and np.all(a > 0) and np.all(np.isfinite(b))):
            raise FlopcastError(f"a scale needs finite alpha > 0 and finite beta, got alpha {a}, beta {b}")
        object.__setattr__(self, "alpha", a)
        object.__setattr__(self, "beta", b)

    @classmethod
    def identity(cls) -> "Scale":
        return cls(np.ones(1), np.zeros(1))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Original units -> the values that are written, ``(x - beta) / alpha``."""
        return (np.asarray(x, dtype=np.float64) - self.beta) / self.alpha

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Written values -> original units."""
        return np.asarray(y, dtype=np.float64) * self.alpha + self.beta

    def alphas(self, n_vars: int) -> np.ndarray:
        """``alpha`` as a (V,) array (a pooled alpha repeated)."""
        return np.broadcast_to(self.alpha, (n_vars,)).copy()

    def state(self) -> dict[str, Any]:
        """As plain data: a pooled value as a number, per-variable values as lists."""
        def plain(v: np.ndarray) -> float | list[float]:
            return float(v[0]) if len(v) == 1 else [float(x) for x in v]
        return {"alpha": plain(self.alpha), "beta": plain(self.beta)}

    @classmethod
    def from_state(cls, alpha: Any, beta: Any = 0.0) -> "Scale":
        return cls(np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Scale) and np.array_equal(self.alpha, other.alpha)
                and np.array_equal(self.beta, other.beta))

    def __repr__(self) -> str:
        return f"Scale(alpha={self.state()['alpha']}, beta={self.state()['beta']})"


def fit_scale(values: np.ndarray | list[np.ndarray], config: CodecConfig) -> Scale:
    """The scale of ``config`` fitted on ``values`` ((T, V) arrays: a context, or the training series)."""
    if config.scale_mode == "none":
        return Scale.identity()
    arrays = values if isinstance(values, list) else [values]
    flat = np.concatenate([_as_2d(a) for a in arrays])
    columns = [flat[:, j] for j in range(flat.shape[1])] if config.per_variable else [flat.ravel()]
    betas, alphas = [], []
    for col in columns:
        finite = col[np.isfinite(col)]
        if finite.size == 0:
            raise DataError("cannot fit a scale: no finite values")
        lo, hi = float(finite.min()), float(finite.max())
        beta = lo - OFFSET_MARGIN * (hi - lo) if config.offset else 0.0
        p = float(np.percentile(np.abs(finite - beta), config.percentile))
        betas.append(beta)
        alphas.append(p / config.target if p > 0 else 1.0)
    return Scale(np.array(alphas), np.array(betas))


def _as_2d(a: np.ndarray) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def collapsed(context: np.ndarray, scale: Scale, decimals: int) -> list[int]:
    """The variables of ``context`` whose encoded values keep fewer than two significant digits (the largest is
    written as ``0.09`` or less with two decimals) though the variable is not constant: the model cannot see them."""
    x = _as_2d(context)
    written = np.abs(np.round(scale.apply(x), decimals)) * 10**decimals
    out = []
    for j in range(x.shape[1]):
        col = x[:, j]
        if col.size and np.ptp(col) > 0 and written[:, j].max() < 10 ** (MIN_SIGNIFICANT - 1):
            out.append(j)
    return out


def collapse_warning(contexts: list[np.ndarray], scales: list[Scale], decimals: int,
                     names: tuple[str, ...] | None = None) -> str | None:
    """One line naming the variables that collapse in some context (see :func:`collapsed`), or None."""
    hit: dict[int, int] = {}
    for c, s in zip(contexts, scales):
        for j in collapsed(c, s, decimals):
            hit[j] = hit.get(j, 0) + 1
    if not hit:
        return None
    what = ", ".join(f"{names[j] if names and j < len(names) else f'variable {j}'} in {n} context(s)"
                     for j, n in sorted(hit.items()))
    return (f"values written with fewer than {MIN_SIGNIFICANT} significant digits ({what}): the model cannot see "
            "them; scale each variable on its own (codec per_variable = true), or write more decimals")
