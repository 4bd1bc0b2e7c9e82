"""Non-LLM forecasting baselines. No torch.

* ``persistence`` -- repeat the last observed step.
* ``linear`` -- linear drift: last value plus the context's mean slope (first to last), clipped at 0.
* ``lv_ode`` -- fit a damped Lotka-Volterra ODE (logistic prey growth, see :mod:`flopcast.data.simulate`)
  to the context by least squares in log-parameter space, then integrate forward.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..config import BASELINES
from ..data.simulate import RANGES
from ..results import write_atomic
from . import lvfit

VERSION = 2  # of the baselines' arithmetic: 2 = lv_ode fitted in batches (flopcast.evaluation.lvfit)


def persistence(context: np.ndarray, horizon: int, dt: float = 1.0) -> np.ndarray:
    return np.repeat(context[-1:], horizon, axis=0)


def linear(context: np.ndarray, horizon: int, dt: float = 1.0) -> np.ndarray:
    if len(context) < 2:
        return persistence(context, horizon)
    slope = (context[-1] - context[0]) / (len(context) - 1)
    steps = np.arange(1, horizon + 1)[:, None]
    return np.clip(context[-1] + steps * slope, 0, None)


def _gradient_matching(z: np.ndarray, dt: float) -> np.ndarray:
    """Initial (a, b, d, g, K) by regression: dlog x/dt = a - (a/K) x - b y, dlog y/dt = d x - g (``z``: at least 5
    steps; :func:`lv_ode_many` falls back to persistence for shorter contexts)."""
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
    to persistence. One window of :func:`lv_ode_many`.
    """
    return lv_ode_many([context], horizon, dt, max_fit_steps, n_random, seed)[0]


def lv_ode_many(contexts: list[np.ndarray], horizon: int, dt: float = 1.0, max_fit_steps: int = 20,
                n_random: int = 4, seed: int = 0) -> np.ndarray:
    """:func:`lv_ode` for many contexts, fitted together (see :mod:`flopcast.evaluation.lvfit`) -> (N, H, 2)."""
    if any(np.asarray(c).shape[1] != 2 for c in contexts):
        raise ValueError("lv_ode needs exactly two variables (prey, predator)")
    out = np.empty((len(contexts), horizon, 2))
    fit = [np.maximum(np.asarray(c, float)[-max_fit_steps:], lvfit.FLOOR) for c in contexts]
    by_len: dict[int, list[int]] = {}
    for i, f in enumerate(fit):
        by_len.setdefault(len(f), []).append(i)
    for n, idx in by_len.items():
        if n < 5:
            out[idx] = [persistence(contexts[i], horizon) for i in idx]
            continue
        fc = _fit_group(np.stack([fit[i] for i in idx]), horizon, dt, n_random, seed)
        for j, i in enumerate(idx):
            out[i] = _accept(fc[j], np.asarray(contexts[i], float), fit[i], horizon)
    return out


def _fit_group(ctx: np.ndarray, horizon: int, dt: float, n_random: int, seed: int) -> list[np.ndarray | None]:
    """Fit windows of equal length (G, n, 2) from 1 + ``n_random`` starts each; forecast from the best
    fit, or None where no fit explains the context (log-space RMSE over 0.3)."""
    G, n, _ = ctx.shape
    rng = np.random.default_rng(seed)
    draws = np.log([[rng.uniform(*RANGES[k]) for k in "abdgK"] for _ in range(n_random)]).reshape(n_random, 5)
    starts = [np.log([[*_gradient_matching(c, dt), *c[0]] for c in ctx])]
    starts += [np.concatenate([np.broadcast_to(dr, (G, 5)), np.log(ctx[:, 0])], 1) for dr in draws]
    theta0 = np.concatenate(starts)  # (starts * G, 7), start-major
    theta, cost = lvfit.levenberg_marquardt(theta0, np.tile(np.log(ctx), (len(starts), 1, 1)), dt)
    cost = cost.reshape(len(starts), G)
    best = theta.reshape(len(starts), G, 7)[cost.argmin(0), np.arange(G)]
    with np.errstate(all="ignore"):
        fc = np.exp(lvfit.simulate_log(best, n + horizon, dt)[:, n:])
    ok = np.sqrt(2 * cost.min(0) / ctx[0].size) <= 0.3  # RMSE in log space
    return [f if good else None for f, good in zip(fc, ok)]


def _accept(fc: np.ndarray | None, context: np.ndarray, fit: np.ndarray, horizon: int) -> np.ndarray:
    """The fitted forecast, or persistence when there is none or it jumps away from the last value."""
    if fc is None or not np.all(np.isfinite(fc)):
        return persistence(context, horizon)
    max_jump = 3 * np.abs(np.diff(fit, axis=0)).max(0) + 1e-3
    if np.any(np.abs(fc[0] - context[-1]) > max_jump):
        return persistence(context, horizon)
    return np.clip(fc, 0, None)


def run_baseline(name: str, contexts: list[np.ndarray], horizon: int, dt: float = 1.0, workers: int = 1) -> np.ndarray:
    """(N, H, V) forecasts of one baseline for all contexts. ``lv_ode`` fits every window together, in one process
    by default (the fit is vectorised over windows); ``workers`` > 1 splits them over that many processes
    (``spawn``: a script that calls this must guard its body with ``if __name__ == "__main__":``)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r} (choose from {', '.join(BASELINES)})")
    contexts = [np.asarray(c, float) for c in contexts]
    if name == "lv_ode":
        return _in_processes(contexts, horizon, dt, workers) if workers > 1 else lv_ode_many(contexts, horizon, dt)
    fn = {"persistence": persistence, "linear": linear}[name]
    return np.stack([fn(c, horizon, dt) for c in contexts])


def _in_processes(contexts: list[np.ndarray], horizon: int, dt: float, workers: int) -> np.ndarray:
    workers = min(workers, len(contexts))
    chunks = np.array_split(np.arange(len(contexts)), workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(lv_ode_many, [[contexts[i] for i in c] for c in chunks], [horizon] * workers, [dt] * workers)
        return np.concatenate(list(parts))


def baseline_key(name: str, contexts: list[np.ndarray], horizon: int, dt: float) -> str:
    """What a baseline's forecasts depend on: its name and version, the horizon, the time step and the contexts."""
    h = hashlib.sha256(json.dumps([name, VERSION, horizon, dt]).encode())
    for c in contexts:
        a = np.ascontiguousarray(c, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stored_baseline(name: str, contexts: list[np.ndarray], horizon: int, dt: float, store: Path | None,
                    workers: int = 1) -> np.ndarray:
    """:func:`run_baseline`, kept in ``store`` (a directory) by :func:`baseline_key`: baselines depend on the data
    and the windows only, so every stage of a study computes each once."""
    if store is None:
        return run_baseline(name, contexts, horizon, dt, workers)
    path = Path(store) / f"{name}-{baseline_key(name, contexts, horizon, dt)[:24]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    out = run_baseline(name, contexts, horizon, dt, workers)
    write_atomic(path, lambda tmp: tmp.write_bytes(_npy_bytes(out)))
    return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
