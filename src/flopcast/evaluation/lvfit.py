"""Fitting the damped Lotka-Volterra ODE to many contexts at once. Numpy only (no torch, no scipy).

Every window's fit is the same small problem: seven log-parameters ``(a, b, d, g, K, x0, y0)``, residuals
in log space over the last ``max_fit_steps`` context steps. Instead of one ``odeint`` + ``least_squares``
per window and start (a Python callback per right-hand-side evaluation: about 0.75 s a window), all
(window, start) problems are integrated together by a fixed-step RK4 in log coordinates (positivity for
free) and solved together by Levenberg-Marquardt with forward-difference Jacobians. The integration of
all problems and all seven Jacobian columns is one array operation per RK4 stage.
"""

from __future__ import annotations

import numpy as np

FLOOR = 1e-4           # values below this are floored before taking logs (as the data's troughs are)
SUBSTEPS = 16          # RK4 steps per data step
LOG_CLIP = 30.0        # log-state clip: a diverging trial stays finite (and is rejected by its cost)
FD_STEP = 1e-5         # forward-difference step in log-parameter space
BAD_RESIDUAL = 1e2     # residual of a non-finite simulated value


def simulate_log(theta: np.ndarray, n_points: int, dt: float) -> np.ndarray:
    """log(x, y) at ``n_points`` times ``0, dt, ...`` for each row of ``theta`` (P, 7) -> (P, n_points, 2)."""
    a, b, d, g, K = np.exp(np.clip(theta[:, :5], -LOG_CLIP, LOG_CLIP)).T
    u, v = theta[:, 5].copy(), theta[:, 6].copy()
    h = dt / SUBSTEPS
    out = np.empty((len(theta), n_points, 2))

    def rhs(u, v):
        x = np.exp(u)
        return a * (1 - x / K) - b * np.exp(v), d * x - g

    with np.errstate(all="ignore"):
        for k in range(n_points):
            out[:, k, 0], out[:, k, 1] = u, v
            if k == n_points - 1:
                break
            for _ in range(SUBSTEPS):
                k1u, k1v = rhs(u, v)
                k2u, k2v = rhs(u + h / 2 * k1u, v + h / 2 * k1v)
                k3u, k3v = rhs(u + h / 2 * k2u, v + h / 2 * k2v)
                k4u, k4v = rhs(u + h * k3u, v + h * k3v)
                u = np.clip(u + h / 6 * (k1u + 2 * k2u + 2 * k3u + k4u), -LOG_CLIP, LOG_CLIP)
                v = np.clip(v + h / 6 * (k1v + 2 * k2v + 2 * k3v + k4v), -LOG_CLIP, LOG_CLIP)
    return out


def residuals(theta: np.ndarray, log_ctx: np.ndarray, dt: float) -> np.ndarray:
    """(P, n * 2) log-space residuals of ``theta`` (P, 7) against ``log_ctx`` (P, n, 2)."""
    sim = simulate_log(theta, log_ctx.shape[1], dt)
    r = (np.maximum(sim, np.log(FLOOR)) - log_ctx).reshape(len(theta), -1)
    return np.where(np.isfinite(r), r, BAD_RESIDUAL)


def levenberg_marquardt(theta: np.ndarray, log_ctx: np.ndarray, dt: float, iters: int = 60,
                        ftol: float = 1e-8, patience: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Minimise 0.5 * |residuals|^2 for every row at once; returns the best (theta, cost) per row.
    A row stops when an accepted step gains less than ``ftol`` of its cost, or after ``patience``
    rejected steps in a row, so the work shrinks as rows converge."""
    theta = theta.copy()
    r = residuals(theta, log_ctx, dt)
    cost = 0.5 * (r ** 2).sum(1)
    lam, rejected = np.full(len(theta), 1e-3), np.zeros(len(theta), dtype=int)
    active = np.arange(len(theta))
    for _ in range(iters):
        if not len(active):
            break
        trial = theta[active] + _lm_step(theta[active], r[active], log_ctx[active], lam[active], dt)
        rt = residuals(trial, log_ctx[active], dt)
        ct = 0.5 * (rt ** 2).sum(1)
        better = ct < cost[active]
        gain = cost[active] - ct
        acc = active[better]
        theta[acc], r[acc], cost[acc] = trial[better], rt[better], ct[better]
        lam[active] = np.clip(np.where(better, lam[active] / 3, lam[active] * 2), 1e-9, 1e9)
        rejected[active] = np.where(better, 0, rejected[active] + 1)
        done = (better & (gain < ftol * (cost[active] + gain))) | (rejected[active] >= patience)
        active = active[~done]
    return theta, cost


def _lm_step(theta: np.ndarray, r: np.ndarray, log_ctx: np.ndarray, lam: np.ndarray, dt: float) -> np.ndarray:
    """One damped Gauss-Newton step per row, with the Jacobian by forward differences (all columns at once)."""
    P, n_par = theta.shape
    eye = np.eye(n_par)
    pert = (theta[:, None, :] + FD_STEP * eye).reshape(-1, n_par)
    jt = (residuals(pert, np.repeat(log_ctx, n_par, axis=0), dt).reshape(P, n_par, -1) - r[:, None, :]) / FD_STEP
    A = jt @ jt.transpose(0, 2, 1)  # J^T J
    grad = (jt @ r[:, :, None])[:, :, 0]
    damp = lam[:, None, None] * (np.diagonal(A, axis1=1, axis2=2)[:, :, None] * eye + 1e-9 * eye)
    with np.errstate(all="ignore"):
        step = -np.linalg.solve(A + damp, grad[:, :, None])[:, :, 0]
    return np.where(np.isfinite(step), step, 0.0)
