"""The main job: the shipped quickstart plan on the embedded model (what `make demo` runs)."""

import json
from pathlib import Path

import pytest

from flopcast.ledger import Ledger
from flopcast.pipeline import run_plan
from flopcast.plan import load_plan

PLAN = Path(__file__).resolve().parents[1] / "plans" / "quickstart.toml"


@pytest.mark.slow
def test_quickstart_training_beats_zero_shot(tmp_path):
    plan = load_plan(PLAN)
    summary = run_plan(plan, tmp_path / "qs", progress=False)
    st = summary.stages
    zero = st["zero_shot"].test.score(128)
    final = st["final"].test.score(128)
    assert final.parse_failure_rate == 0 and zero.parse_failure_rate == 0
    assert final.mae < zero.mae and final.mse < zero.mse
    led = Ledger(tmp_path / "qs" / "ledger.db")
    assert led.used() <= plan.budget
    assert (tmp_path / "qs" / "report.md").read_text().count("![") >= 3
    assert json.loads((tmp_path / "qs" / "summary.json").read_text())["ledger"]["used"] == led.used()
