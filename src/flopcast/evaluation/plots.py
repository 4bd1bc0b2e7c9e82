"""Matplotlib figures, written to PNG. No torch.

Figures are made without pyplot (``matplotlib.figure.Figure`` renders PNG by itself), so flopcast neither
switches the process's backend nor keeps figures open: a notebook that runs a study still shows its own plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import Dataset
from ..encoding.windows import Window
from ..results import EvalResult


def subplots(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    """``plt.subplots`` without pyplot: a (figure, axes) pair that no backend knows of."""
    from matplotlib.figure import Figure

    figsize = kw.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def save_figure(fig: Any, path: str | Path, dpi: int = 90) -> Path:
    """Lay out and write a figure as PNG (creating the folder)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(p, dpi=dpi)
    return p


def plot_series(ds: Dataset, path: str | Path, n: int = 4) -> Path:
    """A grid of the first ``n`` series, one line per variable."""
    n = max(1, min(n, ds.n_series))
    fig, axes = subplots(n, 1, figsize=(8, 2.0 * n), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        s = ds.series[i]
        t = ds.stamps[i] if ds.stamps is not None else ds.time[: len(s)] if ds.time is not None else np.arange(len(s))
        for j, name in enumerate(ds.variables):
            ax.plot(t, s[:, j], label=name)
        ax.set_ylabel(f"series {i}")
    axes[0, 0].legend(loc="upper right")
    axes[-1, 0].set_xlabel("time")
    fig.suptitle(ds.source or "dataset")
    return save_figure(fig, path, dpi=100)


def plot_forecasts(windows: Sequence[Window], preds: dict[str, np.ndarray], path: str | Path, n: int = 4,
                   variables: Sequence[str] = ("prey", "predator"),
                   quantiles: dict[float, np.ndarray] | None = None,
                   times: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """Context + truth + forecasts (model and baselines) for ``n`` windows of different series; ``times`` (per
    window: the context's and the forecast's stamps, dates or numbers) replaces step numbers on the x axis."""
    first: dict[int, int] = {}
    for k, w in enumerate(windows):  # the last window of each series (the longest history)
        first[w.series] = k
    picks = (list(first.values()) + [k for k in range(len(windows)) if k not in first.values()])[:max(1, n)]
    n = len(picks)
    V = windows[0].truth.shape[1]
    fig, axes = subplots(n, V, figsize=(5 * V, 2.2 * n), squeeze=False)
    for row, r in enumerate(picks):
        w = windows[r]
        c, H = len(w.context), len(w.truth)
        tc, tf = times[r] if times is not None else (np.arange(w.cut - c, w.cut), np.arange(w.cut, w.cut + H))
        for j in range(V):
            ax = axes[row, j]
            ax.plot(tc, w.context[:, j], color="0.3", lw=1, label="context")
            ax.plot(tf, w.truth[:, j], color="k", lw=2, label="truth")
            for name, p in preds.items():
                ax.plot(tf, p[r, :, j], marker="o", ms=3, lw=1.2 if name == "model" else 0.8,
                        ls="-" if name == "model" else "--", label=name)
            if quantiles:
                lo, hi = min(quantiles), max(quantiles)
                ax.fill_between(tf, quantiles[lo][r, :, j], quantiles[hi][r, :, j], alpha=0.25, label=f"q{lo}-q{hi}")
            ax.set_title(f"series {w.series}, {variables[j] if j < len(variables) else j}", fontsize=9)
    axes[0, -1].legend(fontsize=7, loc="upper left")
    if times is not None:
        fig.autofmt_xdate()
    return save_figure(fig, path)


def plot_error_vs_horizon(result: EvalResult, path: str | Path) -> Path:
    """MAE per horizon step for every method, one panel per context length (``result``: an EvalResult)."""
    ctxs = list(result.contexts)
    fig, axes = subplots(1, len(ctxs), figsize=(4.5 * len(ctxs), 3.2), squeeze=False)
    for ax, S in zip(axes[0], ctxs):
        for method, m in result.contexts[S].scores.items():
            if m.mae_per_step:
                ax.plot(np.arange(1, len(m.mae_per_step) + 1), m.mae_per_step, marker="o", label=method)
        ax.set_title(f"S = {S} tokens")
        ax.set_xlabel("horizon step")
        ax.set_ylabel("MAE")
    axes[0, 0].legend(fontsize=8)
    return save_figure(fig, path)
