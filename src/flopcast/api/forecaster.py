"""A forecaster for notebooks and scripts, on the conventions of the tools forecasting users know: PEFT's and
litgpt's ``from_pretrained``, Chronos-2's ``predict_df`` on long DataFrames.

    from flopcast import Forecaster

    fc = Forecaster.from_pretrained("runs/quickstart/stages/final/run/adapter_best")  # the adapter names its base
    df = fc.predict(long_df, horizon=5, samples=20, id_column="id", timestamp_column="timestamp")

Forecasts use the batched, grammar-constrained decoder that evaluations use; with a ledger, their FLOPs are
reserved before and charged batch by batch. ``flopcast forecast`` is :func:`forecast_file`, a thin layer over
:class:`Forecaster`.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..budget.costs import charge_batches, charged, generation_bound, model_shape
from ..budget.ledger import Ledger
from ..checks import check_arg, check_ints
from ..config import ZERO_SHOT_CODEC, CodecConfig, DataSpec, ForecastConfig, ModelSpec
from ..data.calendar import future_timestamps, shown_stamp
from ..data.dataset import Dataset
from ..data.differences import check_lag, differenced, integrate
from ..data.frames import SeriesBatch, series_from, to_frame
from ..data.io import load
from ..encoding.codec import LLMTimeCodec
from ..encoding.grammar import grammar_for
from ..encoding.scaling import collapse_warning
from ..encoding.windows import Window
from ..errors import DataError, FlopcastError
from ..evaluation.plots import plot_forecasts
from ..forecasting.forecast import ForecastResult, Prompts, decode_widths, forecast_prompts
from ..model.adapter_files import ADAPTER_META, adapter_base, read_adapter_meta
from ..model.load import EMBEDDED
from ..model.lora import load_for_inference
from ..model.parts import max_positions
from ..results import write_atomic
from .fit import FitSettings, train_adapter
from .outputs import PLOT_SUFFIXES, Output, check_outputs
from .tools import fitted_codec

MIN_STEPS = 2  # a context needs two steps: the spacing of its timestamps, and something to continue


class Forecaster:
    """A base model (plus an optional LoRA adapter) and the codec it reads and writes numbers with; ``difference``:
    the lag of the differences its adapter was fine-tuned on (0: the series themselves), its forecasts' default."""

    def __init__(self, model: Any, tokenizer: Any, model_name: str, codec: LLMTimeCodec | None = None,
                 adapter: str | Path | None = None, ledger: Ledger | None = None, difference: int = 0):
        check_lag(difference, [], MIN_STEPS)
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.codec = codec or LLMTimeCodec(ZERO_SHOT_CODEC)
        self.adapter = Path(adapter) if adapter else None
        self.ledger = ledger
        self.difference = difference

    @classmethod
    def from_pretrained(cls, model_or_adapter: str | Path | None = None, adapter: str | Path | None = None,
                        device: str = "auto", dtype: str = "auto", ledger: str | Path | Ledger | None = None,
                        budget: float | None = None) -> "Forecaster":
        """A model name (built-in, local directory, Hub id; default: the embedded model), optionally with
        ``adapter``; or an adapter directory alone, whose metadata names the base model and the codec it was
        trained with (and the lag of differences :meth:`fit` trained it on). An adapter goes on its own base model
        only. With ``ledger`` (a path or a :class:`Ledger`; ``budget`` creates one) every forecast's FLOPs are
        charged to it."""
        check_arg("model_or_adapter", model_or_adapter, str, os.PathLike)
        check_arg("adapter", adapter, str, os.PathLike)
        check_arg("ledger", ledger, str, os.PathLike, Ledger)
        model = None if model_or_adapter is None else str(model_or_adapter)
        if adapter is None and model is not None and (Path(model) / ADAPTER_META).is_file():
            adapter, model = Path(model), None
        name = adapter_base(adapter, model) if adapter is not None else (model or EMBEDDED)
        lm = load_for_inference(ModelSpec(name=name, device=device, dtype=dtype), adapter)
        meta = read_adapter_meta(adapter) if adapter else {}
        if isinstance(ledger, (str, Path)):
            ledger = Ledger(ledger, budget)
        codec = LLMTimeCodec.from_state(meta["codec"]) if meta.get("codec") else None
        return cls(lm.model, lm.tokenizer, name, codec, adapter, ledger, meta.get("difference", 0))

    def forecast(self, series: Any, horizon: int = 5, samples: int = 1,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), context_tokens: int | None = None, seed: int = 0,
                 batch_size: int = 16, temperature: float = 1.0, name: str = "forecast", progress: bool = False,
                 top_p: float = 1.0, fill: str | None = None, difference: int | None = None) -> ForecastResult:
        """Forecast ``horizon`` steps after each ``(T_i, V)`` array; a
        :class:`~flopcast.forecasting.forecast.ForecastResult` (original units; ``contexts`` holds what each
        series was cut to: its newest steps that fit in ``context_tokens`` and in the model's positions, leaving
        room for the forecast). Missing values are filled by ``fill`` (``linear``, ``ffill``) or refused.
        ``difference`` = m > 0: the model forecasts each step less the step m before it, integrated back to levels
        (:mod:`flopcast.data.differences`; zero differences are the seasonal naive forecast at season m); None:
        the Forecaster's own lag (its adapter's, from :meth:`fit`; else 0)."""
        fcfg = ForecastConfig(horizon=horizon, batch_size=batch_size, n_samples=samples, temperature=temperature,
                              top_p=top_p, quantiles=quantiles, seed=seed)  # bad numbers stop here, before any work
        if context_tokens is not None:
            check_ints("context_tokens", [context_tokens])
        values = _long_enough(series_from(series, fill=fill)).values  # or one line naming the series at fault
        lag = self.difference if difference is None else difference
        check_lag(lag, values, MIN_STEPS)
        res = self._forecast([differenced(v, lag) for v in values], fcfg, context_tokens, name, progress)
        return _integrated(res, values, lag) if lag else res

    def _forecast(self, values: list[np.ndarray], fcfg: ForecastConfig, context_tokens: int | None, name: str,
                  progress: bool) -> ForecastResult:
        """:meth:`forecast` of checked series: cut to fit, encoded, decoded under the ledger."""
        horizon, samples = fcfg.horizon, fcfg.n_samples
        contexts = self.contexts(values, horizon, context_tokens)
        scales = [self.codec.series_scale(c) for c in contexts]
        texts = [self.codec.encode(c, a) for c, a in zip(contexts, scales)]
        lost = collapse_warning(contexts, scales, self.codec.config.decimals)
        if lost:
            warnings.warn(lost, stacklevel=3)
        prompts = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        n_vars = contexts[0].shape[1]
        grammar = grammar_for(texts, self.codec.config, n_vars)
        fcfg = replace(fcfg, max_int_digits=grammar.max_int)
        arch, lora = model_shape(self.model)
        longest, new = max(map(len, prompts)), grammar.max_tokens(horizon)
        bound = generation_bound(arch, sum(decode_widths(self.model, fcfg, len(prompts) * samples, longest, new)),
                                 longest, new, lora)
        with charged(self.ledger, name, "forecast", bound, model=self.model_name) as charge:
            res = forecast_prompts(self.model, self.tokenizer, self.codec, Prompts(prompts, scales, n_vars), fcfg,
                                   progress=progress, on_batch=charge_batches(charge, self.model))
        res.contexts = contexts
        return res

    def contexts(self, series: list[np.ndarray], horizon: int, context_tokens: int | None = None) -> list[np.ndarray]:
        """Each series' newest steps that fit in ``context_tokens`` and in the model's positions less room for
        ``horizon`` steps (all of it when it fits); a warning says how many steps were kept. A limit shorter than
        one step is refused."""
        texts = [self.codec.encode(s) for s in series]
        room = grammar_for(texts, self.codec.config, series[0].shape[1]).max_tokens(horizon)
        positions = max_positions(self.model)
        limit, why = context_tokens, f"context_tokens={context_tokens}"
        if positions is not None and (limit is None or limit > positions - room):
            limit, why = positions - room, f"{positions} positions of {self.model_name}, less {room} for the forecast"
            if limit < 1:
                raise DataError(f"a forecast of {horizon} steps needs up to {room} tokens; {self.model_name} has "
                                f"{positions} positions: forecast fewer steps")
        out = []
        for s, text in zip(series, texts):
            fits = limit is None or len(self.tokenizer(text, add_special_tokens=False).input_ids) <= limit
            out.append(s if fits else fit_context(s, self.codec, self.tokenizer, limit))
        cut = [(len(s), len(c)) for s, c in zip(series, out) if len(c) < len(s)]
        if cut:
            kept = sorted(n for _, n in cut)
            warnings.warn(f"{len(cut)} series longer than {limit} tokens ({why}): the newest "
                          f"{kept[0] if kept[0] == kept[-1] else f'{kept[0]}-{kept[-1]}'} steps of "
                          f"{max(t for t, _ in cut)} are the context", stacklevel=4)
        return out

    def predict(self, data: Any, horizon: int = 5, samples: int = 1, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
                context_tokens: int | None = None, *, id_column: str | None = None, timestamp_column: str | None = None,
                target_columns: list[str] | None = None, seed: int = 0, batch_size: int = 16,
                temperature: float = 1.0, top_p: float = 1.0, fill: str | None = None,
                difference: int | None = None) -> Any:
        """Forecast ``data`` -- an array (T, V), a list of arrays, or a long DataFrame (``id_column``,
        ``timestamp_column``, one column per variable; ``unique_id, ds, y`` too) -- and return a DataFrame: id,
        timestamp (continued on the calendar), the point forecast per variable (greedy; the median of ``samples`` >
        1) and, when sampled, ``<variable>_q<level>`` per quantile. ``difference`` as in :meth:`forecast`."""
        batch = _long_enough(series_from(data, id_column, timestamp_column, target_columns, fill))
        res = self.forecast(batch.values, horizon, samples, quantiles, context_tokens, seed, batch_size,
                            temperature=temperature, top_p=top_p, difference=difference)
        return to_frame(batch, res.point, res.quantiles)

    def fit(self, data: Any, out_dir: str | Path, budget: float, steps: int = 100, *, horizon: int = 5,
            test_windows: int = 1, lr: float = 1e-4, rank: int = 8, seq_len: int = 256, batch_size: int = 4,
            id_column: str | None = None, timestamp_column: str | None = None,
            target_columns: list[str] | None = None, fill: str | None = None, head: str = "full",
            seed: int = 0, difference: int = 0, progress: bool = True) -> "Forecaster":
        """Fine-tune a LoRA adapter of this base model on ``data`` (what :meth:`predict` takes) and return a
        Forecaster with it. A study in ``out_dir`` does the work -- zero-shot evaluation, training on each series'
        history, evaluation of the held-out tail (``test_windows`` horizons of ``horizon`` steps) beside seasonal
        naive -- with every FLOP charged to its ledger within ``budget``; ``out_dir/report.md`` says whether
        fine-tuning paid off. Calling it again resumes (or reads back) that study. ``seed`` seeds the adapter's
        initial weights and the batch order. ``difference`` = m > 0 fine-tunes on each series' lag-m differences
        (m = the season: the benchmark's lever against seasonal naive): the adapter records m, so its forecasts
        integrate its differences back to levels, and the study's report scores the differences."""
        if self.adapter is not None:
            raise FlopcastError("fit starts from a base model; this Forecaster already has an adapter")
        settings = FitSettings(budget, steps, lr, rank, seq_len, batch_size, horizon, test_windows, head=head,
                               seed=seed, difference=difference)
        batch = _long_enough(series_from(data, id_column, timestamp_column, target_columns, fill))
        adapter, _ = train_adapter(batch, self.model_name, out_dir, settings, progress)
        return Forecaster.from_pretrained(adapter, ledger=self.ledger)

    def __repr__(self) -> str:
        lag = f", difference={self.difference}" if self.difference else ""
        return f"Forecaster({self.model_name!r}, adapter={str(self.adapter) if self.adapter else None!r}{lag})"


