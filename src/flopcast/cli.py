"""Command-line interface: a thin typer layer, one library call per command.

Errors the user can fix (:class:`FlopcastError`) print one line and exit with 2 (``FLOPCAST_DEBUG=1``
shows the traceback); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .display import number
from .errors import FlopcastError

app = typer.Typer(help="flopcast: FLOP-budgeted LoRA forecasting of numeric time series with small LMs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Create, inspect and split datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
budget_app = typer.Typer(help="The FLOP budget ledger of a study.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")

# wide tables when piped or captured (rich defaults to 80 columns without a terminal)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)


RESTART_HELP = ("comma-separated stages to run again from scratch: their files move to OUT/archive/ (their FLOPs "
                "stay in the ledger)")
ID_HELP = "CSV column naming each row's series (default: a column named id, series or item_id; '' for none)"
TIME_HELP = "CSV column with each row's time (default: a column named time, t, timestamp or date; '' for none)"


def _data(path: Optional[Path], id_column: Optional[str], time_column: Optional[str]):
    from .config import DataSpec

    return DataSpec(str(path), id_column, time_column) if path is not None else None


def _names(text: Optional[str]) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else ()


def _print_table(title: str, rows: list[dict], columns: list[str] | None = None) -> None:
    cols = columns or (list(rows[0]) if rows else [])
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        t.add_row(*[number(r.get(c), missing="") for c in cols])
    out.print(t)


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
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """Validate a dataset and print its shape, value ranges and recognised id/time columns."""
    from .commands import inspect_file

    info = inspect_file(file, plot, n_plot, id_column, time_column)
    _print_table(f"{file}", [{"field": k, "value": json.dumps(v) if isinstance(v, list) else v} for k, v in info.items()])


@data_app.command("split")
def data_split(
    file: Path = typer.Argument(..., help=".h5 or .csv"),
    out_file: Path = typer.Option(..., "--out", "-o", help="JSON file with split indices"),
    train: float = 0.8, val: float = 0.1, test: float = 0.1, seed: int = 0,
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """Seeded train/val/test split by system; writes indices as JSON."""
    from .commands import split_file

    counts = split_file(file, out_file, train, val, test, seed, id_column, time_column)
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
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """Show the LLMTime text and token ids for the first steps of a series."""
    from .commands import encode_preview

    info = encode_preview(_data(file, id_column, time_column), series, steps, model, _codec_cfg(decimals, scale, no_point))
    out.print(f"alpha = {info['alpha']:.6g}  ({info['scale_mode']} scale)")
    out.print(f"values = {info['values']}")
    out.print(f"text   = {info['text']}", markup=False)
    out.print(f"tokens = {info['tokens']}", markup=False)
    out.print(f"ids    = {info['ids']}")
    out.print(f"{info['n_tokens']} tokens for {steps} steps ({info['n_tokens'] / max(steps, 1):.1f} per step); "
              f"whole series: {info['series_tokens']} tokens")


# ----------------------------------------------------------------------------- evaluation and forecasting

def _codec_cfg(decimals: int, scale: str, no_point: bool):
    from .config import CodecConfig

    return CodecConfig(decimals=decimals, scale_mode=scale, drop_decimal_point=no_point)


def _eval_cfg(context: str, protocol: str, horizon: int, split: str, max_series: Optional[int], stride: int,
              baselines: str, batch_size: int):
    from .config import EvalConfig

    return EvalConfig(protocol=protocol, contexts=tuple(_ints(context)), horizon=horizon, split=split,
                      max_series=max_series, stride=stride, batch_size=batch_size,
                      baselines=tuple(b for b in baselines.split(",") if b))


def _show_eval(results, out_dir: Path) -> None:
    _print_table(f"{results.model or 'baselines'} -- protocol {results.protocol}", results.rows())
    out.print(f"results: {out_dir}/metrics.json, windows.csv, plots")


@app.command("eval")
def eval_cmd(
    model: str = typer.Option("smollm2-135m", help="smollm2-135m, tiny-*, HF id or local dir"),
    adapter: Optional[Path] = typer.Option(None, help="LoRA adapter directory"),
    data: Optional[Path] = typer.Option(None, help=".h5/.csv (default: simulated systems)"),
    split: str = typer.Option("test", help="train | val | test"),
    context: str = typer.Option("128,512,768", help="context lengths S in tokens"),
    protocol: str = typer.Option("aligned", help="aligned | seed (the reference's protocol)"),
    horizon: int = typer.Option(5, help="steps forecast and scored"),
    stride: int = typer.Option(10, help="aligned: steps between cut points"),
    max_series: Optional[int] = typer.Option(None, help="evaluate only the first N series of the split"),
    baselines: str = typer.Option("persistence,linear,lv_ode", help="comma-separated, '' for none"),
    batch_size: int = typer.Option(16),
    decimals: int = 2, scale: str = "global", no_point: bool = typer.Option(False, "--no-point"),
    out_dir: Path = typer.Option(Path("runs/eval"), "--out", "-o"),
    ledger: Optional[Path] = typer.Option(None, help="charge FLOPs to this ledger"),
    budget: Optional[float] = typer.Option(None, help="budget when creating the ledger"),
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """Evaluate a model (and baselines) on a split: MSE/MAE with CIs, parse failures, FLOPs, plots."""
    from .commands import run_eval

    cfg = _eval_cfg(context, protocol, horizon, split, max_series, stride, baselines, batch_size)
    res = run_eval(model, _data(data, id_column, time_column), cfg, out_dir, adapter, _codec_cfg(decimals, scale, no_point),
                   ledger, budget)
    _show_eval(res, out_dir)


@app.command("baselines")
def baselines_cmd(
    data: Optional[Path] = typer.Option(None, help=".h5/.csv (default: simulated systems)"),
    split: str = "test",
    context: str = typer.Option("128,512,768"),
    protocol: str = typer.Option("aligned"),
    horizon: int = 5, stride: int = 10,
    max_series: Optional[int] = None,
    baselines: str = typer.Option("persistence,linear,lv_ode"),
    tokenizer: str = typer.Option("smollm2-135m", help="tokenizer that defines the context windows"),
    decimals: int = 2, scale: str = "global", no_point: bool = typer.Option(False, "--no-point"),
    out_dir: Path = typer.Option(Path("runs/baselines"), "--out", "-o"),
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """Score the persistence / linear-drift / Lotka-Volterra-ODE baselines on the same windows as eval."""
    from .commands import run_eval

    cfg = _eval_cfg(context, protocol, horizon, split, max_series, stride, baselines, 16)
    res = run_eval(tokenizer, _data(data, id_column, time_column), cfg, out_dir, None, _codec_cfg(decimals, scale, no_point), baselines_only=True)
    _show_eval(res, out_dir)


@app.command("forecast")
def forecast_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="series as CSV (one column per variable) or .h5"),
    model: str = typer.Option("smollm2-135m"),
    adapter: Optional[Path] = typer.Option(None),
    steps: int = typer.Option(5, help="steps to forecast"),
    samples: int = typer.Option(1, help=">1: sample n forecasts -> median and 10/50/90% quantiles"),
    context_tokens: Optional[int] = typer.Option(None, help="keep only the last whole steps fitting in N tokens"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="write the forecast as CSV"),
    plot: Optional[Path] = typer.Option(None, help="save a PNG of context + forecast"),
    seed: int = 0,
    ledger: Optional[Path] = typer.Option(None, help="charge the FLOPs to this ledger"),
    budget: Optional[float] = typer.Option(None, help="budget when creating the ledger"),
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """Forecast the next steps of your own series."""
    from .commands import run_forecast

    res = run_forecast(model, _data(input, id_column, time_column), steps, adapter, samples, context_tokens, out_file, plot,
                       seed=seed, ledger_path=ledger, budget=budget)
    _print_table(f"forecast ({model})", res["rows"])
    if res["parse_failure_rate"]:
        err.print(f"warning: {100 * res['parse_failure_rate']:.1f}% of forecasts did not parse completely")
    if res["capped_rate"]:
        err.print(f"warning: {100 * res['capped_rate']:.1f}% of forecasts reached the decoder's cap of "
                  f"{res['int_digits']} integer digits (10x the largest value in their context)")


@app.command("run")
def run_cmd(
    plan: Path = typer.Argument(..., help="plan TOML (see plans/)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="study directory (default runs/<plan name>)"),
    only: Optional[str] = typer.Option(None, help="comma-separated stages to run"),
    restart: Optional[str] = typer.Option(None, help=RESTART_HELP),
):
    """Run (or resume) a whole study: every stage inside one FLOP budget, then the report."""
    from .pipeline import run_plan
    from .plan import load_plan

    p = load_plan(plan)
    d = out_dir or Path("runs") / p.name
    summary = run_plan(p, d, only=only.split(",") if only else None, restart=_names(restart))
    _show_study(summary, d)



def _show_study(summary, d: Path) -> None:
    rows = []
    for name, st in summary.stages.items():
        best = json.dumps({"lr": st.best.lr, "rank": st.best.rank, "seq_len": st.best.seq_len}) if st.best else ""
        for S in st.test.contexts if st.test else ():
            m = st.test.score(S)
            rows.append({"stage": name, "S": S, "MSE": m.mse if m else None, "MAE": m.mae if m else None, "best": best})
    if rows:
        _print_table(f"{summary.plan}: test metrics", rows)
    led = summary.ledger
    out.print(f"FLOPs used {led['used']:.3e} of {led['budget']:.3e} ({100 * led['used_share']:.2f}%)")
    out.print(f"report: {d / 'report.md'}")


@app.command("train")
def train_cmd(
    model: str = typer.Option("smollm2-135m"), data: Optional[Path] = typer.Option(None, help=".h5/.csv (default: simulated)"),
    steps: int = 100, lr: float = 1e-4, rank: int = 8, seq_len: int = 512, batch_size: int = 4,
    schedule: str = "constant", budget: float = typer.Option(1e17, help="ledger budget"),
    head: str = typer.Option("full", help="LM head in training: full | numeric (softmax over the series' tokens)"),
    context: str = typer.Option("128,512", help="test evaluation context lengths"),
    max_series: Optional[int] = typer.Option(None, help="test series evaluated"),
    out_dir: Path = typer.Option(Path("runs/train"), "--out", "-o"),
    restart: bool = typer.Option(False, "--restart", help="archive this directory's earlier run and train again"),
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """Train one LoRA adapter (resumable), then evaluate it on the test split."""
    from .pipeline import run_plan
    from .plan import one_stage_plan

    p = one_stage_plan("train", {"name": "train", "kind": "train", "steps": steps}, model, data, budget,
                       {"lr": lr, "seq_len": seq_len, "batch_size": batch_size, "schedule": schedule, "head": head},
                       {"rank": rank}, _ints(context), max_series, id_column, time_column)
    _show_study(run_plan(p, out_dir, restart=("train",) if restart else ()), out_dir)


@app.command("sweep")
def sweep_cmd(
    model: str = typer.Option("smollm2-135m"), data: Optional[Path] = None,
    lr: str = typer.Option("1e-5,5e-5,1e-4"), rank: str = typer.Option("2,4,8"),
    steps: int = 500, seq_len: int = 512, batch_size: int = 4, budget: float = 1e17,
    context: str = typer.Option("128,512"), max_series: Optional[int] = None,
    out_dir: Path = typer.Option(Path("runs/sweep"), "--out", "-o"),
    restart: bool = typer.Option(False, "--restart", help="archive this directory's earlier grid and run it again"),
    id_column: Optional[str] = typer.Option(None, help=ID_HELP),
    time_column: Optional[str] = typer.Option(None, help=TIME_HELP),
):
    """LR x rank grid (lowest validation loss wins), then test evaluation of the best run."""
    from .pipeline import run_plan
    from .plan import one_stage_plan

    p = one_stage_plan("sweep", {"name": "grid", "kind": "grid", "lr": _floats(lr), "rank": _ints(rank), "steps": steps},
                       model, data, budget, {"seq_len": seq_len, "batch_size": batch_size}, {}, _ints(context), max_series,
                       id_column, time_column)
    _show_study(run_plan(p, out_dir, restart=("grid",) if restart else ()), out_dir)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="study directory written by `flopcast run`")):
    """(Re)write RUN_DIR/report.md with tables and figures."""
    from .report import write_report

    if not (run_dir / "summary.json").is_file():
        raise FlopcastError(f"{run_dir}: no summary.json (run `flopcast run PLAN.toml --out {run_dir}` first)")
    out.print(f"wrote {write_report(run_dir)}")


# ----------------------------------------------------------------------------- FLOPs and budget

def _ints(text: str) -> list[int]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or not all(v.is_integer() for v in vals):
        raise FlopcastError(f"expected comma-separated integers, got {text!r}")
    return [int(v) for v in vals]


def _floats(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals:
        raise FlopcastError(f"expected comma-separated numbers, got {text!r}")
    return vals


@app.command("flops")
def flops_cmd(
    model: str = typer.Option("qwen2.5-0.5b", help="preset (qwen2.5-0.5b, smollm2-135m), tiny-*, model dir or config.json"),
    seq: int = typer.Option(512, help="sequence length S (prompt length for generate)"),
    batch: int = typer.Option(4, help="batch size B"),
    rank: int = typer.Option(0, help="LoRA rank (0: no adapter)"),
    targets: str = typer.Option("q_proj,v_proj", help="LoRA target modules"),
    mode: str = typer.Option("train", help="train | forward | prefill | generate"),
    new_tokens: int = typer.Option(50, help="tokens to generate (mode generate)"),
    gqa: str = typer.Option("full", help="full (reference: GQA counted as MHA) | actual"),
):
    """Per-component FLOPs of one training step / forward / prefill / generation."""
    from .commands import flops_breakdown

    br, arch = flops_breakdown(model, seq, batch, rank, tuple(targets.split(",")), mode, new_tokens, gqa)
    _print_table(f"{arch.name or model}: {mode}, B={batch}, S={seq}, r={rank}", br.rows(), ["component", "flops", "share %"])
    out.print(f"total: {br.total:.4e} FLOPs")


@app.command("plan")
def plan_cmd(
    budget: float = typer.Option(1e17, help="FLOP budget"),
    model: str = typer.Option("qwen2.5-0.5b"),
    seq: str = typer.Option("128,512,768", help="comma-separated S"),
    batch: str = typer.Option("4", help="comma-separated B"),
    rank: str = typer.Option("2,4,8", help="comma-separated LoRA ranks"),
    eval_windows: int = typer.Option(0, help="forecast windows evaluated per config (their FLOPs are set aside)"),
):
    """Affordable training steps per (S, B, r) under a budget."""
    from .commands import plan_table

    rows = plan_table(model, budget, _ints(seq), _ints(batch), _ints(rank), eval_windows)
    _print_table(f"{model} under {budget:.3e} FLOPs", rows)


@budget_app.command("init")
def budget_init(ledger: Path = typer.Argument(...), budget: float = typer.Option(..., help="FLOP budget")):
    """Create a ledger with a budget."""
    from .config import check_budget
    from .ledger import Ledger

    check_budget(budget)
    lg = Ledger(ledger, budget)  # an existing ledger keeps its budget: `budget set` changes it
    out.print(f"{ledger}: budget {lg.budget:.3e} FLOPs, {lg.left():.3e} left")


@budget_app.command("set")
def budget_set(ledger: Path = typer.Argument(...), budget: float = typer.Option(..., help="new FLOP budget")):
    """Change a ledger's budget: raising is always allowed, lowering below what is used or reserved is refused."""
    from .commands import open_ledger

    lg = open_ledger(ledger)
    old = lg.set_budget(budget)
    out.print(f"{ledger}: budget {old:.3e} -> {lg.budget:.3e} FLOPs, {lg.left():.3e} left")


