"""Forecast error metrics with bootstrap confidence intervals. No torch.

Errors are computed per window on the ``H`` scored steps; a window whose forecast has any NaN
(unparsed output) is excluded from the errors and counted in ``parse_failure_rate``.
"""

from __future__ import annotations

import numpy as np


def _ci(per_window: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[float]:
    if len(per_window) < 2 or n_boot <= 0:
        v = float(per_window.mean()) if len(per_window) else float("nan")
        return [v, v]
    idx = rng.integers(0, len(per_window), size=(n_boot, len(per_window)))
    means = per_window[idx].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def score(pred: np.ndarray, truth: np.ndarray, alphas: np.ndarray | None = None, n_boot: int = 1000,
          seed: int = 0) -> dict:
    """MSE/MAE overall, per variable and per horizon step, in original and scaled units.

    pred, truth: (N, H, V) in original units; alphas: (N,) or (N, V) scales (scaled error = error / alpha).
    """
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} must both be (N, H, V)")
    N = len(pred)
    a = np.ones((N, 1)) if alphas is None else np.asarray(alphas, float).reshape(N, -1)
    ok = np.isfinite(pred).all(axis=(1, 2))
    p, t, a = pred[ok], truth[ok], a[ok]
    err = p - t
    rng = np.random.default_rng(seed)
    out: dict = {"n_windows": int(N), "n_scored": int(ok.sum()),
                 "parse_failure_rate": float(1 - ok.mean()) if N else 0.0}
    if not ok.any():
        out.update({k: float("nan") for k in ("mse", "mae", "mse_scaled", "mae_scaled")})
        return out
    sq, ab = err ** 2, np.abs(err)
    sq_s, ab_s = (err / a[:, None, :]) ** 2, np.abs(err / a[:, None, :])
    out.update({
        "mse": float(sq.mean()), "mae": float(ab.mean()),
        "mse_ci95": _ci(sq.mean((1, 2)), n_boot, rng), "mae_ci95": _ci(ab.mean((1, 2)), n_boot, rng),
        "mse_scaled": float(sq_s.mean()), "mae_scaled": float(ab_s.mean()),
        "mse_per_var": sq.mean((0, 1)).tolist(), "mae_per_var": ab.mean((0, 1)).tolist(),
        "mse_per_step": sq.mean((0, 2)).tolist(), "mae_per_step": ab.mean((0, 2)).tolist(),
    })
    return out


def per_window(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window MSE and MAE (NaN where the forecast did not parse)."""
    err = np.asarray(pred, float) - np.asarray(truth, float)
    return (err ** 2).mean((1, 2)), np.abs(err).mean((1, 2))