def _integrated(res: ForecastResult, histories: list[np.ndarray], lag: int) -> ForecastResult:
    """A forecast of lag-``lag`` differences as levels: each sample path (or the greedy path) integrated after its
    series' history, the median and quantiles taken over the integrated paths; ``contexts`` in levels."""
    if res.samples is None:
        point = np.stack([integrate(h, p, lag) for h, p in zip(histories, res.point)])
        samples, quantiles = None, {}
    else:
        samples = np.stack([integrate(h, s, lag) for h, s in zip(histories, res.samples)])
        point = np.nanmedian(samples, axis=1) if np.isfinite(samples).any() else samples[:, 0]
        quantiles = {q: np.nanquantile(samples, q, axis=1) for q in res.quantiles}
    contexts = [h[-(len(c) + lag):] for h, c in zip(histories, res.contexts or histories)]
    return replace(res, point=point, samples=samples, quantiles=quantiles, contexts=contexts)


def _long_enough(batch: SeriesBatch) -> SeriesBatch:
    for key, v in zip(batch.ids, batch.values):
        if len(v) < MIN_STEPS:
            raise DataError(f"series {key!r} has {len(v)} step(s); forecasting needs at least {MIN_STEPS}")
    return batch


def fit_context(s: np.ndarray, codec: LLMTimeCodec, tokenizer: Any, max_tokens: int | None) -> np.ndarray:
    """The longest suffix of whole steps whose encoding fits in ``max_tokens`` tokens (all of ``s`` for None); a
    limit that not even the last step fits in is refused."""
    if max_tokens is None:
        return s

    def tokens(n: int) -> int:
        return len(tokenizer(codec.encode(s[-n:]), add_special_tokens=False).input_ids)

    if tokens(1) > max_tokens:
        raise DataError(f"a context of {max_tokens} tokens is shorter than one step ({tokens(1)} tokens): allow "
                        "more context tokens")
    lo, hi = 1, len(s)
    while lo < hi:  # binary search on the number of steps
        mid = (lo + hi + 1) // 2
        if tokens(mid) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return s[-lo:]


