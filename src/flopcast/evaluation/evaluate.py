"""Evaluate a model (and baselines) on a split under the ``seed`` or ``aligned`` protocol.

For every context length ``S``: build windows (:mod:`flopcast.encoding.windows`), forecast them in batches
(charging the FLOPs to the ledger when one is given, batch by batch), score model and baselines with the same
metrics, and write ``metrics.json``, ``windows.csv`` and plots to the results directory. Each finished context's
forecasts are kept in ``contexts/`` there (keyed by settings, windows and adapter weights), so an interrupted
evaluation, run again, neither redoes nor re-charges them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..budget.costs import charge_batches, charged, generation_bound, model_shape
from ..budget.ledger import RunLedger
from ..budget.lock import DirLock
from ..budget.memory import check_fits, decode_bytes
from ..budget.rows import Charge
from ..config import CLASSICAL_BASELINES, EvalConfig, ForecastConfig, ModelSpec, result_settings, to_dict
from ..data.dataset import Dataset
from ..encoding.codec import LLMTimeCodec
from ..encoding.windows import Window, build_windows, window_grammar
from ..errors import FlopcastError
from ..forecasting.forecast import ForecastResult, Prompts, decode_widths, forecast_prompts
from ..model.load import free_memory, load_model, released
from ..model.lora import load_adapter
from ..results import ContextScore, EvalResult, Score, read_json, write_atomic
from .backtest import backtest_scores, classical_forecasts, sampled_scores, season_for
from .baselines import stored_baseline
from .metrics import per_window, score
from .plots import plot_error_vs_horizon, plot_forecasts


@dataclass(frozen=True)
class EvalRun:
    """Where an evaluation reports, and under which names.

    Attributes:
        name: its name in the ledger (``name/S=128``) and in the results.
        model_name: the model's name in the results.
        out_dir: the results directory (None: nothing written, no finished contexts kept).
        ledger: the ledger its FLOPs are charged to (None: not charged).
        baseline_store: where baseline forecasts are kept and reused (default ``out_dir/baselines``).
        fingerprint: of the settings behind it (see :mod:`flopcast.study.fingerprint`), stored with the results.
        progress: show a progress bar per context length.
    """

    name: str = "eval"
    model_name: str = ""
    out_dir: Path | None = None
    ledger: RunLedger | None = None
    baseline_store: Path | None = None
    fingerprint: str | None = None
    progress: bool = True

    @property
    def baselines(self) -> Path | None:
        return self.baseline_store or (self.out_dir / "baselines" if self.out_dir is not None else None)

    def row(self, S: int) -> str:
        """The ledger row of its context length ``S``."""
        return f"{self.name}/S={S}"


@dataclass(frozen=True)
class EvalJob:
    """An evaluation to run wherever it runs (a study's process, a Ray worker): the model to load (with ``adapter``
    when given), the codec, data and settings, and where it reports (``run``, whose ledger :meth:`run` sets)."""

    model: ModelSpec
    seed: int
    adapter: Path | None
    codec: LLMTimeCodec
    data: Dataset
    cfg: EvalConfig
    run: EvalRun

    def run_on(self, ledger: RunLedger | None) -> EvalResult:
        """Load the model (and adapter), evaluate, charge ``ledger``; the model's memory is given back after."""
        with released():
            lm = load_model(self.model, seed=self.seed)
            model = load_adapter(lm.model, self.adapter).eval() if self.adapter else lm.model
            result = evaluate(model, lm.tokenizer, self.codec, self.data, self.cfg, replace(self.run, ledger=ledger))
            del lm, model
        return result


def evaluate(model: Any, tokenizer: Any, codec: LLMTimeCodec, ds: Dataset, cfg: EvalConfig,
             run: EvalRun | None = None) -> EvalResult:
    """Score ``model`` (None: baselines only) and ``cfg.baselines`` on every context length of ``cfg``. The results
    directory is held for this process while it runs (a second evaluation into it stops at once)."""
    run = run or EvalRun()
    with DirLock(run.out_dir) if run.out_dir is not None else nullcontext():
        return _evaluate(model, tokenizer, codec, ds, cfg, run)


