"""The main job: the shipped quickstart plan on the embedded model. The whole plan is ``make demo`` (about 10 minutes
on 2 cores; CI runs it and checks its results with benchmarks/check_demo.py); here its first two stages, zero-shot
and the initial LoRA run, scored on 4 of its 10 test series, show that training helps."""

import json
from dataclasses import replace

import pytest
from helpers import ROOT

from flopcast.budget.ledger import Ledger
from flopcast.study.plan import load_plan
from flopcast.study.runner import run_plan


@pytest.mark.slow
def test_quickstart_training_beats_zero_shot(tmp_path):
    plan = load_plan(ROOT / "plans" / "quickstart.toml")
    plan = replace(plan, eval=replace(plan.eval, max_series=4))
    summary = run_plan(plan, tmp_path / "qs", progress=False, only=["zero_shot", "initial"])
    st = summary.stages
    assert list(st) == ["zero_shot", "initial"]
    zero, trained = st["zero_shot"].test.score(128), st["initial"].test.score(128)
    assert trained.parse_failure_rate == 0 and zero.parse_failure_rate == 0
    assert trained.mae < zero.mae and trained.mse < zero.mse
    led = Ledger(tmp_path / "qs" / "ledger.db")
    assert 0 < led.used() <= plan.budget
    assert (tmp_path / "qs" / "report.md").read_text().count("![") >= 2
    assert json.loads((tmp_path / "qs" / "summary.json").read_text())["ledger"]["used"] == led.used()