# ----------------------------------------------------------------------------- flopcast forecast

@dataclass(frozen=True)
class ForecastJob:
    """What ``flopcast forecast`` does: forecast ``steps`` steps after every series of a file.

    Attributes:
        data: the CSV or HDF5 file (whole series as context), with its columns and fill.
        model: the base model's name (default: the adapter's base, else the embedded model); adapter: a LoRA
            adapter directory on it.
        steps: steps to forecast; samples: > 1 samples that many forecasts (median and 10/50/90% quantiles) at
            ``temperature`` within the nucleus ``top_p``.
        context_tokens: keep only the last whole steps of each series that fit in this many tokens.
        seed: of the sampling.
        out: the forecast as CSV; plot: a plot of context and forecast (PNG, PDF, SVG or JPEG).
        ledger: charge the FLOPs to this ledger (``budget`` creates it).
        codec: how numbers are written when there is no adapter (default :data:`ZERO_SHOT_CODEC`).
        force: replace ``out`` and ``plot`` when they exist (never an input, nor a ledger).
        difference: > 0: forecast the differences at this lag, integrated back (:meth:`Forecaster.forecast`); 0:
            the values; None: the lag the adapter was fine-tuned on (0 without one).
    """

    data: DataSpec
    model: str | None = None
    adapter: Path | None = None
    steps: int = 5
    samples: int = 1
    context_tokens: int | None = None
    seed: int = 0
    out: Path | None = None
    plot: Path | None = None
    ledger: Path | None = None
    budget: float | None = None
    codec: CodecConfig | None = None
    force: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    difference: int | None = None

    def __post_init__(self) -> None:
        ForecastConfig(horizon=self.steps, n_samples=self.samples, seed=self.seed, temperature=self.temperature,
                       top_p=self.top_p)  # bad numbers stop here
        if self.context_tokens is not None:
            check_ints("context_tokens", [self.context_tokens])
        if self.difference is not None:
            check_lag(self.difference, [], MIN_STEPS)


