"""``flopcast eval``, ``flopcast baselines`` and ``flopcast forecast``: the commands that forecast, either the
evaluation windows of a split (scored against the baselines) or your own series."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..config import ZERO_SHOT_CODEC, EvalConfig, SplitConfig
from ..errors import FlopcastError
from .common import (
    CODEC,
    EVAL,
    FORECAST,
    MODEL,
    MODEL_HELP,
    SPLIT,
    AdapterBase,
    Baselines,
    Contexts,
    DataOpt,
    Decimals,
    Fill,
    Force,
    Horizon,
    IdColumn,
    MaxSeries,
    NoPoint,
    Offset,
    Pooled,
    Protocol,
    Scale,
    Season,
    SplitBy,
    SplitOpt,
    Stride,
    TestWindows,
    TimeColumn,
    ValueColumns,
    app,
    codec_cfg,
    csv_list,
    data_spec,
    err,
    file_spec,
    ints,
    out,
    print_table,
)


def _eval_cfg(context: str, protocol: str, horizon: int, split: str, max_series: Optional[int], stride: int,
              baselines: str, batch_size: str | int, sampling: tuple[int, float, float] = (1, 1.0, 1.0),
              season: Optional[int] = None) -> EvalConfig:
    if batch_size != "auto":
        if not str(batch_size).strip().isdigit():
            raise FlopcastError(f"--batch-size takes one integer or 'auto', got {batch_size!r}")
        batch_size = int(batch_size)
    return EvalConfig(protocol=protocol, contexts=tuple(ints(context)), horizon=horizon, split=split,
                      max_series=max_series, stride=stride, batch_size=batch_size,
                      baselines=tuple(b for b in baselines.split(",") if b), samples=sampling[0],
                      temperature=sampling[1], top_p=sampling[2], season=season)


def _split_cfg(by: str, test_windows: int) -> SplitConfig:
    return SplitConfig(by=by, test_windows=test_windows)


def _show_eval(results: Any, out_dir: Path) -> None:
    print_table(f"{results.model or 'baselines'} -- protocol {results.protocol}", results.rows())
    out.print(f"results: {out_dir}/metrics.json, windows.csv, plots")


@app.command("eval")
def eval_cmd(
    model: AdapterBase = None,
    adapter: Optional[Path] = typer.Option(None, help="LoRA adapter directory"),
    data: DataOpt = None,
    split: SplitOpt = EVAL.split,
    context: Contexts = csv_list(EVAL.contexts),
    protocol: Protocol = EVAL.protocol,
    horizon: Horizon = EVAL.horizon,
    stride: Stride = EVAL.stride,
    max_series: MaxSeries = None,
    baselines: Baselines = csv_list(EVAL.baselines),
    batch_size: str = typer.Option(str(EVAL.batch_size), help="windows forecast together, or 'auto' (as many as "
                                   "fit in a GPU's free memory; 16 on a CPU)"),
    samples: int = typer.Option(EVAL.samples, help=">1: score the median of n sampled forecasts"),
    temperature: float = typer.Option(EVAL.temperature, help="sampling temperature (with --samples > 1)"),
    top_p: float = typer.Option(EVAL.top_p, help="sample within this much probability (nucleus; 1: all)"),
    decimals: Decimals = CODEC.decimals,
    scale: Scale = CODEC.scale_mode,
    no_point: NoPoint = False,
    pooled: Pooled = False,
    offset: Offset = False,
    out_dir: Path = typer.Option(Path("runs/eval"), "--out", "-o", help="results directory"),
    ledger: Optional[Path] = typer.Option(None, help="charge the FLOPs to this ledger"),
    budget: Optional[float] = typer.Option(None, help="budget (FLOPs) when creating the ledger"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
    split_by: SplitBy = SPLIT.by,
    test_windows: TestWindows = SPLIT.test_windows,
    season: Season = None,
) -> None:
    """Evaluate a model (and baselines) on a split: MSE/MAE with CIs, parse failures, FLOPs, plots."""
    from ..api.study import evaluate

    cfg = _eval_cfg(context, protocol, horizon, split, max_series, stride, baselines, batch_size,
                    (samples, temperature, top_p), season)
    res = evaluate(model, data_spec(data, id_column, time_column, value_columns, fill), adapter, cfg, out_dir, ledger,
                   budget, codec_cfg(decimals, scale, no_point, pooled, offset), _split_cfg(split_by, test_windows))
    _show_eval(res, out_dir)


@app.command("baselines")
def baselines_cmd(
    data: DataOpt = None,
    split: SplitOpt = EVAL.split,
    context: Contexts = csv_list(EVAL.contexts),
    protocol: Protocol = EVAL.protocol,
    horizon: Horizon = EVAL.horizon,
    stride: Stride = EVAL.stride,
    max_series: MaxSeries = None,
    baselines: Baselines = csv_list(EVAL.baselines),
    tokenizer: str = typer.Option(MODEL, help=f"whose tokenizer defines the windows: {MODEL_HELP}"),
    decimals: Decimals = CODEC.decimals,
    scale: Scale = CODEC.scale_mode,
    no_point: NoPoint = False,
    pooled: Pooled = False,
    offset: Offset = False,
    out_dir: Path = typer.Option(Path("runs/baselines"), "--out", "-o", help="results directory"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
    split_by: SplitBy = SPLIT.by,
    test_windows: TestWindows = SPLIT.test_windows,
    season: Season = None,
) -> None:
    """Score the persistence / linear-drift / Lotka-Volterra-ODE baselines on the same windows as eval."""
    from ..api.study import score_baselines

    cfg = _eval_cfg(context, protocol, horizon, split, max_series, stride, baselines, EVAL.batch_size, season=season)
    res = score_baselines(data_spec(data, id_column, time_column, value_columns, fill), cfg, out_dir, tokenizer,
                          codec_cfg(decimals, scale, no_point, pooled, offset), _split_cfg(split_by, test_windows))
    _show_eval(res, out_dir)


@app.command("forecast")
def forecast_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="series as CSV (one column per variable) or .h5"),
    model: AdapterBase = None,
    adapter: Optional[Path] = typer.Option(None, help="LoRA adapter directory"),
    steps: int = typer.Option(FORECAST.horizon, help="timesteps to forecast"),
    samples: int = typer.Option(FORECAST.n_samples, help=">1: sample n forecasts -> median and 10/50/90% quantiles"),
    temperature: float = typer.Option(FORECAST.temperature, help="sampling temperature (with --samples > 1)"),
    top_p: float = typer.Option(FORECAST.top_p, help="sample within the most likely characters of this total "
                                "probability (nucleus; 1: all)"),
    context_tokens: Optional[int] = typer.Option(None, help="keep only the last whole steps fitting in N tokens "
                                                 "(default: as many as the model's positions allow)"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="write the forecast as CSV"),
    plot: Optional[Path] = typer.Option(None, help="save a plot of context + forecast (.png, .pdf, .svg, .jpg)"),
    seed: int = typer.Option(FORECAST.seed, help="random seed of the sampling"),
    ledger: Optional[Path] = typer.Option(None, help="charge the FLOPs to this ledger"),
    budget: Optional[float] = typer.Option(None, help="budget (FLOPs) when creating the ledger"),
    scale: Scale = ZERO_SHOT_CODEC.scale_mode,
    pooled: Pooled = False,
    offset: bool = typer.Option(ZERO_SHOT_CODEC.offset, "--offset/--no-offset",
                                help="shift each variable by LLMTime's offset (min - 0.3 x range) before scaling"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
    force: Force = False,
    difference: Optional[int] = typer.Option(
        None, help="forecast each step less the step N before it (N = the season: zero differences are seasonal "
        "naive), integrated back; 0: the values themselves  [default: the adapter's lag, else 0]"),
) -> None:
    """Forecast the next steps of your own series (dated on their calendar when the file has dates)."""
    from ..api.forecaster import ForecastJob, forecast_file

    codec = codec_cfg(ZERO_SHOT_CODEC.decimals, scale, False, pooled, offset)
    res = forecast_file(ForecastJob(file_spec(input, id_column, time_column, value_columns, fill), model, adapter,
                                    steps, samples, context_tokens, seed, out_file, plot, ledger, budget, codec,
                                    force, temperature, top_p, difference))
    print_table(f"forecast ({model or adapter or MODEL})", res["rows"])
    if res["parse_failure_rate"]:
        err.print(f"warning: {100 * res['parse_failure_rate']:.1f}% of forecasts did not parse completely")
    if res["capped_rate"]:
        err.print(f"warning: {100 * res['capped_rate']:.1f}% of forecasts reached the decoder's cap of "
                  f"{res['int_digits']} integer digits (10x the largest value in their context)")
