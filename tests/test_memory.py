"""A batch that cannot fit in memory is refused before anything is allocated or charged, naming the largest that
does (training steps in a study and in a run, decoding batches in an evaluation)."""

import pytest
from helpers import one_stage_plan, train_tiny

from flopcast.budget.flops import Arch
from flopcast.budget.ledger import Ledger
from flopcast.budget.memory import decode_bytes, host_free_bytes, largest_fitting, train_step_bytes
from flopcast.errors import FlopcastError
from flopcast.model.load import tiny_config


def arch():
    return Arch.from_config(tiny_config("tiny-qwen2").to_dict())


def test_estimates_grow_with_the_batch_and_the_largest_fitting_is_exact():
    a = arch()
    need = [train_step_bytes(a, b, 64) for b in (1, 2, 4)]
    assert need[0] > 0 and need[1] == 2 * need[0] and need[2] == 4 * need[0]
    assert decode_bytes(a, 2, 64, 10) == 2 * decode_bytes(a, 1, 64, 10) > 0
    free = train_step_bytes(a, 5, 64) + 1
    assert largest_fitting(lambda b: train_step_bytes(a, b, 64), free, 100) == 5
    assert largest_fitting(lambda b: train_step_bytes(a, b, 64), 10, 100) == 0
    assert (host_free_bytes() or 1) > 0


def test_a_study_refuses_a_step_that_cannot_fit_before_it_spends(tmp_path, monkeypatch):
    from flopcast.study import preflight
    from flopcast.study.plan import plan_from_dict
    from flopcast.study.runner import run_plan

    plan = {**one_stage_plan(), "stages": [{"name": "zs", "kind": "eval"}, {"name": "initial", "kind": "train",
                                                                             "steps": 2}]}
    seq = plan["train"]["seq_len"]
    monkeypatch.setattr(preflight, "free_memory", lambda device: train_step_bytes(arch(), 1, seq) + 1)
    plan["train"]["batch_size"] = 4
    with pytest.raises(FlopcastError, match="stage 'initial': a training step at batch_size 4 .* batch_size 1 fits"):
        run_plan(plan_from_dict(plan), tmp_path / "s", progress=False)
    assert Ledger(tmp_path / "s" / "ledger.db").used() == 0  # the eval stage before it did not run either


def test_a_run_refuses_a_step_that_cannot_fit(tmp_path, data, monkeypatch):
    from flopcast.training import oom

    monkeypatch.setattr(oom, "free_memory", lambda device: train_step_bytes(arch(), 3, 64) + 1)
    with pytest.raises(FlopcastError, match="batch_size 8 needs about .* batch_size 3 fits") as e:
        train_tiny(tmp_path / "run", data, steps=2, ledger=Ledger(tmp_path / "l.db", 1e13), batch_size=8)
    assert "\n" not in str(e.value) and Ledger(tmp_path / "l.db").entries() == []


def test_an_evaluation_refuses_a_batch_that_cannot_fit(tmp_path, sim_file, monkeypatch):
    from flopcast.api.study import evaluate
    from flopcast.evaluation import evaluate as ev

    monkeypatch.setattr(ev, "free_memory", lambda device: 1)
    with pytest.raises(FlopcastError, match="decoding S=64 at batch_size 4 .* not even batch_size 1 fits"):
        evaluate("tiny-qwen2", data=sim_file, ledger=tmp_path / "l.db", budget=1e15, contexts=(64,), max_series=4,
                 batch_size=4, baselines=("persistence",))
    assert Ledger(tmp_path / "l.db").entries() == []
