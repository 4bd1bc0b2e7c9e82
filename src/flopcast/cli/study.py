"""``flopcast run``, ``flopcast train``, ``flopcast sweep`` and ``flopcast report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import FlopcastError
from .common import (
    LORA,
    MODEL,
    RESTART_HELP,
    TRAIN,
    BatchSize,
    BudgetOpt,
    DataOpt,
    IdColumn,
    MaxSeries,
    ModelOpt,
    SeqLen,
    TimeColumn,
    app,
    floats,
    ints,
    names,
    out,
    print_table,
)

QUICK_CONTEXTS = "128,512"  # train and sweep evaluate at two context lengths unless told otherwise
SWEEP_STEPS = 500


@app.command("run")
def run_cmd(
    plan: Path = typer.Argument(..., help="plan TOML (see plans/)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="study directory (default runs/<plan name>)"),
    only: Optional[str] = typer.Option(None, help="comma-separated stages to run"),
    restart: Optional[str] = typer.Option(None, help=RESTART_HELP),
):
    """Run (or resume) a whole study: every stage inside one FLOP budget, then the report."""
    from ..pipeline import run_plan
    from ..plan import load_plan

    p = load_plan(plan)
    d = out_dir or Path("runs") / p.name
    _show_study(run_plan(p, d, only=list(names(only)) or None, restart=names(restart)), d)


def _show_study(summary, d: Path) -> None:
    rows = []
    for name, st in summary.stages.items():
        best = json.dumps({"lr": st.best.lr, "rank": st.best.rank, "seq_len": st.best.seq_len}) if st.best else ""
        for S in st.test.contexts if st.test else ():
            m = st.test.score(S)
            rows.append({"stage": name, "S": S, "MSE": m.mse if m else None, "MAE": m.mae if m else None, "best": best})
    if rows:
        print_table(f"{summary.plan}: test metrics", rows)
    led = summary.ledger
    out.print(f"FLOPs used {led['used']:.3e} of {led['budget']:.3e} ({100 * led['used_share']:.2f}%)")
    out.print(f"report: {d / 'report.md'}")


@app.command("train")
def train_cmd(
    model: ModelOpt = MODEL,
    data: DataOpt = None,
    steps: int = typer.Option(TRAIN.steps, help="optimizer steps"),
    lr: float = typer.Option(TRAIN.lr, help="peak learning rate"),
    rank: int = typer.Option(LORA.rank, help="LoRA rank"),
    seq_len: SeqLen = TRAIN.seq_len,
    batch_size: BatchSize = TRAIN.batch_size,
    schedule: str = typer.Option(TRAIN.schedule, help="constant | cosine | linear"),
    budget: BudgetOpt = 1e17,
    head: str = typer.Option(TRAIN.head, help="LM head in training: full | numeric (softmax over the series' tokens)"),
    context: str = typer.Option(QUICK_CONTEXTS, help="test evaluation context lengths S in tokens, comma-separated"),
    max_series: MaxSeries = None,
    out_dir: Path = typer.Option(Path("runs/train"), "--out", "-o", help="study directory"),
    restart: bool = typer.Option(False, "--restart", help="archive this directory's earlier run and train again"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
):
    """Train one LoRA adapter (resumable), then evaluate it on the test split."""
    from ..pipeline import run_plan
    from ..plan import one_stage_plan

    p = one_stage_plan("train", {"name": "train", "kind": "train", "steps": steps}, model, data, budget,
                       {"lr": lr, "seq_len": seq_len, "batch_size": batch_size, "schedule": schedule, "head": head},
                       {"rank": rank}, ints(context), max_series, id_column, time_column)
    _show_study(run_plan(p, out_dir, restart=("train",) if restart else ()), out_dir)


@app.command("sweep")
def sweep_cmd(
    model: ModelOpt = MODEL,
    data: DataOpt = None,
    lr: str = typer.Option("1e-5,5e-5,1e-4", help="learning rates, comma-separated"),
    rank: str = typer.Option("2,4,8", help="LoRA ranks, comma-separated"),
    steps: int = typer.Option(SWEEP_STEPS, help="optimizer steps per run"),
    seq_len: SeqLen = TRAIN.seq_len,
    batch_size: BatchSize = TRAIN.batch_size,
    budget: BudgetOpt = 1e17,
    context: str = typer.Option(QUICK_CONTEXTS, help="test evaluation context lengths S in tokens, comma-separated"),
    max_series: MaxSeries = None,
    out_dir: Path = typer.Option(Path("runs/sweep"), "--out", "-o", help="study directory"),
    restart: bool = typer.Option(False, "--restart", help="archive this directory's earlier grid and run it again"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
):
    """LR x rank grid (lowest validation loss wins), then test evaluation of the best run."""
    from ..pipeline import run_plan
    from ..plan import one_stage_plan

    p = one_stage_plan("sweep", {"name": "grid", "kind": "grid", "lr": floats(lr), "rank": ints(rank), "steps": steps},
                       model, data, budget, {"seq_len": seq_len,
                                             "batch_size": batch_size}, {}, ints(context), max_series,
                       id_column, time_column)
    _show_study(run_plan(p, out_dir, restart=("grid",) if restart else ()), out_dir)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="study directory written by `flopcast run`")):
    """(Re)write RUN_DIR/report.md with tables and figures."""
    from ..report import write_report

    if not (run_dir / "summary.json").is_file():
        raise FlopcastError(f"{run_dir}: no summary.json (run `flopcast run PLAN.toml --out {run_dir}` first)")
    out.print(f"wrote {write_report(run_dir)}")