def _evaluate(model: Any, tokenizer: Any, codec: LLMTimeCodec, ds: Dataset, cfg: EvalConfig,
              run: EvalRun) -> EvalResult:
    series = ds.series[: cfg.max_series] if cfg.max_series else ds.series
    result = EvalResult(run.name, run.model_name, cfg.protocol, to_dict(cfg), codec.state(), len(series), {},
                        run.fingerprint)
    rows: list[dict[str, Any]] = []
    examples: dict[int, tuple[list[Window], dict[str, np.ndarray]]] = {}
    season = season_for(ds, cfg)
    origins = ds.origins[: len(series)] if ds.origins is not None else None
    for S in cfg.contexts:
        wins = build_windows(series, codec, tokenizer, S, cfg, origins)
        if not wins:  # e.g. the seed protocol at an S longer than the series' text
            reason = f"no windows of {S} tokens: series too short for protocol {cfg.protocol!r} (horizon {cfg.horizon})"
            warnings.warn(reason, stacklevel=2)
            result.contexts[S] = ContextScore(S, 0, skipped=reason)
            continue
        preds: dict[str, np.ndarray] = {}
        info: dict[str, Any] = {}
        truth = np.stack([w.truth for w in wins])
        if model is not None:
            info = _model_forecasts(model, tokenizer, codec, wins, S, cfg, run)
            preds["model"] = info.pop("point")
            kept = info.pop("quantiles", None) or {}
            info.update(sampled_scores({float(q): np.asarray(a, float) for q, a in kept.items()}, truth))
        extra = _baseline_forecasts(preds, ds, series, wins, cfg, season, run)
        extra["model"] = {**extra.get("model", {}), **info}
        for m, more in backtest_scores(preds, wins, series, truth, season, cfg).items():
            extra.setdefault(m, {}).update(more)
        result.contexts[S] = _context_score(S, wins, truth, preds, cfg, extra)
        rows += _window_rows(S, wins, truth, preds)
        examples[S] = (wins, preds)
    if not examples:
        raise FlopcastError(f"no evaluation windows at any context length {list(cfg.contexts)}: "
                            f"series too short for protocol {cfg.protocol!r} (horizon {cfg.horizon})")
    if run.out_dir is not None:
        write_results(result, rows, examples, run.out_dir, ds)
    return result


def _baseline_forecasts(preds: dict[str, np.ndarray], ds: Dataset, series: list[np.ndarray], wins: list[Window],
                        cfg: EvalConfig, season: int, run: EvalRun) -> dict[str, dict[str, Any]]:
    """Each baseline's forecasts into ``preds`` (the LV-ODE only for two variables); per classical method, the
    windows it could not forecast."""
    notes: dict[str, dict[str, Any]] = {}
    for b in cfg.baselines:
        if b in CLASSICAL_BASELINES:
            preds[b], note = classical_forecasts(b, series, wins, cfg.horizon, season, run.baselines)
            notes[b] = {"unavailable": note} if note else {}
        elif b != "lv_ode" or wins[0].truth.shape[1] == 2:
            preds[b] = stored_baseline(b, [w.context for w in wins], cfg.horizon, _dt(ds), run.baselines)
    return notes


def forecast_windows(model: Any, tokenizer: Any, codec: LLMTimeCodec, windows: list[Window], cfg: ForecastConfig,
                     progress: bool = False, charge: Charge | None = None) -> ForecastResult:
    """Forecast every window; with ``charge`` (a ledger :class:`~flopcast.budget.rows.Charge`), FLOPs are added
    batch by batch, so an interrupted forecast still counts the batches it finished."""
    prompts = Prompts([w.prompt for w in windows], [w.scale for w in windows], windows[0].truth.shape[1],
                      [w.prefix for w in windows], skip_first_partial=True)
    on_batch = charge_batches(charge, model) if charge is not None else None
    return forecast_prompts(model, tokenizer, codec, prompts, cfg, progress=progress, on_batch=on_batch)


def _dt(ds: Dataset) -> float:
    return float(ds.time[1] - ds.time[0]) if ds.time is not None and len(ds.time) > 1 else 1.0


def _model_forecasts(model: Any, tokenizer: Any, codec: LLMTimeCodec, wins: list[Window], S: int, cfg: EvalConfig,
                     run: EvalRun) -> dict[str, Any]:
    """The model's forecasts at one context length: the saved ones when they exist, else generated and charged."""
    key = _context_key(model, run, cfg, codec, wins) if run.out_dir is not None else None
    done = _cached_context(run.out_dir, S, key) if run.out_dir is not None and key else None
    if done is None:
        done = _forecast_context(model, tokenizer, codec, wins, S, cfg, run)
        if run.out_dir is not None and key:
            _cache_context(run.out_dir, S, key, done)
    if done.get("capped_rate"):
        warnings.warn(f"S={S}: {100 * done['capped_rate']:.1f}% of forecasts reached the decoder's cap of "
                      f"{done['int_digits']} integer digits", stacklevel=3)
    return done


def _forecast_context(model: Any, tokenizer: Any, codec: LLMTimeCodec, wins: list[Window], S: int, cfg: EvalConfig,
                      run: EvalRun) -> dict[str, Any]:
    """Forecast one context length's windows, charging the ledger batch by batch."""
    t0 = time.time()
    grammar = window_grammar(wins, tokenizer, codec, wins[0].truth.shape[1])
    arch, lora = model_shape(model)
    new, longest = grammar.max_tokens(cfg.horizon), max(len(w.prompt) for w in wins)
    fcfg = ForecastConfig(horizon=cfg.horizon, batch_size=cfg.batch_size, max_int_digits=grammar.max_int,
                          compile=cfg.compile, n_samples=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                          seed=cfg.seed)
    widths = decode_widths(model, fcfg, len(wins) * cfg.samples, longest, new)  # "auto" chosen once, here
    fcfg = replace(fcfg, batch_size=max(widths))
    bound = generation_bound(arch, sum(widths), S, new, lora)
    batch = cfg.batch_size if isinstance(cfg.batch_size, int) else None
    if batch is not None:  # before the charge: a batch that cannot fit is refused with one that does
        p = next(model.parameters())
        check_fits(f"decoding S={S}", lambda b: decode_bytes(arch, b, longest, new, p.element_size()),
                   max(widths), free_memory(p.device), str(p.device), "eval.batch_size (--batch-size)")
    with charged(run.ledger, run.row(S), "eval", bound, run.out_dir, model=run.model_name, seq=S,
                 batch=batch) as charge:
        fr = forecast_windows(model, tokenizer, codec, wins, fcfg, run.progress, charge)
    return {"point": fr.point, "flops": int(charge.used), "wall_s": time.time() - t0, "capped_rate": fr.capped_rate,
            "int_digits": grammar.max_int, "quantiles": {str(q): a.tolist() for q, a in fr.quantiles.items()}}


