"""Checks what ``make demo`` produced and prints its figures: CI runs it after the demo.

The quickstart study must have run every stage of ``plans/quickstart.toml``, parsed every forecast, spent no more
than its budget (the ledger and ``summary.json`` agree), written its report with figures, and its final run must
beat the zero-shot evaluation on both MSE and MAE at every context length. Exits 1 with the failed checks listed.

    python benchmarks/check_demo.py [runs/quickstart]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flopcast.budget.ledger import Ledger
from flopcast.study.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]


def check(out: Path) -> list[str]:
    """The failed checks of the study in ``out`` (empty when all hold); prints the figures on the way."""
    plan = load_plan(ROOT / "plans" / "quickstart.toml")
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    failed = []
    wanted = [s.name for s in plan.stages]
    if list(stages) != wanted:
        return [f"stages {list(stages)} are not the plan's {wanted}"]
    for name, stage in stages.items():
        for ctx, scores in stage["test"]["contexts"].items():
            m = scores["model"]
            print(f"{name:>10} S={ctx}: MSE {m['mse']:.4f}  MAE {m['mae']:.4f}  "
                  f"parse failures {m['parse_failure_rate']:.0%}")
            if m["parse_failure_rate"] > 0:
                failed.append(f"{name} S={ctx}: {m['parse_failure_rate']:.0%} of forecasts did not parse")
    for ctx, final in stages["final"]["test"]["contexts"].items():
        zero = stages["zero_shot"]["test"]["contexts"][ctx]["model"]
        for metric in ("mse", "mae"):
            if not final["model"][metric] < zero[metric]:
                failed.append(f"S={ctx}: final {metric} {final['model'][metric]:.4f} does not beat zero-shot "
                              f"{zero[metric]:.4f}")
    used = Ledger(out / "ledger.db").used()
    print(f"FLOPs used {used:.4g} of {plan.budget:.4g}")
    if not 0 < used <= plan.budget or summary["ledger"]["used"] != used:
        failed.append(f"ledger used {used} against budget {plan.budget} and summary {summary['ledger']['used']}")
    if (out / "report.md").read_text().count("![") < 2:
        failed.append("report.md has fewer than two figures")
    return failed


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "quickstart"
    failed = check(out)
    for line in failed:
        print("FAILED:", line)
    print("demo check:", "failed" if failed else "passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
