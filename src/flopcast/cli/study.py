"""``flopcast run``, ``flopcast train``, ``flopcast sweep`` and ``flopcast report``: studies.

``train`` and ``sweep`` are one-stage studies: their flags become a plan (:func:`_one_stage`) that
:func:`flopcast.api.study.run_study` runs, as ``run`` runs a plan file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..study.plan import load_plan
from ..study.report import write_report
from .common import (
    EVAL,
    LORA,
    MODEL,
    RESTART_HELP,
    SPLIT,
    TRAIN,
    BatchSize,
    DataOpt,
    Fill,
    IdColumn,
    MaxSeries,
    ModelOpt,
    SeqLen,
    SplitBy,
    TestWindows,
    TimeColumn,
    ValueColumns,
    app,
    floats,
    ints,
    names,
    out,
    print_table,
)

QUICK_CONTEXTS = "128,512"  # train and sweep evaluate at two context lengths unless told otherwise
SWEEP_STEPS = 500
ONE_STAGE_BUDGET = 1e17  # a new train or sweep directory's budget unless --budget says otherwise
OneStageBudget = Annotated[Optional[float], typer.Option(
    help="ledger budget (FLOPs); default: what the directory's study last ran with, 1e17 for a new one")]


@app.command("run")
def run_cmd(
    plan: Path = typer.Argument(..., help="plan TOML (see plans/)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="study directory (default runs/<plan name>)"),
    only: Optional[str] = typer.Option(None, help="comma-separated stages to run"),
    restart: Optional[str] = typer.Option(None, help=RESTART_HELP),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]",
                                      help="train each stage's runs in parallel on Ray: a local instance, or the "
                                      "cluster at ADDRESS ('auto': the running one); needs flopcast[ray]"),
) -> None:
    """Run (or resume) a whole study: every stage inside one FLOP budget, then the report."""
    from ..api.study import run_study

    p = load_plan(plan)
    d = out_dir or Path("runs") / p.name
    executor, address = ("ray", None if ray == "local" else ray) if ray else ("local", None)
    _show_study(run_study(p, d, only=list(names(only)) or None, restart=names(restart), executor=executor,
                          address=address), d)


def _show_study(summary: Any, d: Path) -> None:
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
    budget: OneStageBudget = None,
    head: str = typer.Option(TRAIN.head, help="LM head in training: full | numeric (softmax over the series' tokens)"),
    context: str = typer.Option(QUICK_CONTEXTS, help="test evaluation context lengths S in tokens, comma-separated"),
    max_series: MaxSeries = None,
    out_dir: Path = typer.Option(Path("runs/train"), "--out", "-o", help="study directory"),
    restart: bool = typer.Option(False, "--restart", help="archive this directory's earlier run and train again"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
    split_by: SplitBy = SPLIT.by,
    test_windows: TestWindows = SPLIT.test_windows,
    horizon: int = typer.Option(EVAL.horizon, help="timesteps forecast and scored by the test evaluation"),
    processes: int = typer.Option(TRAIN.processes, help="train on this many processes or GPUs (accelerate launch; "
                                  "CPU processes with gloo where there are no GPUs)"),
) -> None:
    """Train one LoRA adapter (resumable), then evaluate it on the test split."""
    from ..api.study import run_study

    plan = _one_stage("train", {"name": "train", "kind": "train", "steps": steps}, model, budget_for(out_dir, budget),
                      _data_table(data, id_column, time_column, value_columns, fill),
                      _eval_table(context, max_series, horizon), split={"by": split_by, "test_windows": test_windows},
                      train={"lr": lr, "seq_len": seq_len, "batch_size": batch_size, "schedule": schedule,
                             "head": head, "processes": processes}, lora={"rank": rank})
    _show_study(run_study(plan, out_dir, restart=("train",) if restart else ()), out_dir)


@app.command("sweep")
def sweep_cmd(
    model: ModelOpt = MODEL,
    data: DataOpt = None,
    lr: str = typer.Option("1e-5,5e-5,1e-4", help="learning rates, comma-separated"),
    rank: str = typer.Option("2,4,8", help="LoRA ranks, comma-separated"),
    steps: int = typer.Option(SWEEP_STEPS, help="optimizer steps per run"),
    seq_len: SeqLen = TRAIN.seq_len,
    batch_size: BatchSize = TRAIN.batch_size,
    budget: OneStageBudget = None,
    context: str = typer.Option(QUICK_CONTEXTS, help="test evaluation context lengths S in tokens, comma-separated"),
    max_series: MaxSeries = None,
    out_dir: Path = typer.Option(Path("runs/sweep"), "--out", "-o", help="study directory"),
    restart: bool = typer.Option(False, "--restart", help="archive this directory's earlier grid and run it again"),
    id_column: IdColumn = None,
    time_column: TimeColumn = None,
    value_columns: ValueColumns = None,
    fill: Fill = None,
    split_by: SplitBy = SPLIT.by,
    test_windows: TestWindows = SPLIT.test_windows,
    horizon: int = typer.Option(EVAL.horizon, help="timesteps forecast and scored by the test evaluation"),
) -> None:
    """LR x rank grid (lowest validation loss wins), then test evaluation of the best run."""
    from ..api.study import run_study

    plan = _one_stage("sweep", {"name": "grid", "kind": "grid", "lr": floats(lr), "rank": ints(rank), "steps": steps},
                      model, budget_for(out_dir, budget),
                      _data_table(data, id_column, time_column, value_columns, fill),
                      _eval_table(context, max_series, horizon), split={"by": split_by, "test_windows": test_windows},
                      train={"seq_len": seq_len, "batch_size": batch_size})
    _show_study(run_study(plan, out_dir, restart=("grid",) if restart else ()), out_dir)


def budget_for(out_dir: Path, budget: Optional[float]) -> float:
    """The budget given, else the one the directory's study last ran with, else :data:`ONE_STAGE_BUDGET`: running
    ``train`` or ``sweep`` again without ``--budget`` never changes a study's budget."""
    from ..api.study import recorded_budget

    if budget is not None:
        return budget
    recorded = recorded_budget(out_dir)
    return ONE_STAGE_BUDGET if recorded is None else recorded


def _one_stage(name: str, stage: dict[str, Any], model: str, budget: float, data: dict[str, Any] | None,
               evaluation: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    """The plan behind ``train`` and ``sweep``: one stage, the plan's defaults elsewhere."""
    plan = {"name": name, "budget": budget, "model": {"name": model}, "eval": evaluation, "stages": [stage], **sections}
    return {**plan, "data": data} if data is not None else plan


def _data_table(path: Optional[Path], id_column: Optional[str], time_column: Optional[str],
                value_columns: Optional[str], fill: Optional[str]) -> dict[str, Any] | None:
    if path is None:
        return None
    columns = {"id_column": id_column, "time_column": time_column, "value_columns": list(names(value_columns)) or None,
               "fill": fill}
    return {"path": str(path), **{k: v for k, v in columns.items() if v is not None}}


def _eval_table(context: str, max_series: Optional[int], horizon: int) -> dict[str, Any]:
    return {"contexts": ints(context), "horizon": horizon,
            **({"max_series": max_series} if max_series is not None else {})}


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="study directory written by `flopcast run`")) -> None:
    """(Re)write RUN_DIR/report.md with tables and figures."""
    out.print(f"wrote {write_report(run_dir)}")
