"""Evaluate a model (and baselines) on a split under the ``seed`` or ``aligned`` protocol.

For every context length ``S``: build windows, forecast them in batches (charging the FLOPs to
the ledger when one is given, batch by batch), score model and baselines with the same metrics, and
write ``metrics.json``, ``windows.csv`` and plots to ``out_dir``. Each finished context's forecasts
are kept in ``out_dir/contexts/`` (keyed by settings, windows and adapter weights), so an
interrupted evaluation, run again, neither redoes nor re-charges them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from .baselines import stored_baseline
from .codec import LLMTimeCodec
from .config import EvalConfig, ForecastConfig, result_settings, to_dict
from .costs import charge_batches, eval_bound, model_shape
from .data import Dataset
from .errors import FlopcastError
from .forecast import ForecastResult, forecast_prompts
from .grammar import LLMTimeGrammar, int_digits_for
from .ledger import Charge
from .metrics import per_window, score
from .results import ContextScore, EvalResult, Score
from .windows import Window, aligned_windows, seed_windows


def build_windows(series: list[np.ndarray], codec: LLMTimeCodec, tokenizer, S: int, cfg: EvalConfig) -> list[Window]:
    if cfg.protocol == "seed":
        return seed_windows(series, codec, tokenizer, S, cfg.horizon, cfg.window_stride_tokens)
    return aligned_windows(series, codec, tokenizer, S, cfg.horizon, cfg.stride, cfg.min_context_steps)


def window_grammar(windows: list[Window], tokenizer, codec: LLMTimeCodec, n_vars: int) -> LLMTimeGrammar:
    """The decoding grammar of these windows (integer digits derived from their prompts)."""
    return LLMTimeGrammar(codec.config, n_vars,
                          int_digits_for([tokenizer.decode(w.prompt) for w in windows], codec.config))


def forecast_reservation(ledger, forecaster, name: str, kind: str, n_prompts: int, prompt_len: int, horizon: int,
                         grammar: LLMTimeGrammar, **fields):
    """``ledger.reserved`` for a forecast of ``n_prompts`` prompts of up to ``prompt_len`` tokens
    (a no-op without a ledger)."""
    from contextlib import nullcontext

    if ledger is None:
        return nullcontext(Charge())
    arch, lora = model_shape(forecaster)
    return ledger.reserved(name, kind, eval_bound(arch, n_prompts, prompt_len, horizon, grammar, lora),
                           **fields)


def _dt(ds: Dataset) -> float:
    return float(ds.time[1] - ds.time[0]) if ds.time is not None and len(ds.time) > 1 else 1.0


def forecast_windows(model, tokenizer, codec: LLMTimeCodec, windows: list[Window], horizon: int,
                     batch_size: int | str, progress: bool = False, charge=None, int_digits: int | None = None,
                     compile: str | None = None) -> ForecastResult:
    """Forecast every window; with ``charge`` (a ledger :class:`Charge`), FLOPs are added batch by batch,
    so an interrupted forecast still counts the batches it finished."""
    n_vars = windows[0].truth.shape[1]
    fcfg = ForecastConfig(horizon=horizon, batch_size=batch_size, max_int_digits=int_digits, compile=compile)
    on_batch = charge_batches(charge, model) if charge is not None else None
    return forecast_prompts(model, tokenizer, codec, [w.prompt for w in windows], np.array([w.alpha for w in windows]),
                            n_vars, fcfg, [w.prefix for w in windows], progress=progress, skip_first_partial=True,
                            on_batch=on_batch)


def _context_key(model, name: str, model_name: str, cfg: EvalConfig, codec: LLMTimeCodec, windows: list[Window]) -> str:
    """What a cached context result depends on: names, settings, windows and the adapter's weights."""
    adapter = sum(float(p.detach().double().sum()) for n, p in model.named_parameters() if "lora_" in n)
    key = {"name": name, "model": model_name, "config": result_settings(cfg), "codec": codec.state(),
           "adapter": adapter, "windows": [[int(w.series), int(w.cut), len(w.prompt)] for w in windows]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _cached_context(out_dir: Path, S: int, key: str) -> dict | None:
    meta, arr = out_dir / "contexts" / f"S={S}.json", out_dir / "contexts" / f"S={S}.npy"
    if not (meta.is_file() and arr.is_file()):
        return None
    m = json.loads(meta.read_text())
    return {**m, "point": np.load(arr, allow_pickle=False)} if m.get("key") == key else None


def _forecast_context(model, tokenizer, codec: LLMTimeCodec, wins: list[Window], S: int, cfg: EvalConfig, ledger,
                      name: str, model_name: str, progress: bool) -> dict:
    """Forecast one context length's windows, charging the ledger batch by batch."""
    t0 = time.time()
    grammar = window_grammar(wins, tokenizer, codec, wins[0].truth.shape[1])
    batch = cfg.batch_size if isinstance(cfg.batch_size, int) else None  # "auto": chosen per batch of rows
    with forecast_reservation(ledger, model, name, "eval", len(wins), S, cfg.horizon, grammar, model=model_name, seq=S,
                              batch=batch) as charge:
        fr = forecast_windows(model, tokenizer, codec, wins, cfg.horizon, cfg.batch_size, progress, charge,
                              grammar.max_int, cfg.compile)
    return {"point": fr.point, "flops": int(charge.used), "wall_s": time.time() - t0, "capped_rate": fr.capped_rate,
            "int_digits": grammar.max_int}


def _cache_context(out_dir: Path, S: int, key: str, done: dict) -> None:
    """Keep a finished context's forecasts: re-running an interrupted evaluation neither redoes nor re-charges it."""
    d = out_dir / "contexts"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"S={S}.npy.part", "wb") as fh:
        np.save(fh, done["point"], allow_pickle=False)
    (d / f"S={S}.npy.part").replace(d / f"S={S}.npy")
    (d / f"S={S}.json.part").write_text(json.dumps({"key": key, **{k: v for k, v in done.items() if k != "point"}}))
    (d / f"S={S}.json.part").replace(d / f"S={S}.json")  # written last: a .json means a complete entry


