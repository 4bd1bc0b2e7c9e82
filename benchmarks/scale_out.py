"""A study stage's runs on a local Ray (``flopcast run --ray``) against the same runs one after another.

The quickstart plan's grid stage (its two learning rates, on the embedded model; ``--ranks`` adds LoRA ranks, so
more runs) is run three ways in fresh study directories, same plan and seed: without Ray (one process, torch on
every core); on Ray with one worker at a time holding every core (``[resources] cpus`` = the machine's cores);
on Ray with one worker per core (``cpus = 1``: each run's torch threads are its CPUs, so the runs do not fight
over cores). Printed: the wall time of each, the ratio to the sequential run, and that they agree (best run,
ledger total). The reference plan's wall time on 1, 4 and 8 GPUs is extrapolated by ``study_speed.py`` (its last
lines), from the training and decoding rates it measures on the device it runs on.

    .venv/bin/python benchmarks/scale_out.py [--steps 10] [--ranks 4] [--cores 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grid_plan(steps: int, ranks: list[int], cpus: float) -> dict:
    """The quickstart plan with its grid stage alone, ``steps`` steps a run, each run asking for ``cpus`` CPUs."""
    from flopcast.config import load_toml

    plan = load_toml(ROOT / "plans" / "quickstart.toml")
    grid = next(s for s in plan["stages"] if s["name"] == "grid")
    plan["stages"] = [{**grid, "steps": steps, "rank": ranks, "evaluate": False}]
    plan["resources"] = {"cpus": cpus}
    return plan


def timed(plan: dict, out: Path, executor: str) -> tuple[float, object, int]:
    from flopcast import run_study
    from flopcast.budget.ledger import Ledger

    t0 = time.perf_counter()
    summary = run_study(plan, out, progress=False, executor=executor)
    return time.perf_counter() - t0, summary, Ledger(out / "ledger.db").used()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--ranks", default="4", help="LoRA ranks of the grid, comma-separated (runs = 2 lr x ranks)")
    ap.add_argument("--cores", type=int, default=2)
    a = ap.parse_args()
    import ray
    import torch

    ranks = [int(r) for r in a.ranks.split(",")]
    torch.set_num_threads(a.cores)
    ray.init(num_cpus=a.cores, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ways = [("sequential, no Ray", "local", a.cores), ("Ray, 1 worker x all cores", "ray", a.cores),
                (f"Ray, {a.cores} workers x 1 core", "ray", 1)]
        for i, (label, executor, cpus) in enumerate(ways):
            wall, summary, used = timed(grid_plan(a.steps, ranks, cpus), Path(tmp) / f"way{i}", executor)
            grid = summary.stages["grid"]  # type: ignore[attr-defined]
            train_s = sum(r.wall_s for r in grid.runs)
            rows.append((label, wall, grid.best.run, used, train_s))
            print(f"  {label}: {wall:.1f} s, best {grid.best.run}, {used:.4e} FLOPs, runs' own training "
                  f"{train_s:.1f} s in all", flush=True)
    ray.shutdown()
    base = rows[0][1]
    print(f"| way | wall (s) | x sequential | runs' training, summed (s) | best run | ledger FLOPs |  "
          f"({2 * len(ranks)} runs x {a.steps} steps)")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, wall, best, used, train_s in rows:
        print(f"| {label} | {wall:.1f} | {base / wall:.2f}x | {train_s:.1f} | {best} | {used:.4e} |")
    assert len({r[2] for r in rows}) == 1 and len({r[3] for r in rows}) == 1, "the three ways disagree"


if __name__ == "__main__":
    main()