def forecast_file(job: ForecastJob) -> dict[str, Any]:
    """Forecast every series of ``job.data`` through :class:`Forecaster` (its FLOPs charged when ``job.ledger`` is
    set); the forecast rows (dated when the file has dates), written to ``job.out`` and plotted to ``job.plot``
    when asked."""
    check_outputs([Output(Path(job.out), (".csv",), "forecast") if job.out is not None else None,
                   Output(Path(job.plot), PLOT_SUFFIXES, "plot") if job.plot is not None else None],
                  [job.data.path, job.adapter, job.ledger], job.force)
    ledger = Ledger(job.ledger, job.budget) if job.ledger else None
    ds = load(job.data)
    fc = Forecaster.from_pretrained(job.model, job.adapter, ledger=ledger)
    if job.codec is not None and job.adapter is None:
        fc.codec = fitted_codec(None, job.codec)
    res = fc.forecast(ds.series, job.steps, job.samples, context_tokens=job.context_tokens, seed=job.seed,
                      temperature=job.temperature, top_p=job.top_p, name=f"forecast/{Path(job.data.path).name}",
                      progress=len(ds.series) > 16, difference=job.difference)
    rows = _forecast_rows(ds, res, job.steps)
    if job.out is not None:
        _write_csv(rows, job.out)
    if job.plot is not None:
        _plot_forecast(ds, res, job.steps, job.plot)
    return {"rows": rows, "parse_failure_rate": res.parse_failure_rate, "capped_rate": res.capped_rate,
            "int_digits": res.int_digits, "texts": res.texts,
            "context_steps": [len(c) for c in (res.contexts or ds.series)]}


