"""``flopcast data simulate|inspect|split`` and ``flopcast encode``: datasets and how they are written as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..config import SimConfig, SplitConfig
from .common import (
    CODEC,
    MODEL,
    MODEL_HELP,
    SIM,
    SPLIT,
    Decimals,
    Fill,
    Force,
    IdColumn,
    NoPoint,
    Offset,
    Pooled,
    Scale,
    TimeColumn,
    ValueColumns,
    app,
    codec_cfg,
    data_app,
    data_spec,
    file_spec,
    out,
    print_table,
)


@data_app.command("simulate")
def data_simulate(
    out_file: Path = typer.Option(..., "--out", "-o", help="HDF5 file to write"),
    n: int = typer.Option(SIM.n_systems, help="number of systems (series)"),
    steps: int = typer.Option(SIM.n_steps, help="timesteps per series"),
    t_end: float = typer.Option(SIM.t_end, help="simulated time at the last step (time units)"),
    seed: int = typer.Option(SIM.seed, help="random seed of the parameters"),
    force: Force = False,
) -> None:
    """Simulate damped Lotka-Volterra systems into the HDF5 format."""
    from ..api.tools import simulate_to_file

    p = simulate_to_file(out_file, SimConfig(n_systems=n, n_steps=steps, t_end=t_end, seed=seed), force)
    out.print(f"wrote {n} systems x {steps} steps to {p}")


@data_app.command("inspect")
def data_inspect(
    file: Path = typer.Argument(..., help=".h5 or .csv"),
    plot: Optional[Path] = typer.Option(None, help="save a plot of a few series (.png, .pdf, .svg, .jpg)"),
    n_plot: int = typer.Option(4, help="series to plot"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
    force: Force = False,
) -> None:
    """Validate a dataset and print its shape, value ranges and recognised id/time columns."""
    from ..api.tools import inspect_file

    info = inspect_file(file_spec(file, id_column, time_column, value_columns, fill), plot, n_plot, force)
    print_table(f"{file}",
                [{"field": k, "value": json.dumps(v) if isinstance(v, list) else v} for k, v in info.items()])


@data_app.command("split")
def data_split(
    file: Path = typer.Argument(..., help=".h5 or .csv"),
    out_file: Path = typer.Option(..., "--out", "-o", help="JSON file with split indices"),
    train: float = typer.Option(SPLIT.train, help="share of series for training"),
    val: float = typer.Option(SPLIT.val, help="share of series for validation"),
    test: float = typer.Option(SPLIT.test, help="share of series for testing"),
    seed: int = typer.Option(SPLIT.seed, help="random seed of the split"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
    force: Force = False,
) -> None:
    """Seeded train/val/test split by system; writes indices as JSON."""
    from ..api.tools import split_file

    counts = split_file(file_spec(file, id_column, time_column, value_columns, fill), out_file,
                        SplitConfig(train, val, test, seed), force)
    out.print(f"wrote {out_file}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command("encode")
def encode(
    file: Optional[Path] = typer.Argument(None, help=".h5/.csv; omit to use a simulated series"),
    series: int = typer.Option(0, help="series index"),
    steps: int = typer.Option(3, help="timesteps to show"),
    model: str = typer.Option(MODEL, help=f"whose tokenizer: {MODEL_HELP}"),
    decimals: Decimals = CODEC.decimals,
    scale: Scale = CODEC.scale_mode,
    no_point: NoPoint = False,
    pooled: Pooled = False,
    offset: Offset = False,
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
) -> None:
    """Show the LLMTime text and token ids for the first steps of a series."""
    from ..api.tools import encode_preview

    info = encode_preview(data_spec(file, id_column, time_column, value_columns, fill), series, steps, model,
                          codec_cfg(decimals, scale, no_point, pooled, offset))
    out.print(f"scale ({info['scale_mode']}): x -> (x - beta) / alpha with alpha = {info['alpha']}, "
              f"beta = {info['beta']}  (variables {', '.join(info['variables'])})")
    out.print(f"values = {info['values']}")
    out.print(f"text   = {info['text']}", markup=False)
    out.print(f"tokens = {info['tokens']}", markup=False)
    out.print(f"ids    = {info['ids']}")
    out.print(f"{info['n_tokens']} tokens for {steps} steps ({info['n_tokens'] / max(steps, 1):.1f} per step); "
              f"whole series: {info['series_tokens']} tokens")
