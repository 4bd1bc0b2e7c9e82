"""What every command shares: the typer apps, the consoles, option defaults taken from the configs, parsing."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ..config import (
    CodecConfig,
    DataSpec,
    EvalConfig,
    ForecastConfig,
    LoraSpec,
    ModelSpec,
    SimConfig,
    SplitConfig,
    TrainConfig,
)
from ..display import number
from ..errors import FlopcastError
from .verbosity import NORMAL, QUIET, VERBOSE, set_verbosity


class Stopped(Exception):
    """Carries Ctrl-C or SIGTERM (the ``KeyboardInterrupt`` in ``interrupt``) out of typer to :func:`main`, which
    exits 128 + its signal: typer itself turns any ``KeyboardInterrupt`` into exit code 130."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(str(interrupt))
        self.interrupt = interrupt


class _Group(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise Stopped(e) from e


app = typer.Typer(help="flopcast: FLOP-budgeted LoRA forecasting of numeric time series with small LMs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=_Group)
data_app = typer.Typer(help="Create, inspect and split datasets.", no_args_is_help=True)
budget_app = typer.Typer(help="The FLOP budget ledger of a study.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(budget_app, name="budget")

# wide tables when piped or captured (rich defaults to 80 columns without a terminal)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)

# option defaults are the configs' own defaults
CODEC, EVAL, FORECAST, LORA = CodecConfig(), EvalConfig(), ForecastConfig(), LoraSpec()
SIM, SPLIT, TRAIN = SimConfig(), SplitConfig(), TrainConfig()
MODEL = ModelSpec().name
MODEL_HELP = f"built-in name ({MODEL}, tiny-qwen2, tiny-llama), Hugging Face id or local directory"
ID_HELP = "CSV column naming each row's series (default: a column named unique_id, id, item_id or series; '' for none)"
TIME_HELP = ("CSV column with each row's time, numbers or dates (default: a column named ds, timestamp, time, date, "
             "datetime, t, year or period; '' for none)")
VALUES_HELP = "CSV columns that are the variables, comma-separated (default: every other numeric column; y in the " \
              "unique_id, ds, y layout)"
FILL_HELP = "fill missing values (empty cells): linear | ffill (default: refuse them, naming the first)"
RESTART_HELP = ("comma-separated stages to run again from scratch: their files move to OUT/archive/ (their FLOPs "
                "stay in the ledger)")


@app.callback()
def _verbosity(quiet: bool = typer.Option(False, "--quiet", "-q", help="results and errors only: no progress bars, "
                                          "no warnings"),
               verbose: bool = typer.Option(False, "--verbose", "-v", help="library warnings and info logs too")
               ) -> None:
    """Global options: how much flopcast and the libraries it uses print."""
    set_verbosity(QUIET if quiet else VERBOSE if verbose else NORMAL)


# options several commands share (typer reads the default from the parameter, the rest from here)
ModelOpt = Annotated[str, typer.Option(help=MODEL_HELP)]
AdapterBase = Annotated[Optional[str], typer.Option(
    "--model", help=f"{MODEL_HELP} (default: the --adapter's base model, else {MODEL})")]
DataOpt = Annotated[Optional[Path], typer.Option(help=".h5/.csv (default: simulated systems)")]
IdColumn = Annotated[Optional[str], typer.Option(help=ID_HELP)]
TimeColumn = Annotated[Optional[str], typer.Option(help=TIME_HELP)]
ValueColumns = Annotated[Optional[str], typer.Option(help=VALUES_HELP)]
Fill = Annotated[Optional[str], typer.Option(help=FILL_HELP)]
SplitBy = Annotated[str, typer.Option(help="series: whole series to train/val/test (seeded shares); time: every "
                                      "series' last --test-windows horizons are tested, the horizon before validates")]
TestWindows = Annotated[int, typer.Option(help="with --split-by time: rolling origins tested per series, one every "
                                          "horizon steps")]
Season = Annotated[Optional[int], typer.Option(help="MASE's seasonal period (default: from the timestamps' "
                                               "frequency, e.g. 12 for monthly data; else 1)")]
Pooled = Annotated[bool, typer.Option("--pooled", help="one scale for all variables (the reference study's); "
                                      "default: each variable its own")]
Offset = Annotated[bool, typer.Option("--offset", help="shift each variable by LLMTime's offset before scaling "
                                      "(min - 0.3 x range)")]
Decimals = Annotated[int, typer.Option(help="decimals of each value")]
Scale = Annotated[str, typer.Option(help="global | per_series | none")]
NoPoint = Annotated[bool, typer.Option("--no-point", help="drop the decimal point (LLMTime style)")]
SplitOpt = Annotated[str, typer.Option(help="train | val | test")]
Contexts = Annotated[str, typer.Option(help="context lengths S in tokens, comma-separated")]
Protocol = Annotated[str, typer.Option(help="aligned | seed (the reference's protocol)")]
Horizon = Annotated[int, typer.Option(help="timesteps forecast and scored")]
Stride = Annotated[int, typer.Option(help="aligned: timesteps between cut points")]
MaxSeries = Annotated[Optional[int], typer.Option(help="evaluate only the first N series of the split (default: all)")]
Baselines = Annotated[str, typer.Option(help="baselines, comma-separated ('' for none)")]
SeqLen = Annotated[int, typer.Option(help="training sequence length S in tokens")]
BatchSize = Annotated[int, typer.Option(help="sequences per optimizer step")]
Force = Annotated[bool, typer.Option("--force", help="replace an existing output file (never an input or a ledger)")]


def ints(text: str) -> list[int]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or not all(v.is_integer() for v in vals):
        raise FlopcastError(f"expected comma-separated integers, got {text!r}")
    return [int(v) for v in vals]


def floats(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals:
        raise FlopcastError(f"expected comma-separated numbers, got {text!r}")
    return vals


def csv_list(values: Iterable[object]) -> str:
    return ",".join(str(v) for v in values)


def names(text: Optional[str]) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else ()


def file_spec(path: Path, id_column: Optional[str], time_column: Optional[str], value_columns: Optional[str] = None,
              fill: Optional[str] = None) -> DataSpec:
    return DataSpec(str(path), id_column, time_column, names(value_columns) or None, fill)


def data_spec(path: Optional[Path], id_column: Optional[str], time_column: Optional[str],
              value_columns: Optional[str] = None, fill: Optional[str] = None) -> DataSpec | None:
    return file_spec(path, id_column, time_column, value_columns, fill) if path is not None else None


def codec_cfg(decimals: int, scale: str, no_point: bool, pooled: bool = False, offset: bool = False) -> CodecConfig:
    return CodecConfig(decimals=decimals, scale_mode=scale, drop_decimal_point=no_point, per_variable=not pooled,
                       offset=offset)


def print_table(title: str, rows: list[dict], columns: list[str] | None = None) -> None:
    cols = columns or (list(rows[0]) if rows else [])
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        t.add_row(*[number(r.get(c), missing="") for c in cols])
    out.print(t)
