"""Command-line interface: a thin typer layer, one library call per command.

Errors the user can fix (:class:`FlopcastError`, I/O errors) print one line and exit with 2;
set ``FLOPCAST_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import FlopcastError

app = typer.Typer(help="flopcast: FLOP-budgeted LoRA forecasting of numeric time series with small LMs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Create, inspect and split datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)


def _print_table(title: str, rows: list[dict], columns: list[str] | None = None) -> None:
    cols = columns or (list(rows[0]) if rows else [])
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        t.add_row(*[_fmt(r.get(c)) for c in cols])
    out.print(t)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(v, int) and abs(v) >= 10**6:
        return f"{v:.3e}"
    return "" if v is None else str(v)


# ----------------------------------------------------------------------------- data

@data_app.command("simulate")
def data_simulate(
    out_file: Path = typer.Option(..., "--out", "-o", help="HDF5 file to write"),
    n: int = typer.Option(1000, help="number of systems"),
    steps: int = typer.Option(100, help="timesteps per series"),
    t_end: float = typer.Option(200.0, help="end time"),
    seed: int = typer.Option(0),
):
    """Simulate damped Lotka-Volterra systems into the HDF5 format."""
    from .commands import simulate_to_file

    p = simulate_to_file(out_file, n, steps, t_end, seed)
    out.print(f"wrote {n} systems x {steps} steps to {p}")


@data_app.command("inspect")
def data_inspect(
    file: Path = typer.Argument(..., help=".h5 or .csv"),
    plot: Optional[Path] = typer.Option(None, help="save a PNG of a few series"),
    n_plot: int = typer.Option(4, help="series to plot"),
):
    """Validate a dataset and print its shape and value ranges."""
    from .commands import inspect_file

    info = inspect_file(file, plot, n_plot)
    _print_table(f"{file}", [{"field": k, "value": json.dumps(v) if isinstance(v, list) else v} for k, v in info.items()])


@data_app.command("split")
def data_split(
    file: Path = typer.Argument(..., help=".h5 or .csv"),
    out_file: Path = typer.Option(..., "--out", "-o", help="JSON file with split indices"),
    train: float = 0.8, val: float = 0.1, test: float = 0.1, seed: int = 0,
):
    """Seeded train/val/test split by system; writes indices as JSON."""
    from .commands import split_file

    counts = split_file(file, out_file, train, val, test, seed)
    out.print(f"wrote {out_file}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


# ----------------------------------------------------------------------------- encode

@app.command("encode")
def encode(
    file: Optional[Path] = typer.Argument(None, help=".h5/.csv; omit to use a simulated series"),
    series: int = typer.Option(0, help="series index"),
    steps: int = typer.Option(3, help="timesteps to show"),
    model: str = typer.Option("tiny-qwen2", help="tokenizer of this model (smollm2-135m, HF id, dir, tiny-qwen2)"),
    decimals: int = 2,
    scale: str = typer.Option("global", help="global | per_series | none"),
    no_point: bool = typer.Option(False, "--no-point", help="drop the decimal point (LLMTime style)"),
):
    """Show the LLMTime text and token ids for the first steps of a series."""
    from .commands import encode_preview

    info = encode_preview(file, series, steps, model, decimals, scale, no_point)
    out.print(f"alpha = {info['alpha']:.6g}  ({info['scale_mode']} scale)")
    out.print(f"values = {info['values']}")
    out.print(f"text   = {info['text']}", markup=False)
    out.print(f"tokens = {info['tokens']}", markup=False)
    out.print(f"ids    = {info['ids']}")
    out.print(f"{info['n_tokens']} tokens for {steps} steps ({info['n_tokens'] / max(steps, 1):.1f} per step); "
              f"whole series: {info['series_tokens']} tokens")


# ----------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising for user errors."""
    import os

    try:
        app(args=argv, prog_name="flopcast")  # standalone: usage errors print and raise SystemExit
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except FlopcastError as e:
        if os.environ.get("FLOPCAST_DEBUG"):
            raise
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except (OSError, ValueError) as e:
        if os.environ.get("FLOPCAST_DEBUG"):
            raise
        err.print(f"error: {type(e).__name__}: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def run() -> None:
    sys.exit(main())
