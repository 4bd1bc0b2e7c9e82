"""``flopcast data ...``, ``flopcast encode``, ``flopcast flops``, ``flopcast plan`` and ``flopcast budget ...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .common import (
    CODEC,
    LORA,
    MODEL,
    MODEL_HELP,
    SIM,
    SPLIT,
    Decimals,
    IdColumn,
    NoPoint,
    Scale,
    TimeColumn,
    app,
    budget_app,
    codec_cfg,
    csv_list,
    data_app,
    data_spec,
    err,
    ints,
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
):
    """Simulate damped Lotka-Volterra systems into the HDF5 format."""
    from ..commands import simulate_to_file

    p = simulate_to_file(out_file, n, steps, t_end, seed)
    out.print(f"wrote {n} systems x {steps} steps to {p}")


@data_app.command("inspect")
def data_inspect(
    file: Path = typer.Argument(..., help=".h5 or .csv"),
    plot: Optional[Path] = typer.Option(None, help="save a PNG of a few series"),
    n_plot: int = typer.Option(4, help="series to plot"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
):
    """Validate a dataset and print its shape, value ranges and recognised id/time columns."""
    from ..commands import inspect_file

    info = inspect_file(file, plot, n_plot, id_column, time_column)
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
):
    """Seeded train/val/test split by system; writes indices as JSON."""
    from ..commands import split_file

    counts = split_file(file, out_file, train, val, test, seed, id_column, time_column)
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
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
):
    """Show the LLMTime text and token ids for the first steps of a series."""
    from ..commands import encode_preview

    info = encode_preview(data_spec(file, id_column, time_column), series, steps, model,
                          codec_cfg(decimals, scale, no_point))
    out.print(f"alpha = {info['alpha']:.6g}  ({info['scale_mode']} scale)")
    out.print(f"values = {info['values']}")
    out.print(f"text   = {info['text']}", markup=False)
    out.print(f"tokens = {info['tokens']}", markup=False)
    out.print(f"ids    = {info['ids']}")
    out.print(f"{info['n_tokens']} tokens for {steps} steps ({info['n_tokens'] / max(steps, 1):.1f} per step); "
              f"whole series: {info['series_tokens']} tokens")


@app.command("flops")
def flops_cmd(
    model: str = typer.Option(MODEL, help=f"{MODEL_HELP}, a preset (qwen2.5-0.5b) or a config.json"),
    seq: int = typer.Option(512, help="sequence length S in tokens (prompt length for generate)"),
    batch: int = typer.Option(4, help="batch size B in sequences"),
    rank: int = typer.Option(0, help="LoRA rank (0: no adapter)"),
    targets: str = typer.Option(csv_list(LORA.targets), help="LoRA target modules, comma-separated"),
    mode: str = typer.Option("train", help="train | forward | prefill | generate"),
    new_tokens: int = typer.Option(50, help="tokens to generate (mode generate)"),
    gqa: str = typer.Option("full", help="full (reference: GQA counted as MHA) | actual"),
):
    """Per-component FLOPs of one training step / forward / prefill / generation."""
    from ..commands import flops_breakdown

    br, arch = flops_breakdown(model, seq, batch, rank, tuple(targets.split(",")), mode, new_tokens, gqa)
    print_table(f"{arch.name or model}: {mode}, B={batch}, S={seq}, r={rank}", br.rows(),
                ["component", "flops", "share %"])
    out.print(f"total: {br.total:.4e} FLOPs")


@app.command("plan")
def plan_cmd(
    budget: float = typer.Option(1e17, help="FLOP budget (FLOPs)"),
    model: str = typer.Option(MODEL, help=f"{MODEL_HELP}, a preset (qwen2.5-0.5b) or a config.json"),
    seq: str = typer.Option("128,512,768", help="sequence lengths S in tokens, comma-separated"),
    batch: str = typer.Option("4", help="batch sizes B in sequences, comma-separated"),
    rank: str = typer.Option("2,4,8", help="LoRA ranks, comma-separated"),
    eval_windows: int = typer.Option(0, help="forecast windows evaluated per config (their FLOPs are set aside)"),
):
    """Affordable training steps per (S, B, r) under a budget."""
    from ..commands import plan_table

    rows = plan_table(model, budget, ints(seq), ints(batch), ints(rank), eval_windows)
    print_table(f"{model} under {budget:.3e} FLOPs", rows)


@budget_app.command("init")
def budget_init(ledger: Path = typer.Argument(...), budget: float = typer.Option(..., help="FLOP budget (FLOPs)")):
    """Create a ledger with a budget."""
    from ..config import check_budget
    from ..ledger import Ledger

    check_budget(budget)
    lg = Ledger(ledger, budget)  # an existing ledger keeps its budget: `budget set` changes it
    out.print(f"{ledger}: budget {lg.budget:.3e} FLOPs, {lg.left():.3e} left")


@budget_app.command("set")
def budget_set(ledger: Path = typer.Argument(...), budget: float = typer.Option(..., help="new FLOP budget (FLOPs)")):
    """Change a ledger's budget: raising is always allowed, lowering below what is used or reserved is refused."""
    from ..commands import open_ledger

    lg = open_ledger(ledger)
    old = lg.set_budget(budget)
    out.print(f"{ledger}: budget {old:.3e} -> {lg.budget:.3e} FLOPs, {lg.left():.3e} left")


@budget_app.command("release")
def budget_release(ledger: Path = typer.Argument(...),
                   id: int = typer.Argument(..., help="experiment id (budget show)")):
    """Settle an open reservation by hand with the FLOPs it reported (e.g. one held by a process on another host)."""
    from ..commands import open_ledger

    e = open_ledger(ledger).release(id)
    out.print(f"{ledger}: released {e.id} ({e.name}): {e.flops_used:.3e} FLOPs used, "
              f"{e.flops_planned - e.flops_used:.3e} freed")


@budget_app.command("show")
def budget_show(ledger: Path = typer.Argument(...)):
    """Print the ledger as a table with totals."""
    from ..commands import open_ledger

    lg = open_ledger(ledger)
    cols = ["id", "name", "kind", "model", "seq", "batch", "rank", "steps", "flops_planned", "flops_used", "share",
            "wall_s", "status", "owner_pid"]
    print_table(str(ledger), lg.rows(), cols)
    s = lg.summary()
    out.print(f"budget {s['budget']:.3e} | used {s['used']:.3e} ({100 * s['used_share']:.2f}%) | "
              f"reserved {s['reserved']:.3e} | left {s['left']:.3e}")


@budget_app.command("export")
def budget_export(ledger: Path = typer.Argument(...),
                  out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV file (default: stdout)")):
    """Export the ledger as CSV (stdout or --out)."""
    from ..commands import ensure_writable, open_ledger

    text = open_ledger(ledger).to_csv()
    if out_file:
        ensure_writable(out_file)
        out_file.write_text(text)
        err.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)
