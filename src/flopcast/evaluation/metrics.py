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


def mase_scale(history: np.ndarray, season: int) -> np.ndarray:
    """(V,) the mean absolute seasonal difference of ``history`` (T, V): MASE's denominator, the in-sample error of
    seasonal naive (one step back when the history is no longer than a season). NaN where it is 0."""
    h = np.asarray(history, float)
    m = season if len(h) > season else 1
    if len(h) <= m:
        return np.full(h.shape[1], np.nan)
    scale = np.abs(h[m:] - h[:-m]).mean(0)
    return np.where(scale > 0, scale, np.nan)


def mase_per_window(pred: np.ndarray, truth: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(N,) MASE of each window: its absolute errors over each variable's scale ((N, V)), averaged (NaN where the
    forecast did not parse or the scale is undefined)."""
    err = np.abs(np.asarray(pred, float) - np.asarray(truth, float)) / np.asarray(scales, float)[:, None, :]
    return err.mean((1, 2))


def mase_summary(per_window: np.ndarray, series: np.ndarray, reference: np.ndarray | None, n_boot: int,
                 seed: int) -> dict:
    """MASE overall (mean over windows, with a bootstrap CI), per series (mean over its windows), and the
    geometric mean over series of MASE relative to ``reference``'s per-window MASE (seasonal naive), as fev and
    GIFT-Eval aggregate. Windows with NaN are left out."""
    ok = np.isfinite(per_window)
    if not ok.any():
        return {}
    ids = np.unique(series)
    per_series = [float(np.nanmean(per_window[series == i])) if np.isfinite(per_window[series == i]).any()
                  else float("nan") for i in ids]
    out = {"mase": float(per_window[ok].mean()), "mase_ci95": _ci(per_window[ok], n_boot, np.random.default_rng(seed)),
           "mase_per_series": per_series}
    if reference is not None:
        ratios = []
        for i, m in zip(ids, per_series):
            ref = reference[(series == i) & np.isfinite(reference)]
            if np.isfinite(m) and len(ref) and ref.mean() > 0 and m > 0:
                ratios.append(np.log(m / ref.mean()))
        out["mase_relative"] = float(np.exp(np.mean(ratios))) if ratios else None
    return out


def quantile_scores(quantiles: dict[float, np.ndarray], truth: np.ndarray) -> dict:
    """Weighted quantile loss (GluonTS's: mean over levels of 2 x total pinball loss / total |truth|) and, for each
    band of symmetric levels (0.1 and 0.9), the share of truths inside it. Windows with NaN are left out."""
    t = np.asarray(truth, float)
    ok = np.isfinite(t).all((1, 2))
    for q in quantiles.values():
        ok &= np.isfinite(q).all((1, 2))
    if not ok.any() or not quantiles:
        return {}
    denom = np.abs(t[ok]).sum()
    losses = []
    for level, q in quantiles.items():
        diff = t[ok] - q[ok]
        losses.append(2 * np.maximum(level * diff, (level - 1) * diff).sum() / denom if denom > 0 else np.nan)
    coverage = {}
    for lo in sorted(q for q in quantiles if q < 0.5):
        hi = round(1 - lo, 10)
        if hi in quantiles:
            inside = (t[ok] >= quantiles[lo][ok]) & (t[ok] <= quantiles[hi][ok])
            coverage[f"{lo:g}-{hi:g}"] = float(inside.mean())
    return {"wql": float(np.mean(losses)), "coverage": coverage}
