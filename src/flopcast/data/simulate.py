"""Damped Lotka-Volterra simulator (prey with logistic growth). Needs scipy, no torch.

    dx/dt = a x (1 - x / K) - b x y        (prey)
    dy/dt = d x y - g y                    (predator)

The logistic term damps the oscillation towards the equilibrium
``x* = g / d``, ``y* = a (1 - x*/K) / b``. Parameter ranges are chosen so series resemble the
reference dataset (100 steps on t in [0, 200], start values in [0.8, 1.2], values ~0-15).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from ..config import SimConfig
from .dataset import Dataset

# (low, high) uniform ranges
RANGES = {
    "a": (0.6, 1.6),    # prey growth rate
    "b": (1.2, 3.0),    # predation rate
    "d": (0.2, 0.5),    # predator growth per prey eaten
    "g": (0.4, 1.0),    # predator death rate
    "K": (80.0, 500.0),  # prey carrying capacity (smaller -> stronger damping)
    "x0": (0.8, 1.2),
    "y0": (0.8, 1.2),
}


def lv_rhs(z: np.ndarray, a: float, b: float, d: float, g: float, K: float) -> list[float]:
    """The damped Lotka-Volterra equations above: (dx/dt, dy/dt) at state ``z = (x, y)``."""
    x, y = z
    return [a * x * (1 - x / K) - b * x * y, d * x * y - g * y]


def sample_params(rng: np.random.Generator) -> dict[str, float]:
    return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in RANGES.items()}


def simulate_one(params: dict[str, float], t: np.ndarray) -> np.ndarray:
    """Integrate one system; returns (T, 2) [prey, predator], clipped at 0."""
    p = params
    sol = solve_ivp(lambda _t, z, *args: lv_rhs(z, *args), (float(t[0]), float(t[-1])), [p["x0"], p["y0"]], t_eval=t,
                    args=(p["a"], p["b"], p["d"], p["g"], p["K"]), method="LSODA", rtol=1e-7, atol=1e-9)
    if not sol.success or sol.y.shape[1] != len(t):
        raise RuntimeError(sol.message)
    return np.clip(sol.y.T, 0.0, None)


def simulate(config: SimConfig | None = None, max_value: float = 15.0) -> Dataset:
    """``n_systems`` seeded systems; draws whose series exceed ``max_value`` are redrawn."""
    c = config or SimConfig()
    rng = np.random.default_rng(c.seed)
    t = np.linspace(0.0, c.t_end, c.n_steps)
    out: list[np.ndarray] = []
    while len(out) < c.n_systems:
        try:
            s = simulate_one(sample_params(rng), t)
        except RuntimeError:
            continue
        if s.max() <= max_value and np.isfinite(s).all():
            out.append(s)
    return Dataset(out, t, ("prey", "predator"), source=f"simulate(seed={c.seed})")
