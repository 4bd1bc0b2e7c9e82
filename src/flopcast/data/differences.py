"""Seasonal differencing, the target transform of ``Forecaster.forecast(..., difference=m)``. No torch.

The model reads and writes ``d_t = y_t - y_{t-m}`` instead of the series itself, and its forecast is integrated
back: ``y_{T+h} = d_{T+h} + y_{T+h-m}``, with the history's values where ``T+h-m`` is in the past and the forecast's
own values beyond. A forecast of zero differences is then exactly the seasonal naive forecast, so what the model
adds is its guess of how this season departs from the last one; a language model left to a seasonal series
itself tends to settle into repeating one value, which is worse than seasonal naive on most seasonal data
(``benchmarks/RESULTS.md``). The same transform as mlforecast's ``Differences([m])``; samples are integrated
path by path, so their median and quantiles are those of the levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError


def check_lag(lag: int, series: Sequence[np.ndarray], min_steps: int) -> None:
    """Refuse a lag that is not a whole number >= 0, or one that leaves a series fewer than ``min_steps``
    differences, naming the first such series."""
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 0:
        raise DataError(f"difference must be a whole number of steps >= 0 (0: none), got {lag!r}")
    for i, s in enumerate(series):
        if lag and len(s) - lag < min_steps:
            raise DataError(f"series {i} has {len(s)} step(s); difference={lag} needs at least {lag + min_steps}")


def differenced(values: np.ndarray, lag: int) -> np.ndarray:
    """``values`` (T, V) -> (T - lag, V): each step less the step ``lag`` before it (``values`` for lag 0)."""
    values = np.asarray(values, dtype=float)
    return values if lag == 0 else values[lag:] - values[:-lag]


def integrate(history: np.ndarray, diffs: np.ndarray, lag: int) -> np.ndarray:
    """Levels from forecast differences: ``diffs`` (..., H, V) after ``history`` (T, V) -> (..., H, V). A missing
    difference leaves its step, and every step that builds on it, missing."""
    if lag == 0:
        return diffs
    history = np.asarray(history, dtype=float)
    out = np.empty_like(diffs, dtype=float)
    for h in range(diffs.shape[-2]):
        base = history[len(history) - lag + h] if h < lag else out[..., h - lag, :]
        out[..., h, :] = diffs[..., h, :] + base
    return out