# ----------------------------------------------------------------------------- finished contexts, kept

def _context_key(model: Any, run: EvalRun, cfg: EvalConfig, codec: LLMTimeCodec, windows: list[Window]) -> str:
    """What a kept context result depends on: names, settings, windows and the adapter's weights."""
    adapter = sum(float(p.detach().double().sum()) for n, p in model.named_parameters() if "lora_" in n)
    key = {"name": run.name, "model": run.model_name, "config": result_settings(cfg), "codec": codec.state(),
           "adapter": adapter, "windows": [[int(w.series), int(w.cut), len(w.prompt)] for w in windows]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _cached_context(out_dir: Path, S: int, key: str) -> dict[str, Any] | None:
    meta, arr = out_dir / "contexts" / f"S={S}.json", out_dir / "contexts" / f"S={S}.npy"
    if not (meta.is_file() and arr.is_file()):
        return None
    m = read_json(meta)
    return {**m, "point": np.load(arr, allow_pickle=False)} if m.get("key") == key else None


def _cache_context(out_dir: Path, S: int, key: str, done: dict[str, Any]) -> None:
    """Keep a finished context's forecasts: re-running an interrupted evaluation neither redoes nor re-charges it."""
    d = out_dir / "contexts"
    d.mkdir(parents=True, exist_ok=True)
    write_atomic(d / f"S={S}.npy", lambda tmp: _save_npy(tmp, done["point"]))
    meta = {"key": key, **{k: v for k, v in done.items() if k != "point"}}
    write_atomic(d / f"S={S}.json", lambda tmp: tmp.write_text(json.dumps(meta)))  # last: a .json means complete


# ----------------------------------------------------------------------------- scores and files

def _context_score(S: int, wins: list[Window], truth: np.ndarray, preds: dict[str, np.ndarray], cfg: EvalConfig,
                   extra: dict[str, dict[str, Any]]) -> ContextScore:
    alphas = np.stack([w.scale.alphas(truth.shape[2]) for w in wins])
    scores = {m: Score.from_dict({**score(p, truth, alphas, cfg.n_boot, cfg.seed), **extra.get(m, {})})
              for m, p in preds.items()}
    return ContextScore(S, len(wins), scores, float(np.mean([len(w.context) for w in wins])),
                        float(np.mean([len(w.prompt) for w in wins])))


def _window_rows(S: int, wins: list[Window], truth: np.ndarray, preds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for method, p in preds.items():
        mse, mae = per_window(p, truth)
        rows += [{"S": S, "method": method, "series": w.series, "cut": w.cut, "mse": m, "mae": a,
                  "parsed": bool(np.isfinite(m))} for w, m, a in zip(wins, mse, mae)]
    return rows


def write_results(result: EvalResult, rows: list[dict[str, Any]],
                  examples: dict[int, tuple[list[Window], dict[str, np.ndarray]]], out_dir: Path, ds: Dataset) -> Path:
    """``metrics.json``, ``windows.csv``, forecasts at the longest context, and error against horizon."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_atomic(d / "windows.csv", lambda tmp: _write_rows(tmp, rows))
    S = max(examples)
    wins, preds = examples[S]
    plot_forecasts(wins, preds, d / f"forecasts_S{S}.png", variables=ds.variables)
    plot_error_vs_horizon(result, d / "error_vs_horizon.png")
    _drop_stale(d, set(result.contexts), S)
    write_atomic(d / "metrics.json", lambda tmp: tmp.write_text(json.dumps(result.to_dict(), indent=2)))
    return d  # metrics.json is written last: one means complete results


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["S", "method", "series", "cut", "mse", "mae", "parsed"])
        w.writeheader()
        w.writerows(rows)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would add .npy to a name
        np.save(fh, arr, allow_pickle=False)


def _drop_stale(d: Path, contexts: set[int], plotted: int) -> None:
    """Remove what an earlier evaluation with other settings left here: forecast plots and kept forecasts of
    context lengths this one does not have (the FLOP records in ``charges.json`` stay)."""
    for f in d.glob("forecasts_S*.png"):
        if f.name != f"forecasts_S{plotted}.png":
            f.unlink()
    for f in (d / "contexts").glob("S=*.*") if (d / "contexts").is_dir() else ():
        if f.name.split(".")[0][2:] not in {str(S) for S in contexts}:
            f.unlink()