@budget_app.command("release")
def budget_release(ledger: Path = typer.Argument(...), id: int = typer.Argument(..., help="experiment id (budget show)")):
    """Settle an open reservation by hand with the FLOPs it reported (e.g. one held by a process on another host)."""
    from .commands import open_ledger

    e = open_ledger(ledger).release(id)
    out.print(f"{ledger}: released {e.id} ({e.name}): {e.flops_used:.3e} FLOPs used, {e.flops_planned - e.flops_used:.3e} freed")


@budget_app.command("show")
def budget_show(ledger: Path = typer.Argument(...)):
    """Print the ledger as a table with totals."""
    from .commands import open_ledger

    lg = open_ledger(ledger)
    cols = ["id", "name", "kind", "model", "seq", "batch", "rank", "steps", "flops_planned", "flops_used", "share", "wall_s",
            "status", "owner_pid"]
    _print_table(str(ledger), lg.rows(), cols)
    s = lg.summary()
    out.print(f"budget {s['budget']:.3e} | used {s['used']:.3e} ({100 * s['used_share']:.2f}%) | "
              f"reserved {s['reserved']:.3e} | left {s['left']:.3e}")


@budget_app.command("export")
def budget_export(ledger: Path = typer.Argument(...), out_file: Optional[Path] = typer.Option(None, "--out", "-o")):
    """Export the ledger as CSV (stdout or --out)."""
    from .commands import open_ledger

    text = open_ledger(ledger).to_csv()
    if out_file:
        from .commands import ensure_writable

        ensure_writable(out_file)
        out_file.write_text(text)
        err.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)


