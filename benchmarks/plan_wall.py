"""The wall time of a whole plan, every stage run for real: a scaled copy of ``plans/reference.toml``.

    python benchmarks/plan_wall.py [--scale 0.1] [--model random:DIR] [--data H5] [--eval-series N] [--budget B]
                                   [--out DIR]

``--scale f`` multiplies the budget and every stage's fixed step count by f: every run, evaluation and baseline
of the plan happens (9 grid runs, 3 context runs, 5 evaluations of all test windows), with f of its training.
Printed per stage: measured seconds, training seconds (the runs) and the rest (evaluation, baselines); then the
full plan extrapolated: what does not grow with the budget as measured (evaluations, baselines, and each run's
setup and compiling), plus the full plan's training FLOPs at the steady training rate, read from the runs'
metrics.jsonl over the second half of their steps (a run's first steps compile, and a short run is mostly them).
``study_speed.py`` estimates the same figure from parts; this script checks it end to end.
Defaults (model, data) as in ``study_speed.py``: a random-initialised Qwen2.5-0.5B from ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from study_speed import ROOT, default_data, default_model  # beside this script

from flopcast.api.study import run_study
from flopcast.study.plan import plan_from_dict

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def scaled(raw: dict, f: float, model: str, data: str | None, eval_series: int | None,
           budget: float | None = None) -> dict:
    d = {**raw, "budget": budget or raw["budget"] * f, "model": {**raw.get("model", {}), "name": model}}
    d.pop("data", None)
    if data:
        d["data"] = data
    d["train"] = {**d.get("train", {}), "wandb": False}
    if eval_series:
        d["eval"] = {**d.get("eval", {}), "max_series": eval_series}
    d["stages"] = [{**s, "steps": max(1, round(s["steps"] * f))} if isinstance(s.get("steps"), int) else dict(s)
                   for s in raw["stages"]]
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", default=str(ROOT / "plans" / "reference.toml"))
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--data", default=default_data())
    ap.add_argument("--eval-series", type=int, default=None, help="test series per evaluation (default: all)")
    ap.add_argument("--budget", type=float, default=None, help="FLOP budget (default: the plan's x scale)")
    ap.add_argument("--out", default=None, help="study directory (default: a temporary one)")
    a = ap.parse_args()
    raw = tomllib.loads(Path(a.plan).read_text())
    plan = plan_from_dict(scaled(raw, a.scale, a.model, a.data, a.eval_series, a.budget), where=a.plan)
    print(f"plan {plan.name!r} x {a.scale:g} (budget {plan.budget:.1e}), model {a.model}, data {a.data or 'simulated'}")
    print(f"{'stage':12s} {'seconds':>9s} {'training':>9s} {'the rest':>9s} {'train FLOPs':>12s}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out, wall, train_s, train_flops, run_dirs = Path(a.out or tmp), 0.0, 0.0, 0.0, []
        for stage in plan.stages:  # one stage a call (the study resumes), so that each line prints when it is done
            t0 = time.perf_counter()
            res = run_study(plan, out, progress=False, only=[stage.name])
            wall += time.perf_counter() - t0
            st = res.stages[stage.name]
            tr, fl = sum(r.wall_s for r in st.runs), sum(r.flops for r in st.runs)
            train_s, train_flops = train_s + tr, train_flops + fl
            run_dirs += [Path(r.dir) for r in st.runs]
            print(f"{stage.name:12s} {st.wall_s:9.1f} {tr:9.1f} {st.wall_s - tr:9.1f} {fl:12.2e}", flush=True)
        rate = steady_seconds_per_flop(run_dirs) or train_s / max(train_flops, 1.0)
    report(wall, train_s, train_flops, rate, res.ledger["used"], raw["budget"])


def steady_seconds_per_flop(run_dirs: list[Path]) -> float | None:
    """Seconds per training FLOP over the second half of each run's logged steps (validations among them included,
    as they recur in a longer run); None when no run logged four steps."""
    dt = dflops = 0.0
    for d in run_dirs:
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "loss" in r and "time" in r]
        if len(steps) >= 4:
            mid, last = steps[len(steps) // 2 - 1], steps[-1]
            dt, dflops = dt + last["time"] - mid["time"], dflops + last["flops"] - mid["flops"]
    return dt / dflops if dt > 0 and dflops > 0 else None


def report(wall: float, train_s: float, train_flops: float, rate: float, used: float, full_budget: float) -> None:
    """The full plan: what does not grow with the budget as measured -- evaluations, baselines, each run's setup and
    compiling (its seconds beyond its FLOPs at the steady ``rate``) -- plus the full plan's training FLOPs (its budget
    less the evaluations' FLOPs, which do not scale either) at ``rate`` (seconds per FLOP)."""
    steady = train_flops * rate
    fixed = wall - steady
    full_train = max(0.0, full_budget - (used - train_flops))
    full = fixed + full_train * rate
    print(f"measured {wall:.1f} s: training {train_s:.1f} s for {train_flops:.2e} FLOPs, of which {steady:.1f} s "
          f"at the steady rate ({1 / rate / 1e12:.2f} TFLOP/s by the reference count) and "
          f"{train_s - steady:.1f} s setup and compiling; the rest {wall - train_s:.1f} s")
    print(f"the full plan ({full_budget:.0e} FLOPs, {full_train:.2e} of them training), extrapolated: "
          f"{full / 60:.1f} min")


if __name__ == "__main__":
    main()
