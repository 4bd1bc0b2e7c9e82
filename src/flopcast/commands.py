"""The library functions behind the CLI commands, one per command; each returns plain data.

Every check that can run before work starts runs first: bad numbers, unreadable data, output paths
that cannot be written. No FLOP is charged before they pass.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .codec import LLMTimeCodec
from .config import CodecConfig, DataSpec, EvalConfig, ForecastConfig, SimConfig, SplitConfig, check_ints
from .data import Dataset, load, save_h5, split
from .errors import DataError, FlopcastError
from .ledger import Ledger
from .models import load_tokenizer, resolve_arch
from .results import EvalResult
from .simulate import simulate
from .windows import Window


def ensure_writable(path: str | Path | None, directory: bool = False) -> None:
    """Fail now (one line) if ``path`` (a file, or a directory to create) cannot be written."""
    if path is None:
        return
    p = Path(path)
    target = p if directory else p.parent
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    can_create = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    if not can_create or (p.exists() and not os.access(p, os.W_OK)):
        raise FlopcastError(f"{p}: cannot write here (no permission, or {existing} is not a directory)")
    if not directory and p.is_dir():
        raise FlopcastError(f"{p}: is a directory, expected a file name")


# ----------------------------------------------------------------------------- data

def simulate_to_file(path: str | Path, n: int = 1000, steps: int = 100, t_end: float = 200.0, seed: int = 0) -> Path:
    cfg = SimConfig(n_systems=n, n_steps=steps, t_end=t_end, seed=seed)
    ensure_writable(path)
    return save_h5(simulate(cfg), path)


def inspect_file(path: str | Path, plot: str | Path | None = None, n_plot: int = 4, id_column: str | None = None,
                 time_column: str | None = None) -> dict:
    check_ints("n_plot", [n_plot])
    ensure_writable(plot)
    ds = load(DataSpec(str(path), id_column, time_column))
    info = ds.summary()
    if plot is not None:
        from .plots import plot_series

        info["plot"] = str(plot_series(ds, plot, n=n_plot))
    return info


def split_file(path: str | Path, out: str | Path, train: float, val: float, test: float, seed: int,
               id_column: str | None = None, time_column: str | None = None) -> dict[str, int]:
    cfg = SplitConfig(train, val, test, seed)
    ensure_writable(out)
    ds = load(DataSpec(str(path), id_column, time_column))
    sp = split(ds.n_series, cfg)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(sp.to_json())
    return {"train": len(sp.train), "val": len(sp.val), "test": len(sp.test)}


def dataset_or_simulated(data: DataSpec | str | Path | None, n: int = 100, seed: int = 0) -> Dataset:
    if data is not None:
        return load(data)

    return simulate(SimConfig(n_systems=n, seed=seed))


def encode_preview(data: DataSpec | None, series: int, steps: int, model: str, codec_cfg: CodecConfig) -> dict:
    """Text, tokens and ids for the first ``steps`` timesteps of one series."""
    check_ints("steps", [steps])
    ds = dataset_or_simulated(data, n=50)
    if not 0 <= series < ds.n_series:
        raise DataError(f"series index {series} out of range (dataset has {ds.n_series})")
    codec = LLMTimeCodec.fit(codec_cfg, ds.subset(split(ds.n_series, SplitConfig()).train).series)
    s = ds.series[series]
    alpha = codec.series_alpha(s)
    text = codec.encode(s[:steps], alpha)
    tok = load_tokenizer(model)
    ids = tok(text, add_special_tokens=False).input_ids
    return {
        "alpha": alpha, "scale_mode": codec_cfg.scale_mode, "values": np.round(s[:steps], 4).tolist(), "text": text,
        "tokens": [tok.decode([i]) for i in ids], "ids": ids, "n_tokens": len(ids),
        "series_tokens": len(tok(codec.encode(s, alpha), add_special_tokens=False).input_ids),
    }


# ----------------------------------------------------------------------------- FLOPs and budget

def flops_breakdown(model: str, seq: int, batch: int, rank: int, targets: tuple[str, ...], mode: str,
                    new_tokens: int = 50, gqa: str = "full"):
    from . import flops

    check_ints("seq", [seq])
    check_ints("batch", [batch])
    check_ints("rank", [rank], minimum=0)
    check_ints("new_tokens", [new_tokens])
    modes = ("train", "forward", "prefill", "generate")
    if mode not in modes:
        raise DataError(f"unknown mode {mode!r} ({', '.join(modes)})")
    arch = resolve_arch(model)
    lora = flops.LoraShape(rank, targets) if rank > 0 else None
    if mode == "train":
        return flops.train_step(arch, batch, seq, lora, gqa), arch
    if mode == "forward":
        return flops.forward(arch, batch, seq, lora=lora, gqa=gqa), arch
    if mode == "prefill":
        return flops.prefill(arch, batch, seq, lora, gqa), arch
    return flops.generate(arch, batch, seq, new_tokens, lora, gqa), arch


def plan_table(model: str, budget: float, seqs, batches, ranks, eval_windows: int = 0) -> list[dict]:
    from .affordable import affordable

    return [r.as_dict() for r in affordable(resolve_arch(model), budget, seqs, batches, ranks,
                                            eval_windows=eval_windows)]


def open_ledger(path: str | Path):
    if not Path(path).is_file():
        raise DataError(f"{path}: no ledger here (create one with `flopcast budget init {path} --budget 1e17`)")
    return Ledger(path)


# ----------------------------------------------------------------------------- evaluation and forecasting

def codec_for(ds: Dataset | None, config: CodecConfig, adapter: str | Path | None = None,
              split_cfg: SplitConfig | None = None) -> LLMTimeCodec:
    """The codec an adapter was trained with (its metadata), else one fitted on the train split."""
    if adapter is not None:
        from .adapters import read_adapter_meta

        meta = read_adapter_meta(adapter).get("codec")
        if meta:
            return LLMTimeCodec.from_state(meta)
    if config.scale_mode != "global" or ds is None:
        return LLMTimeCodec(config, 1.0 if config.scale_mode == "none" else None)
    sp = split(ds.n_series, split_cfg or SplitConfig())
    return LLMTimeCodec.fit(config, ds.subset(sp.train).series)


def split_subset(ds: Dataset, name: str, split_cfg: SplitConfig | None = None) -> Dataset:
    idx = split(ds.n_series, split_cfg or SplitConfig()).indices(name)
    if len(idx) == 0:
        raise DataError(f"split {name!r} is empty for {ds.n_series} series")
    return ds.subset(idx)


def run_eval(model: str, data: DataSpec | None, cfg: EvalConfig, out_dir: str | Path | None,
             adapter: str | Path | None = None, codec_cfg: CodecConfig | None = None,
             ledger_path: str | Path | None = None, budget: float | None = None, name: str = "eval",
             baselines_only: bool = False) -> EvalResult:
    """Evaluate a model (optionally with an adapter) or only the baselines on a split."""
    from .evaluation import evaluate
    from .models import load_for_inference, load_tokenizer

    ensure_writable(out_dir, directory=True)
    ledger = Ledger(ledger_path, budget) if ledger_path else None
    ds = dataset_or_simulated(data)
    codec = codec_for(ds, codec_cfg or CodecConfig(), adapter)
    subset = split_subset(ds, cfg.split)
    lm = load_for_inference(model, adapter) if not baselines_only else None
    tokenizer = lm.tokenizer if lm else load_tokenizer(model)
    return evaluate(lm.model if lm else None, tokenizer, codec, subset, cfg, out_dir=out_dir, ledger=ledger, name=name,
                    model_name=model if not adapter else f"{model}+{adapter}")


def run_forecast(model: str, data: DataSpec, steps: int, adapter: str | Path | None = None, samples: int = 1,
                 context_tokens: int | None = None, out: str | Path | None = None, plot: str | Path | None = None,
                 codec_cfg: CodecConfig | None = None, seed: int = 0, ledger_path: str | Path | None = None,
                 budget: float | None = None) -> dict:
    """Forecast ``steps`` steps after every series in a CSV/HDF5 file (whole series as context), through
    :class:`flopcast.Forecaster`. With ``ledger_path`` the generation's FLOPs are charged to that ledger."""
    from .api import Forecaster

    ForecastConfig(horizon=steps, n_samples=samples, seed=seed)  # bad numbers stop here
    if context_tokens is not None:
        check_ints("context_tokens", [context_tokens])
    for p in (out, plot):
        ensure_writable(p)
    ledger = Ledger(ledger_path, budget) if ledger_path else None
    ds = load(data)
    fc = Forecaster.from_pretrained(model, adapter, ledger=ledger)
    if codec_cfg is not None and adapter is None:
        fc.codec = codec_for(None, codec_cfg)
    res = fc.forecast(ds.series, steps, samples, context_tokens=context_tokens, seed=seed,
                      name=f"forecast/{Path(data.path).name}", progress=len(ds.series) > 16)
    rows = _forecast_rows(ds, res, steps)
    if out:
        _write_csv(rows, out)
    if plot:
        _plot_forecast(ds, res.contexts, res, steps, plot)
    return {"rows": rows, "parse_failure_rate": res.parse_failure_rate, "capped_rate": res.capped_rate,
            "int_digits": res.int_digits, "texts": res.texts}


def _forecast_rows(ds: Dataset, res, steps: int) -> list[dict]:
    rows = []
    for i, s in enumerate(ds.series):
        for h in range(steps):
            row = {"series": ds.ids[i] if ds.ids else i, "step": len(s) + h}
            row.update({v: float(res.point[i, h, j]) for j, v in enumerate(ds.variables)})
            for q, arr in res.quantiles.items():
                row.update({f"{v}_q{q:g}": float(arr[i, h, j]) for j, v in enumerate(ds.variables)})
            rows.append(row)
    return rows


def _write_csv(rows: list[dict], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plot_forecast(ds: Dataset, contexts, res, steps: int, path: str | Path) -> None:
    from .plots import plot_forecasts

    wins = [Window(i, len(ds.series[i]), c, np.full((steps, ds.n_vars), np.nan), a, [])
            for i, (c, a) in enumerate(zip(contexts, res.alphas))]
    plot_forecasts(wins, {"model": res.point}, path, variables=ds.variables, quantiles=res.quantiles or None)
