"""Backtest scores beside MSE and MAE: MASE for every method, the weighted quantile loss and band coverage of sampled
forecasts, and the classical methods' forecasts on the evaluation's windows. No torch.

MASE divides a window's absolute errors by the in-sample error of seasonal naive on the whole history before the
window's cut (the history statsforecast's ``cross_validation`` fits on), variable by variable; the seasonal period
is ``EvalConfig.season``, else the one of the timestamps' frequency (:func:`flopcast.data.calendar.season_of`),
else 1. Overall, each method also gets the geometric mean over series of its MASE relative to seasonal naive's on
the same windows (computed whether or not seasonal naive is one of the listed baselines).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..config import EvalConfig
from ..data.calendar import infer_frequency, season_of
from ..data.dataset import Dataset
from ..encoding.windows import Window
from ..results import write_atomic
from .classical import run_classical, seasonal_naive
from .metrics import mase_per_window, mase_scale, mase_summary, quantile_scores


def season_for(ds: Dataset, cfg: EvalConfig) -> int:
    """The seasonal period of MASE and the seasonal baselines (see the module doc)."""
    if cfg.season is not None:
        return cfg.season
    return season_of(infer_frequency(ds.stamps[0])) if ds.stamps else 1


def histories(series: list[np.ndarray], wins: list[Window]) -> list[np.ndarray]:
    """Each window's whole history: its series up to the cut."""
    return [series[w.series][: w.cut] for w in wins]


def classical_forecasts(name: str, series: list[np.ndarray], wins: list[Window], horizon: int, season: int,
                        store: Path | None) -> tuple[np.ndarray, str | None]:
    """(N, H, V) forecasts of a classical method on the windows' histories (NaN where unavailable) and a line saying
    which windows it could not forecast; kept in ``store`` by what they depend on, as the other baselines are."""
    hist = histories(series, wins)
    if store is None:
        pred, missing = run_classical(name, hist, horizon, season)
        return pred, str(missing) or None
    h = hashlib.sha256(json.dumps([name, horizon, season]).encode())
    for a in hist:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    path = Path(store) / f"{name}-{h.hexdigest()[:24]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as kept:
            return kept["pred"], str(kept["note"]) or None
    pred, missing = run_classical(name, hist, horizon, season)
    write_atomic(path, lambda tmp: tmp.write_bytes(_npz(pred, str(missing))))
    return pred, str(missing) or None


def _npz(pred: np.ndarray, note: str) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, pred=pred, note=np.array(note))
    return buf.getvalue()


def backtest_scores(preds: dict[str, np.ndarray], wins: list[Window], series: list[np.ndarray],
                    truth: np.ndarray, season: int, cfg: EvalConfig) -> dict[str, dict]:
    """Per method: MASE overall, per series and relative to seasonal naive (see the module doc)."""
    hist = histories(series, wins)
    scales = np.stack([mase_scale(h, season) for h in hist])
    reference = preds.get("seasonal_naive")
    if reference is None:
        reference = np.stack([seasonal_naive(h, season, cfg.horizon) for h in hist])
    ref_mase = mase_per_window(reference, truth, scales)
    ids = np.array([w.series for w in wins])
    return {m: mase_summary(mase_per_window(p, truth, scales), ids, ref_mase, cfg.n_boot, cfg.seed)
            for m, p in preds.items()}


def sampled_scores(quantiles: dict[float, np.ndarray] | None, truth: np.ndarray) -> dict:
    """The weighted quantile loss and band coverage of sampled forecasts (nothing for greedy ones)."""
    return quantile_scores(quantiles, truth) if quantiles else {}
