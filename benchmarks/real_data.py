"""flopcast zero-shot on real series shipped inside pip packages, against the classical methods, on the same windows.

The series (none of them a flopcast dependency; ``bash benchmarks/real_data_env.sh`` makes ``.bench-venv`` with
them): sktime's airline (monthly), pmdarima's wineind (monthly), ausbeer and woolyrnq (quarterly) and taylor
(half-hourly, cut to its last 1,008 steps: three weeks), statsmodels' nile (annual) and elnino (monthly). Each is
forecast from ``--windows`` rolling origins on its tail, one every horizon steps (statsforecast's
``cross_validation`` layout). Scores: MASE (the in-sample seasonal-naive error of the history before the
origin as the scale), per dataset the mean over windows, and overall the geometric mean of each method's MASE
relative to seasonal naive (as fev and GIFT-Eval aggregate). statsforecast's SeasonalNaive, AutoETS, AutoARIMA
(its approximate search for seasons of 24 and more) and Theta run on the same windows.

flopcast rows: the embedded model (or ``--model``) zero-shot, greedy, under each codec setting of ``--codecs``
(``per_series``: a scale per context; ``+offset``: LLMTime's offset too), so that the defaults of ``flopcast
forecast`` and ``Forecaster`` are chosen by measurement.

    .bench-venv/bin/python benchmarks/real_data.py [--windows 3] [--codecs per_series,per_series+offset]
        [--samples 10] [--finetune-budget 3e13 --finetune-steps 60]

With ``--finetune-budget``, :meth:`flopcast.Forecaster.fit` trains a LoRA adapter on a corpus of other real series
(:func:`corpus`; none of the evaluated ones) within that many FLOPs, and the adapter forecasts the same windows.
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

LONG_SEASON = 24


@dataclass
class Series:
    name: str
    values: np.ndarray   # (T,)
    season: int
    horizon: int


def load_all() -> list[Series]:
    """The seven series, each with its seasonal period and the horizon it is forecast at."""
    import pmdarima.datasets as pm
    import statsmodels.api as sm
    from sktime.datasets import load_airline

    elnino = sm.datasets.elnino.load_pandas().data.drop(columns="YEAR").to_numpy().ravel()
    taylor = np.asarray(pm.load_taylor(), dtype=float)[-1008:]
    series = [
        Series("airline", np.asarray(load_airline(), dtype=float), 12, 12),
        Series("wineind", np.asarray(pm.load_wineind(), dtype=float), 12, 12),
        Series("ausbeer", np.asarray(pm.load_ausbeer(), dtype=float), 4, 8),
        Series("woolyrnq", np.asarray(pm.load_woolyrnq(), dtype=float), 4, 8),
        Series("taylor", taylor, 48, 48),
        Series("nile", sm.datasets.nile.load_pandas().data["volume"].to_numpy(dtype=float), 1, 10),
        Series("elnino", np.asarray(elnino, dtype=float), 12, 12),
    ]
    for s in series:  # pmdarima's ausbeer ends in a NaN: trailing missing values are not data
        s.values = s.values[: np.flatnonzero(np.isfinite(s.values)).max() + 1]
        assert np.isfinite(s.values).all(), s.name
    return series


CORPUS_SEASONS = {"austres": 4, "sunspots": 12, "co2": 52, "shampoo": 12, "macro": 4}  # the rest: none


def corpus(difference: bool = False) -> pd.DataFrame:
    """Real series none of which is evaluated (airline's twin, pmdarima's airpassengers, left out): pmdarima's austres,
    heartrate, lynx and the last 600 monthly sunspots; statsmodels' weekly co2 (its gaps filled linearly, the last
    600 steps) and the twelve quarterly macrodata series; sktime's shampoo sales. Long layout, ``unique_id, ds, y``.
    ``difference``: each series with a season (:data:`CORPUS_SEASONS`) as its seasonal differences."""
    import pmdarima.datasets as pm
    import statsmodels.api as sm
    from sktime.datasets import load_shampoo_sales

    co2 = sm.datasets.co2.load_pandas().data["co2"].interpolate().to_numpy()[-600:]
    macro = sm.datasets.macrodata.load_pandas().data.drop(columns=["year", "quarter"])
    parts = {"austres": pm.load_austres(), "heartrate": pm.load_heartrate(), "lynx": pm.load_lynx(),
             "sunspots": np.asarray(pm.load_sunspots())[-600:], "co2": co2,
             "shampoo": np.asarray(load_shampoo_sales()), **{f"macro_{c}": macro[c].to_numpy() for c in macro}}
    if difference:
        from flopcast.data.differences import differenced

        parts = {k: differenced(np.asarray(v, dtype=float)[:, None], CORPUS_SEASONS.get(k.split("_")[0], 0))[:, 0]
                 for k, v in parts.items()}
    frames = [pd.DataFrame({"unique_id": k, "ds": np.arange(len(v)), "y": np.asarray(v, dtype=float)})
              for k, v in parts.items()]
    return pd.concat(frames, ignore_index=True)


def origins(s: Series, windows: int) -> list[int]:
    """The cut points: the last ``windows`` horizons of the series, one every horizon steps."""
    T = len(s.values)
    return [T - (windows - k) * s.horizon for k in range(windows)]


def mase(pred: np.ndarray, truth: np.ndarray, history: np.ndarray, season: int) -> float:
    """Mean absolute error over the in-sample mean absolute seasonal difference of ``history``."""
    m = season if len(history) > season else 1
    scale = np.mean(np.abs(history[m:] - history[:-m]))
    return float(np.mean(np.abs(pred - truth)) / scale) if scale > 0 else float("nan")


def seasonal_naive(history: np.ndarray, season: int, horizon: int) -> np.ndarray:
    m = season if len(history) >= season else 1
    return np.array([history[len(history) - m + (h % m)] for h in range(horizon)])


def classical(s: Series, cut: int) -> dict[str, np.ndarray]:
    """statsforecast's methods fitted on the history before ``cut``."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, SeasonalNaive, Theta

    hist = s.values[:cut]
    df = pd.DataFrame({"unique_id": s.name, "ds": np.arange(len(hist)), "y": hist})
    # AutoARIMA's default search takes ~4 minutes a window at season 48: long seasons get its approximation
    arima = dict(approximation=True, max_P=1, max_Q=1) if s.season >= LONG_SEASON else {}
    models = [SeasonalNaive(season_length=s.season), AutoETS(season_length=s.season),
              AutoARIMA(season_length=s.season, **arima), Theta(season_length=s.season)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = StatsForecast(models=models, freq=1, n_jobs=1).forecast(df=df, h=s.horizon)
    names = {"SeasonalNaive": "seasonal_naive", "AutoETS": "auto_ets", "AutoARIMA": "auto_arima", "Theta": "theta"}
    return {names[c]: out[c].to_numpy() for c in names if c in out}


def flopcast_rows(fc, data: list[Series], windows: int, codecs: list[str], context_tokens: int, samples: int = 1,
                  label: str = "flopcast", difference: bool = False):
    """Forecasts of every window under each codec setting: greedy, or the median of ``samples``; with
    ``difference``, of each seasonal series' seasonal differences, integrated back."""
    from flopcast.config import CodecConfig
    from flopcast.encoding.codec import LLMTimeCodec

    out: dict[str, dict[tuple[str, int], np.ndarray]] = {}
    for name in codecs:
        if fc.adapter is None:
            fc.codec = LLMTimeCodec(CodecConfig(scale_mode="per_series", offset=name.endswith("+offset")))
        preds: dict[tuple[str, int], np.ndarray] = {}
        t0 = time.perf_counter()
        for s in data:
            cuts = origins(s, windows)
            res = fc.forecast([s.values[:c, None] for c in cuts], horizon=s.horizon, context_tokens=context_tokens,
                              samples=samples, seed=0, difference=s.season if difference and s.season > 1 else 0)
            preds.update({(s.name, c): res.point[k, :, 0] for k, c in enumerate(cuts)})
        what = f"{label} {name}" + (", seasonal differences" if difference else "") + (
            f", median of {samples}" if samples > 1 else "")
        print(f"  {what}: {time.perf_counter() - t0:.0f} s", flush=True)
        out[what] = preds
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--codecs", default="per_series,per_series+offset")
    ap.add_argument("--context-tokens", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=0, help="> 1: also the median of this many samples")
    ap.add_argument("--finetune-budget", type=float, default=0.0, help="> 0: also fine-tune on the corpus within "
                    "this many FLOPs (Forecaster.fit) and forecast with the adapter")
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--finetune-rank", type=int, default=8)
    ap.add_argument("--finetune-head", default="full", choices=["full", "numeric"])
    ap.add_argument("--finetune-seed", type=int, default=0)
    ap.add_argument("--out", default="runs/real_data")
    ap.add_argument("--skip-zero-shot", action="store_true", help="only the classical methods and the fine-tuned model")
    ap.add_argument("--difference", action="store_true", help="forecast (and fine-tune on) each seasonal series' "
                    "seasonal differences (Forecaster.forecast(difference=season))")
    a = ap.parse_args()
    from flopcast.api.forecaster import Forecaster

    data = load_all()
    scores: dict[str, dict[str, list[float]]] = {}
    for s in data:
        t0 = time.perf_counter()
        for c in origins(s, a.windows):
            truth, hist = s.values[c:c + s.horizon], s.values[:c]
            preds = classical(s, c)  # the windows are statsforecast's: its seasonal naive is this one
            np.testing.assert_allclose(preds["seasonal_naive"], seasonal_naive(hist, s.season, s.horizon))
            for m, p in preds.items():
                scores.setdefault(m, {}).setdefault(s.name, []).append(mase(p, truth, hist, s.season))
        print(f"  classical {s.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    warnings.simplefilter("ignore")
    fc = Forecaster.from_pretrained(a.model)
    diff = a.difference
    rows = {} if a.skip_zero_shot else flopcast_rows(fc, data, a.windows, a.codecs.split(","), a.context_tokens,
                                                     difference=diff)
    if a.samples > 1 and not a.skip_zero_shot:
        rows |= flopcast_rows(fc, data, a.windows, ["per_series+offset"], a.context_tokens, a.samples, difference=diff)
    if a.finetune_budget > 0:
        t0 = time.perf_counter()
        tuned = fc.fit(corpus(diff), f"{a.out}/fit", budget=a.finetune_budget, steps=a.finetune_steps, horizon=8,
                       seq_len=256, batch_size=4, lr=1e-3, rank=a.finetune_rank, head=a.finetune_head,
                       seed=a.finetune_seed, progress=False)
        print(f"  fine-tuned on the corpus in {time.perf_counter() - t0:.0f} s, see {a.out}/fit/report.md", flush=True)
        rows |= flopcast_rows(tuned, data, a.windows, ["per_series+offset"], a.context_tokens, label="fine-tuned",
                              difference=diff)
        if a.samples > 1:
            rows |= flopcast_rows(tuned, data, a.windows, ["per_series+offset"], a.context_tokens, a.samples,
                                  label="fine-tuned", difference=diff)
    for m, preds in rows.items():
        for (name, c), p in preds.items():
            s = next(x for x in data if x.name == name)
            scores.setdefault(m, {}).setdefault(name, []).append(
                mase(p, s.values[c:c + s.horizon], s.values[:c], s.season))
    report(scores, [s.name for s in data])


def report(scores: dict[str, dict[str, list[float]]], names: list[str]) -> None:
    """MASE per dataset (mean over windows) and the geometric mean relative to seasonal naive."""
    base = {n: np.mean(scores["seasonal_naive"][n]) for n in names}
    print("| method | " + " | ".join(names) + " | geo. mean rel. to seasonal naive |")
    print("| --- |" + " --- |" * (len(names) + 1))
    for m, per in scores.items():
        vals = [float(np.mean(per[n])) for n in names]
        rel = np.exp(np.mean([np.log(v / base[n]) for v, n in zip(vals, names)]))
        print(f"| {m} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {rel:.3f} |")


if __name__ == "__main__":
    main()
