"""``flopcast flops``, ``flopcast plan`` and ``flopcast budget init|set|release|show|export``: counting FLOPs,
planning a budget, and the ledger that keeps it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import LORA, MODEL, MODEL_HELP, Force, app, budget_app, csv_list, err, ints, out, print_table


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
) -> None:
    """Per-component FLOPs of one training step / forward / prefill / generation."""
    from ..api.tools import flops_breakdown

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
) -> None:
    """Affordable training steps per (S, B, r) under a budget."""
    from ..api.tools import plan_table

    rows = plan_table(model, budget, ints(seq), ints(batch), ints(rank), eval_windows)
    print_table(f"{model} under {budget:.3e} FLOPs", rows)


@budget_app.command("init")
def budget_init(ledger: Path = typer.Argument(...), budget: float = typer.Option(..., help="FLOP budget (FLOPs)")
                ) -> None:
    """Create a ledger with a budget."""
    from ..api.tools import init_ledger

    lg = init_ledger(ledger, budget)  # an existing ledger keeps its budget: `budget set` changes it
    out.print(f"{ledger}: budget {lg.budget:.3e} FLOPs, {lg.left():.3e} left")


@budget_app.command("set")
def budget_set(ledger: Path = typer.Argument(...), budget: float = typer.Option(..., help="new FLOP budget (FLOPs)")
               ) -> None:
    """Change a ledger's budget: raising is always allowed, lowering below what is used or reserved is refused."""
    from ..api.tools import open_ledger

    lg = open_ledger(ledger)
    old = lg.set_budget(budget)
    out.print(f"{ledger}: budget {old:.3e} -> {lg.budget:.3e} FLOPs, {lg.left():.3e} left")


@budget_app.command("release")
def budget_release(ledger: Path = typer.Argument(...),
                   id: int = typer.Argument(..., help="experiment id (budget show)")) -> None:
    """Settle an open reservation by hand with the FLOPs it reported (e.g. one held by a process on another host)."""
    from ..api.tools import open_ledger

    e = open_ledger(ledger).release(id)
    out.print(f"{ledger}: released {e.id} ({e.name}): {e.flops_used:.3e} FLOPs used, "
              f"{e.flops_planned - e.flops_used:.3e} freed")


@budget_app.command("rebuild")
def budget_rebuild(directory: Path = typer.Argument(..., help="study, run or evaluation directory"),
                   budget: Optional[float] = typer.Option(None, help="FLOP budget (default: the study's plan)"),
                   force: bool = typer.Option(False, "--force", help="rebuild even where a ledger exists (it is kept "
                                              "beside, renamed ledger.db.old-<time>)")) -> None:
    """Make DIR/ledger.db again from the FLOPs DIR's runs and evaluations recorded (after it was lost)."""
    from ..api.tools import rebuild_ledger

    r = rebuild_ledger(directory, budget, force)
    kept = f"; the old one is kept as {r['kept']}" if r["kept"] else ""
    out.print(f"{r['ledger']}: rebuilt {r['rows']} rows, {r['flops']:.3e} FLOPs used of {r['budget']:.3e}{kept}")


@budget_app.command("show")
def budget_show(ledger: Path = typer.Argument(...)) -> None:
    """Print the ledger as a table with totals."""
    from ..api.tools import open_ledger

    lg = open_ledger(ledger)
    cols = ["id", "name", "kind", "model", "seq", "batch", "rank", "steps", "flops_planned", "flops_used", "share",
            "wall_s", "status", "owner_pid"]
    print_table(str(ledger), lg.rows(), cols)
    s = lg.summary()
    out.print(f"budget {s['budget']:.3e} | used {s['used']:.3e} ({100 * s['used_share']:.2f}%) | "
              f"reserved {s['reserved']:.3e} | left {s['left']:.3e}")


@budget_app.command("export")
def budget_export(ledger: Path = typer.Argument(...),
                  out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV file (default: stdout)"),
                  force: Force = False) -> None:
    """Export the ledger as CSV (stdout or --out)."""
    from ..api.tools import export_ledger

    text = export_ledger(ledger, out_file, force)
    if out_file:
        err.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)
