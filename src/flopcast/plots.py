"""Matplotlib figures (Agg backend, written to PNG). No torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import Dataset


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_series(ds: Dataset, path: str | Path, n: int = 4) -> Path:
    """A grid of the first ``n`` series, one line per variable."""
    plt = _plt()
    n = max(1, min(n, ds.n_series))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.0 * n), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        s = ds.series[i]
        t = ds.time[: len(s)] if ds.time is not None else np.arange(len(s))
        for j, name in enumerate(ds.variables):
            ax.plot(t, s[:, j], label=name)
        ax.set_ylabel(f"series {i}")
    axes[0, 0].legend(loc="upper right")
    axes[-1, 0].set_xlabel("time")
    fig.suptitle(ds.source or "dataset")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
