"""The classical methods forecasting practitioners compare against, on flopcast's windows. No torch.

* ``seasonal_naive`` -- the value one season earlier (numpy; the same numbers as statsforecast's ``SeasonalNaive``);
* ``auto_ets``, ``auto_arima``, ``theta`` -- Nixtla's statsforecast (``AutoETS``, ``AutoARIMA``, ``Theta``), an
  optional dependency (``pip install flopcast[classical]``), imported only when one is asked for.

Each is fitted per window and variable on the whole history before the window's cut (as statsforecast's
``cross_validation`` does), not only on the steps that fit in the model's context. A window a method cannot
forecast -- a history shorter than its ``min_steps`` (two seasons for the seasonal models), or a fit that fails
-- gets NaN there and is counted in :class:`Unavailable`, never dropped silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..config import CLASSICAL_BASELINES as CLASSICAL
from ..errors import FlopcastError

STATSFORECAST = {"auto_ets": "AutoETS", "auto_arima": "AutoARIMA", "theta": "Theta"}


@dataclass
class Unavailable:
    """Windows a method could not forecast, and why (``reason`` -> count)."""

    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def __str__(self) -> str:
        return "; ".join(f"{n} window(s): {r}" for r, n in self.reasons.items())


def min_steps(name: str, season: int) -> int:
    """The shortest history ``name`` forecasts from: a season for seasonal naive, two seasons (at least 3 steps)
    for the fitted models."""
    return season if name == "seasonal_naive" else max(3, 2 * season)


def seasonal_naive(history: np.ndarray, season: int, horizon: int) -> np.ndarray:
    """(H, V): step ``T + h`` repeats step ``T + h - m * k`` of the last season."""
    m = min(season, len(history))
    last = history[len(history) - m:]
    return np.stack([last[h % m] for h in range(horizon)])


def _models(name: str, season: int) -> list:
    try:
        import statsforecast.models as sf
    except ImportError:
        raise FlopcastError(f"the {name} baseline needs statsforecast: pip install 'flopcast[classical]'") from None
    cls = getattr(sf, STATSFORECAST[name])
    return [cls(season_length=season)]


def _fitted(name: str, history: np.ndarray, season: int, horizon: int) -> np.ndarray:
    """(H, V) from one statsforecast model per variable."""
    out = []
    for j in range(history.shape[1]):
        model = _models(name, season)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.forecast(y=np.ascontiguousarray(history[:, j], dtype=np.float64), h=horizon)
        out.append(np.asarray(res["mean"], dtype=np.float64))
    return np.stack(out, axis=1)


def run_classical(name: str, histories: list[np.ndarray], horizon: int, season: int) -> tuple[np.ndarray, Unavailable]:
    """(N, H, V) forecasts of ``name`` from each history, NaN where unavailable, and why."""
    if name not in CLASSICAL:
        raise FlopcastError(f"unknown classical method {name!r} ({', '.join(CLASSICAL)})")
    if name != "seasonal_naive":
        _models(name, season)  # a missing statsforecast stops here, before any window
    V = histories[0].shape[1] if histories else 1
    out, missing = np.full((len(histories), horizon, V), np.nan), Unavailable()
    need = min_steps(name, season)
    for i, h in enumerate(histories):
        if len(h) < need:
            missing.add(f"history shorter than {need} steps (season {season})")
            continue
        try:
            fc = seasonal_naive(h, season, horizon) if name == "seasonal_naive" else _fitted(name, h, season, horizon)
        except Exception as e:  # noqa: BLE001 -- a fit that fails is reported per window, with its reason
            missing.add(f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else 'fit failed'}")
            continue
        if np.isfinite(fc).all():
            out[i] = fc
        else:
            missing.add("the fit gave non-finite values")
    return out, missing
