"""Non-LLM forecasting baselines. No torch.

* ``persistence`` -- repeat the last observed step.
* ``linear`` -- linear drift: last value plus the context's mean slope (first to last), clipped at 0.
* ``lv_ode`` -- fit a damped Lotka-Volterra ODE (logistic prey growth, see :mod:`flopcast.simulate`)
  to the context by least squares in log-parameter space, then integrate forward.
"""

from __future__ import annotations

import warnings

import numpy as np

from .config import BASELINES


def persistence(context: np.ndarray, horizon: int, dt: float = 1.0) -> np.ndarray:
    return np.repeat(context[-1:], horizon, axis=0)


def linear(context: np.ndarray, horizon: int, dt: float = 1.0) -> np.ndarray:
    if len(context) < 2:
        return persistence(context, horizon)
    slope = (context[-1] - context[0]) / (len(context) - 1)
    steps = np.arange(1, horizon + 1)[:, None]
    return np.clip(context[-1] + steps * slope, 0, None)


def _gradient_matching(z: np.ndarray, dt: float):
    """Initial (a, b, d, g, K) by regression: dlog x/dt = a - (a/K) x - b y, dlog y/dt = d x - g."""
    if len(z) < 5:
        return None
    lz = np.log(z)
    dl = (lz[2:] - lz[:-2]) / (2 * dt)
    x, y = z[1:-1, 0], z[1:-1, 1]
    cx, *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x, y], 1), dl[:, 0], rcond=None)
    cy, *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), dl[:, 1], rcond=None)
    a, b, d, g = cx[0], -cx[2], cy[0], -cy[1]
    K = -a / cx[1] if cx[1] < 0 else 1e3
    vals = np.array([a, b, d, g, K])
    if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        vals = np.where(np.isfinite(vals) & (vals > 0), vals, [1.0, 2.0, 0.35, 0.7, 200.0])
    return np.clip(vals, 1e-3, 1e4)


def lv_ode(context: np.ndarray, horizon: int, dt: float = 1.0, max_fit_steps: int = 20, n_random: int = 4,
           seed: int = 0) -> np.ndarray:
    """Fit (a, b, d, g, K, x0, y0) to the last ``max_fit_steps`` steps and integrate ``horizon`` more.

    Residuals are taken in log space (the series span orders of magnitude near their troughs);
    starts are a gradient-matching estimate plus ``n_random`` draws from the simulator's ranges.
    A fit that does not explain the context, or that jumps away from its last value, falls back
    to persistence.
    """
    from scipy.integrate import odeint
    from scipy.optimize import least_squares

    from .simulate import RANGES, lv_rhs

    if context.shape[1] != 2:
        raise ValueError("lv_ode needs exactly two variables (prey, predator)")
    floor = 1e-4
    ctx = np.maximum(context[-max_fit_steps:], floor)
    n = len(ctx)
    if n < 5:
        return persistence(context, horizon)
    t_all = np.arange(n + horizon) * dt
    log_ctx = np.log(ctx)

    def simulate(theta):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b, d, g, K, x0, y0 = np.exp(theta)
            return odeint(lambda z, _t, *args: lv_rhs(z, *args), [x0, y0], t_all, args=(a, b, d, g, K), mxstep=2000)

    def resid(theta):
        with np.errstate(all="ignore"):
            r = (np.log(np.maximum(simulate(theta)[:n], floor)) - log_ctx).ravel()
        return np.where(np.isfinite(r), r, 1e2)

    rng = np.random.default_rng(seed)
    starts = [np.log([*_gradient_matching(ctx, dt), *ctx[0]])]
    starts += [np.log([*(rng.uniform(*RANGES[k]) for k in "abdgK"), *ctx[0]]) for _ in range(n_random)]
    best, best_cost = None, np.inf
    for s0 in starts:
        try:
            r = least_squares(resid, s0, method="trf", max_nfev=60)
        except (ValueError, FloatingPointError):
            continue
        if r.cost < best_cost:
            best, best_cost = r.x, r.cost
    if best is None or np.sqrt(2 * best_cost / ctx.size) > 0.3:  # RMSE in log space
        return persistence(context, horizon)
    fc = simulate(best)[n:]
    max_jump = 3 * np.abs(np.diff(ctx, axis=0)).max(0) + 1e-3
    if not np.all(np.isfinite(fc)) or np.any(np.abs(fc[0] - context[-1]) > max_jump):
        return persistence(context, horizon)
    return np.clip(fc, 0, None)


def run_baseline(name: str, contexts: list[np.ndarray], horizon: int, dt: float = 1.0) -> np.ndarray:
    """(N, H, V) forecasts of one baseline for all contexts."""
    fn = {"persistence": persistence, "linear": linear, "lv_ode": lv_ode}.get(name)
    if fn is None:
        raise ValueError(f"unknown baseline {name!r} (choose from {', '.join(BASELINES)})")
    return np.stack([fn(np.asarray(c, float), horizon, dt) for c in contexts])
