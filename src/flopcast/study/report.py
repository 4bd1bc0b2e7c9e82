"""Markdown report of a study directory (``flopcast report RUN_DIR``). No torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..budget.ledger import Ledger
from ..config import load_toml
from ..display import number
from ..errors import FlopcastError
from ..evaluation.plots import save_figure, subplots
from ..results import BASELINE_ORDER, RunResult, Score, StageResult, StudyResult, read_json


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(number(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _runs(stages: dict[str, StageResult]) -> list[RunResult]:
    return [r for st in stages.values() for r in st.runs]


def _loss_curves(stages: dict[str, StageResult], path: Path) -> Path | None:
    runs = _runs(stages)
    if not runs:
        return None
    fig, ax = subplots(1, 2, figsize=(11, 3.6))
    for r in runs:
        f = Path(r.dir) / "metrics.jsonl"
        if not f.is_file():
            continue
        rows = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        tr = [(x["step"], x["loss"]) for x in rows if "loss" in x]
        va = [(x["step"], x["val_loss"]) for x in rows if "val_loss" in x]
        label = f"{Path(r.dir).parent.name}/{r.run}"
        if tr:
            ax[0].plot(*zip(*tr), lw=0.8, label=label)
        if va:
            ax[1].plot(*zip(*va), marker="o", ms=3, label=label)
    ax[0].set_title("training loss")
    ax[1].set_title("validation loss")
    for a in ax:
        a.set_xlabel("step")
    ax[1].legend(fontsize=6)
    return save_figure(fig, path)


def _scored_runs(res: StageResult) -> list[RunResult]:
    return [r for r in res.runs if r.val_loss is not None]


def _grid_heatmap(stage: str, res: StageResult, path: Path) -> Path | None:
    runs = _scored_runs(res)
    if len(runs) < 2:
        return None
    lrs, ranks = sorted({r.lr for r in runs}), sorted({r.rank for r in runs})
    grid = np.full((len(lrs), len(ranks)), np.nan)
    for r in runs:
        grid[lrs.index(r.lr), ranks.index(r.rank)] = r.val_loss
    fig, ax = subplots(figsize=(1.6 * len(ranks) + 2, 1.2 * len(lrs) + 1.2))
    im = ax.imshow(grid, cmap="viridis_r")
    ax.set_xticks(range(len(ranks)), [f"r={r}" for r in ranks])
    ax.set_yticks(range(len(lrs)), [f"lr={lr:g}" for lr in lrs])
    for i in range(len(lrs)):
        for j in range(len(ranks)):
            ax.text(j, i, number(float(grid[i, j])), ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, label="validation loss")
    ax.set_title(f"{stage}: validation loss")
    return save_figure(fig, path)


def _context_curve(stage: str, res: StageResult, path: Path) -> Path | None:
    runs = _scored_runs(res)
    if len(runs) < 2:
        return None
    fig, ax = subplots(figsize=(5, 3.3))
    ax.plot([r.seq_len for r in runs], [r.val_loss for r in runs], marker="o")
    ax.set_xlabel("training context S (tokens)")
    ax.set_ylabel("validation loss")
    ax.set_title(stage)
    return save_figure(fig, path)


def _metrics_section(stages: dict[str, StageResult]) -> list[str]:
    """Test metrics per stage x context (the reference's layout), the baselines, CIs and parse failures."""
    evals = {n: st.test for n, st in stages.items() if st.test is not None}
    if not evals:
        return []
    contexts = sorted({S for r in evals.values() for S in r.contexts})
    header = ["Context (S)"] + [f"{n} {m}" for n in evals for m in ("MSE", "MAE")]
    rows = [[S] + [v for r in evals.values() for v in _mse_mae(r.score(S))] for S in contexts]
    lines = ["## Test metrics per stage", "", _table(header, rows), ""]
    first = next(iter(evals.values()))
    brow = [[S, b, m.mse, m.mae] for S in contexts for b in BASELINE_ORDER if (m := first.score(S, b)) is not None]
    if brow:
        lines += ["## Baselines (same windows)", "", _table(["S", "baseline", "MSE", "MAE"], brow), ""]
    ci_rows = [[n, S, str(np.round(m.mse_ci95, 5).tolist()) if m.mse_ci95 else "-", m.parse_failure_rate]
               for n, r in evals.items() for S in contexts if (m := r.score(S)) is not None]
    return lines + ["MSE 95% bootstrap CIs and parse failures:", "",
                    _table(["stage", "S", "MSE 95% CI", "parse failure rate"], ci_rows), ""]


def _fine_tune_section(stages: dict[str, StageResult]) -> list[str]:
    """"Should I fine-tune?": every evaluated stage (zero-shot or fine-tuned) and every baseline on the same
    windows, by MASE and MASE relative to seasonal naive, with the FLOPs each cost (training: every run of the
    stage; forecasting: the evaluation's)."""
    evals = {n: st for n, st in stages.items() if st.test is not None}
    if not evals:
        return []
    rows: list[list[object]] = []
    for S in sorted({S for st in evals.values() for S in st.test.contexts}):  # type: ignore[union-attr]
        for n, st in evals.items():
            if (m := st.test.score(S)) is not None:  # type: ignore[union-attr]
                trained = sum(r.flops for r in st.runs)
                rows.append([S, f"{n} ({'fine-tuned' if st.runs else 'no training'})", m.mase, m.mase_relative,
                             m.mae, trained, m.flops])
        first = next(iter(evals.values())).test
        rows += [[S, b, m.mase, m.mase_relative, m.mae, 0, 0] for b in BASELINE_ORDER
                 if first is not None and (m := first.score(S, b)) is not None]
    header = ["S", "method", "MASE", "MASE / seasonal naive", "MAE", "training FLOPs", "forecast FLOPs"]
    return ["## Should I fine-tune? (same windows)", "",
            "MASE relative to seasonal naive is a geometric mean over series (below 1: better than seasonal naive). "
            "Baselines run on the CPU; their arithmetic is not counted in FLOPs.", "", _table(header, rows), ""]


def _mse_mae(m: Score | None) -> tuple[float | None, float | None]:
    return (m.mse, m.mae) if m is not None else (None, None)


def _figures_section(d: Path, stages: dict[str, StageResult]) -> list[str]:
    fig_dir = d / "figures"
    fig_dir.mkdir(exist_ok=True)
    figs = []
    if (p := _loss_curves(stages, fig_dir / "loss_curves.png")):
        figs.append(("Loss curves", p))
    for n, st in stages.items():
        if st.kind == "grid" and st.best and (p := _grid_heatmap(n, st, fig_dir / f"grid_{n}.png")):
            figs.append((f"Grid `{n}` (best: lr={st.best.lr:g}, r={st.best.rank})", p))
        if st.kind == "context" and st.best and (p := _context_curve(n, st, fig_dir / f"context_{n}.png")):
            figs.append((f"Context sweep `{n}` (best S={st.best.seq_len})", p))
        for png in sorted((d / "stages" / n / "eval").glob("forecasts_*.png")):
            figs.append((f"Forecasts after `{n}`", png))
    if not figs:
        return []
    return ["## Figures", ""] + [f"**{title}**\n\n![{title}]({p.relative_to(d)})\n" for title, p in figs]


def _flops_section(d: Path, budget: float) -> list[str]:
    ledger = Ledger(d / "ledger.db")
    rows = [[e["name"], e["kind"], e["seq"], e["rank"], e["steps"], e["flops_used"], 100 * e["share"], e["wall_s"],
             e["status"]] for e in ledger.rows()]
    header = ["experiment", "kind", "S", "r", "steps", "FLOPs", "budget %", "wall s", "status"]
    by_stage: dict[str, float] = {}
    for e in ledger.rows():
        by_stage[e["name"].split("/")[0]] = by_stage.get(e["name"].split("/")[0], 0) + e["flops_used"]
    return ["## FLOPs per experiment", "", _table(header, rows), "",
            _table(["stage", "FLOPs", "budget %"], [[k, v, 100 * v / budget] for k, v in by_stage.items()]), ""]


def _energy_section(stages: dict[str, StageResult], plan: dict) -> list[str]:
    wall = sum(st.wall_s for st in stages.values())
    power = float(plan.get("device_power_w", 65.0))
    carbon = float(plan.get("carbon_g_per_kwh", 300.0))
    kwh = wall / 3600 * power / 1000
    return ["## Time and energy", "",
            f"Total wall time {wall / 3600:.2f} h. At a stated device power of {power:g} W this is "
            f"{kwh:.3f} kWh, about {kwh * carbon:.0f} g CO2e at {carbon:g} g/kWh "
            "(power x time x grid intensity; set `device_power_w` and `carbon_g_per_kwh` in the plan).", ""]


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` (and its figures) from a study directory's ``summary.json``, plan and ledger."""
    d = Path(run_dir)
    if not (d / "summary.json").is_file():
        raise FlopcastError(f"{d}: no summary.json (run `flopcast run PLAN.toml --out {d}` first)")
    summary = StudyResult.from_dict(read_json(d / "summary.json"))
    plan = load_toml(d / "plan.toml") if (d / "plan.toml").is_file() else {}
    led, ev = summary.ledger, plan.get("eval", {})
    lines = [f"# flopcast report: {summary.plan}", "",
             f"Model `{plan.get('model', {}).get('name', '?')}`, budget {led['budget']:.3e} FLOPs, "
             f"used {led['used']:.3e} ({100 * led['used_share']:.2f}%). Protocol "
             f"`{ev.get('protocol', '?')}`, horizon {ev.get('horizon', '?')} steps, "
             "errors in original units.", ""]
    lines += _metrics_section(summary.stages)
    lines += _fine_tune_section(summary.stages)
    lines += _figures_section(d, summary.stages)
    lines += _flops_section(d, led["budget"])
    lines += _energy_section(summary.stages, plan)
    out = d / "report.md"
    out.write_text("\n".join(lines))
    return out