def evaluate(model, tokenizer, codec: LLMTimeCodec, ds: Dataset, cfg: EvalConfig, out_dir: str | Path | None = None,
             ledger=None, name: str = "eval", model_name: str = "", progress: bool = True,
             fingerprint: str | None = None, baseline_store: str | Path | None = None) -> EvalResult:
    """Score ``model`` (None: baselines only) on every context length of ``cfg``.
    ``fingerprint`` (of the settings behind it, see flopcast.preflight) is stored with the results.
    Baseline forecasts are kept in ``baseline_store`` (default ``out_dir/baselines``) and reused from there."""
    if baseline_store is None and out_dir is not None:
        baseline_store = Path(out_dir) / "baselines"
    series = ds.series[: cfg.max_series] if cfg.max_series else ds.series
    result = EvalResult(name, model_name, cfg.protocol, to_dict(cfg), codec.state(), len(series), {}, fingerprint)
    rows: list[dict] = []
    examples: dict = {}
    for S in cfg.contexts:
        wins = build_windows(series, codec, tokenizer, S, cfg)
        if not wins:  # e.g. the seed protocol at an S longer than the series' text
            reason = f"no windows of {S} tokens: series too short for protocol {cfg.protocol!r} (horizon {cfg.horizon})"
            warnings.warn(reason, stacklevel=2)
            result.contexts[S] = ContextScore(S, 0, skipped=reason)
            continue
        preds, info = {}, {}
        if model is not None:
            info = _model_forecasts(model, tokenizer, codec, wins, S, cfg, out_dir, ledger, name, model_name, progress)
            preds["model"] = info.pop("point")
        for b in cfg.baselines:
            if b != "lv_ode" or wins[0].truth.shape[1] == 2:
                preds[b] = stored_baseline(b, [w.context for w in wins], cfg.horizon, _dt(ds), baseline_store)
        truth = np.stack([w.truth for w in wins])
        result.contexts[S] = _context_score(S, wins, truth, preds, cfg, info)
        rows += _window_rows(S, wins, truth, preds)
        examples[S] = (wins, preds)
    if not examples:
        raise FlopcastError(f"no evaluation windows at any context length {list(cfg.contexts)}: "
                            f"series too short for protocol {cfg.protocol!r} (horizon {cfg.horizon})")
    if out_dir is not None:
        write_results(result, rows, examples, out_dir, ds)
    return result


def _model_forecasts(model, tokenizer, codec, wins, S, cfg, out_dir, ledger, name, model_name, progress) -> dict:
    """The model's forecasts at one context length: the saved results when they exist, else generated and charged."""
    key = _context_key(model, name, model_name, cfg, codec, wins) if out_dir is not None else None
    done = _cached_context(Path(out_dir), S, key) if key else None
    if done is None:
        done = _forecast_context(model, tokenizer, codec, wins, S, cfg, ledger, f"{name}/S={S}", model_name, progress)
        if key:
            _cache_context(Path(out_dir), S, key, done)
    if done.get("capped_rate"):
        warnings.warn(f"S={S}: {100 * done['capped_rate']:.1f}% of forecasts reached the decoder's cap of "
                      f"{done['int_digits']} integer digits", stacklevel=3)
    return done


def _context_score(S: int, wins: list[Window], truth: np.ndarray, preds: dict[str, np.ndarray], cfg: EvalConfig,
                   model_info: dict) -> ContextScore:
    alphas = np.array([w.alpha for w in wins])
    scores = {m: Score.from_dict({**score(p, truth, alphas, cfg.n_boot, cfg.seed),
                                  **(model_info if m == "model" else {})})
              for m, p in preds.items()}
    return ContextScore(S, len(wins), scores, float(np.mean([len(w.context) for w in wins])),
                        float(np.mean([len(w.prompt) for w in wins])))


def _window_rows(S: int, wins: list[Window], truth: np.ndarray, preds: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for method, p in preds.items():
        mse, mae = per_window(p, truth)
        rows += [{"S": S, "method": method, "series": w.series, "cut": w.cut, "mse": m, "mae": a,
                  "parsed": bool(np.isfinite(m))} for w, m, a in zip(wins, mse, mae)]
    return rows


def write_results(result: EvalResult, rows: list[dict], examples: dict, out_dir: str | Path, ds: Dataset) -> Path:
    from .plots import plot_error_vs_horizon, plot_forecasts

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
    with (d / "windows.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["S", "method", "series", "cut", "mse", "mae", "parsed"])
        w.writeheader()
        w.writerows(rows)
    S = max(examples)
    wins, preds = examples[S]
    plot_forecasts(wins, preds, d / f"forecasts_S{S}.png", variables=ds.variables)
    plot_error_vs_horizon(result, d / "error_vs_horizon.png")
    return d
