"""Library functions behind ``flopcast eval``, ``forecast`` and ``baselines``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .codec import LLMTimeCodec
from .config import CodecConfig, EvalConfig, ForecastConfig, SplitConfig
from .data import Dataset, load, split
from .errors import DataError


def codec_for(ds: Dataset | None, config: CodecConfig, adapter: str | Path | None = None,
              split_cfg: SplitConfig | None = None) -> LLMTimeCodec:
    """The codec an adapter was trained with (its metadata), else one fitted on the train split."""
    if adapter is not None:
        from .models import read_adapter_meta

        meta = read_adapter_meta(adapter).get("codec")
        if meta:
            return LLMTimeCodec.from_state(meta)
    if config.scale_mode != "global" or ds is None:
        return LLMTimeCodec(config, 1.0 if config.scale_mode == "none" else None)
    sp = split(ds.n_series, split_cfg or SplitConfig())
    return LLMTimeCodec.fit(config, ds.subset(sp.train).series)


def split_subset(ds: Dataset, name: str, split_cfg: SplitConfig | None = None) -> Dataset:
    sp = split(ds.n_series, split_cfg or SplitConfig())
    idx = sp.indices(name)
    if len(idx) == 0:
        raise DataError(f"split {name!r} is empty for {ds.n_series} series")
    return ds.subset(idx)


def dataset_or_simulated(path: str | Path | None, n: int = 100, seed: int = 0) -> Dataset:
    if path is not None:
        return load(path)
    from .config import SimConfig
    from .simulate import simulate

    return simulate(SimConfig(n_systems=n, seed=seed))


def run_eval(model: str, data: str | Path | None, cfg: EvalConfig, out_dir: str | Path, adapter: str | Path | None = None,
             codec_cfg: CodecConfig | None = None, ledger_path: str | Path | None = None, budget: float | None = None,
             name: str = "eval", baselines_only: bool = False) -> dict:
    """Evaluate a model (optionally with an adapter) or only the baselines on a split."""
    from .evaluate import evaluate
    from .ledger import Ledger
    from .models import load_for_inference, load_tokenizer

    ds = dataset_or_simulated(data)
    codec = codec_for(ds, codec_cfg or CodecConfig(), adapter)
    subset = split_subset(ds, cfg.split)
    lm = load_for_inference(model, adapter) if not baselines_only else None
    tokenizer = lm.tokenizer if lm else load_tokenizer(model)
    ledger = Ledger(ledger_path, budget) if ledger_path else None
    return evaluate(lm.model if lm else None, tokenizer, codec, subset, cfg, out_dir=out_dir, ledger=ledger, name=name,
                    model_name=model if not adapter else f"{model}+{adapter}")



def run_forecast(model: str, input_path: str | Path, steps: int, adapter: str | Path | None = None,
                 samples: int = 1, context_tokens: int | None = None, out: str | Path | None = None,
                 plot: str | Path | None = None, codec_cfg: CodecConfig | None = None, seed: int = 0,
                 ledger_path: str | Path | None = None, budget: float | None = None) -> dict:
    """Forecast ``steps`` steps after every series in a CSV/HDF5 file (whole series as context).

    With ``ledger_path`` the generation's FLOPs are charged to that ledger (reserved before, settled after).
    """
    from .evaluate import forecast_reservation
    from .forecast import charge_batches, forecast
    from .ledger import Ledger
    from .models import load_for_inference

    ds = load(input_path)
    codec = codec_for(None, codec_cfg or CodecConfig(scale_mode="per_series"), adapter)
    lm = load_for_inference(model, adapter)
    contexts = [_fit_context(s, codec, lm.tokenizer, context_tokens) for s in ds.series]
    fcfg = ForecastConfig(horizon=steps, n_samples=samples, seed=seed)
    ledger = Ledger(ledger_path, budget) if ledger_path else None
    longest = max(len(lm.tokenizer(codec.encode(c), add_special_tokens=False).input_ids) for c in contexts) if ledger else 0
    with forecast_reservation(ledger, lm.model, f"forecast/{Path(input_path).name}", "forecast", len(contexts) * samples, longest,
                      EvalConfig(horizon=steps, batch_size=fcfg.batch_size), ds.n_vars, codec, model=model) as charge:
        res = forecast(lm.model, lm.tokenizer, codec, contexts, fcfg, progress=len(contexts) > 16,
                       on_batch=charge_batches(charge, lm.model))  # the charge grows batch by batch
    rows = []
    for i in range(len(contexts)):
        for h in range(steps):
            row = {"series": i, "step": len(ds.series[i]) + h}
            row.update({v: float(res.point[i, h, j]) for j, v in enumerate(ds.variables)})
            for q, arr in res.quantiles.items():
                row.update({f"{v}_q{q:g}": float(arr[i, h, j]) for j, v in enumerate(ds.variables)})
            rows.append(row)
    if out:
        import csv

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if plot:
        from .plots import plot_forecasts
        from .windows import Window

        wins = [Window(i, len(ds.series[i]), c, np.full((steps, ds.n_vars), np.nan), a, [])
                for i, (c, a) in enumerate(zip(contexts, res.alphas))]
        plot_forecasts(wins, {"model": res.point}, plot, variables=ds.variables,
                       quantiles=res.quantiles if res.quantiles else None)
    return {"rows": rows, "parse_failure_rate": res.parse_failure_rate, "texts": res.texts}


def _fit_context(s: np.ndarray, codec: LLMTimeCodec, tokenizer, max_tokens: int | None) -> np.ndarray:
    """The longest suffix of whole steps whose encoding fits in ``max_tokens`` tokens."""
    if not max_tokens:
        return s
    lo, hi = 1, len(s)
    while lo < hi:  # binary search on the number of steps
        mid = (lo + hi + 1) // 2
        ctx = s[-mid:]
        if len(tokenizer(codec.encode(ctx), add_special_tokens=False).input_ids) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return s[-lo:]