# ----------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising for user errors."""
    import os
    import signal
    import threading

    from .signals import raise_interrupted

    own_term = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if own_term:  # SIGTERM unwinds like Ctrl-C: ledger rows settle, training checkpoints (see train.StopRequest)
        signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        app(args=argv, prog_name="flopcast")  # standalone: usage errors print and raise SystemExit
        return 0
    except SystemExit as e:
        stop = _interrupt_behind(e)  # typer turns Ctrl-C/SIGTERM (KeyboardInterrupt) into exit 130
        if stop is not None:
            return _interrupted(stop)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except FlopcastError as e:  # a user error: one line; anything else is a bug and shows its traceback
        if os.environ.get("FLOPCAST_DEBUG"):
            raise
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e)
    finally:
        if own_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    while e is not None and not isinstance(e, KeyboardInterrupt):
        e = e.__cause__ or e.__context__
    return e


def _interrupted(e: KeyboardInterrupt) -> int:
    """One line and 128 + signal number (train.Interrupted carries SIGTERM: 143; Ctrl-C: 130)."""
    import signal

    signum = getattr(e, "signum", signal.SIGINT)
    err.print(f"interrupted ({signal.Signals(signum).name}); run the same command again to continue")
    return 128 + signum


def run() -> None:
    sys.exit(main())