def _future(ds: Dataset, i: int, steps: int) -> np.ndarray:
    """Series ``i``'s next ``steps`` stamps: on its calendar when the file dates it, else step indices."""
    stamps = ds.stamps[i] if ds.stamps is not None else None
    return future_timestamps(stamps, len(ds.series[i]), steps)


def _forecast_rows(ds: Dataset, res: ForecastResult, steps: int) -> list[dict[str, Any]]:
    time_name = ds.time_column if ds.stamps is not None and ds.time_column else "step"
    rows = []
    for i in range(ds.n_series):
        for h, t in enumerate(_future(ds, i, steps)):
            row: dict[str, Any] = {ds.id_column or "series": ds.ids[i] if ds.ids else i, time_name: shown_stamp(t)}
            row.update({v: float(res.point[i, h, j]) for j, v in enumerate(ds.variables)})
            for q, arr in res.quantiles.items():
                row.update({f"{v}_q{q:g}": float(arr[i, h, j]) for j, v in enumerate(ds.variables)})
            rows.append(row)
    return rows


def _write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    write_atomic(path, write)


def _plot_forecast(ds: Dataset, res: ForecastResult, steps: int, path: str | Path) -> None:
    contexts = res.contexts or ds.series
    wins = [Window(i, len(ds.series[i]), c, np.full((steps, ds.n_vars), np.nan), a, [])
            for i, (c, a) in enumerate(zip(contexts, res.scales))]
    times = None
    if ds.stamps is not None:
        times = [(np.asarray(ds.stamps[i])[len(ds.series[i]) - len(c):], _future(ds, i, steps))
                 for i, c in enumerate(contexts)]
    plot_forecasts(wins, {"model": res.point}, path, variables=ds.variables, quantiles=res.quantiles or None,
                   times=times)
