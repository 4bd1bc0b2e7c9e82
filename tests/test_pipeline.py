"""Studies end to end on tiny models: every stage kind, resuming, reports, seeds, signals."""

import json

import pytest
from helpers import ROOT, TINY_PLAN, tiny_plan

from flopcast.budget.ledger import Ledger
from flopcast.cli import main
from flopcast.config import load_toml
from flopcast.errors import FlopcastError
from flopcast.study.plan import load_plan, plan_from_dict
from flopcast.study.preflight import prepare
from flopcast.study.runner import run_plan
from flopcast.study.stages import stage_price


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny plan of every stage kind, run once: (plan, directory, summary, each stage's price before it ran,
    the baselines computed)."""
    import flopcast.evaluation.baselines as baselines

    plan, out = plan_from_dict(TINY_PLAN), tmp_path_factory.mktemp("tiny") / "study"
    before = prepare(plan, out, progress=False)
    prices = {st.name: stage_price(before, st) for st in plan.stages}
    computed = []
    real = baselines.run_baseline
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(baselines, "run_baseline", lambda name, *a, **k: computed.append(name) or real(name, *a, **k))
        summary = run_plan(plan, out, progress=False)
    return plan, out, summary, prices, computed


def test_priced_flops_bound_the_charged_ones(tiny_study):
    """What a stage is priced at before it starts (over every start it may get) brackets its price once its base
    has chosen; a run trained as planned charges exactly its planned FLOPs, an evaluation at most its bound, a
    stage at most its price."""
    from flopcast.budget.flops import lora_shape
    from flopcast.study.stages import eval_price, run_price, stage_work

    plan, out, summary, before, _ = tiny_study
    study = prepare(plan, out, progress=False)  # every stage done: each priced from its base's actual best
    rows = [e for e in Ledger(out / "ledger.db").entries() if e.kind != "hold"]
    for stage in plan.stages:
        price = stage_price(study, stage)
        assert before[stage.name].least <= price.least <= price.most <= before[stage.name].most, stage.name
        charged = {e.name: e.flops_used for e in rows if e.name.startswith(stage.name + "/")}
        assert 0 < sum(charged.values()) <= price.most, stage.name
        base = summary.stages[stage.base].best if stage.base else None
        work = stage_work(plan, stage, base)
        for run in work.runs if not work.remaining else ():
            assert charged.pop(f"{stage.name}/{run.name}") == run_price(study, run).planned
        if work.remaining:
            assert charged.pop(f"{stage.name}/run") >= run_price(study, work.runs[0]).per_step
        lora = lora_shape(work.eval_lora) if stage.kind != "eval" else None
        if stage.adapter_from:
            lora = lora_shape(stage_work(plan, plan.stage(stage.adapter_from)).eval_lora)
        assert sum(charged.values()) <= eval_price(study, work.contexts, lora), stage.name
        assert all(name.startswith(f"{stage.name}/test/") for name in charged)


def test_run_plan_end_to_end_artifacts(tiny_study):
    plan, out, summary, _, computed = tiny_study
    # four stages evaluate on the same windows; the baseline is computed once and stored in the study
    assert computed == ["persistence"] and len(list((out / "baselines").glob("persistence-*.npy"))) == 1
    for f in ("plan.toml", "split.json", "ledger.db", "summary.json", "report.md", "data.h5",
              "figures/loss_curves.png"):
        assert (out / f).is_file(), f
    st = summary.stages
    assert [s for s in st] == ["zero_shot", "initial", "grid", "context", "final_eval", "final"]
    assert len(st["grid"].runs) == 4 and st["grid"].best.val_loss == min(r.val_loss for r in st["grid"].runs)
    best = st["grid"].best
    assert all(r.lr == best.lr and r.rank == best.rank for r in st["context"].runs)
    assert st["final"].best.seq_len == st["context"].best.seq_len
    for run in st["initial"].runs + st["final"].runs:
        d = out / "stages" / ("initial" if run in st["initial"].runs else "final") / run.run
        for f in ("config.toml", "metrics.jsonl", "flops.json", "status.json", "adapter/adapter_config.json"):
            assert (d / f).is_file(), f
        assert load_toml(d / "config.toml")["seed"] == 0
    # every stage's FLOPs are in one ledger, inside the budget; the final stage spent what was left
    led = Ledger(out / "ledger.db")
    assert led.used() <= plan.budget and led.used() > 0.9 * plan.budget
    names = [e.name for e in led.entries()]
    assert "zero_shot/test/S=64" in names and "final/run" in names and "grid/lr=0.001_r=4" in names
    # evaluating another stage's adapter reproduces that stage's own test evaluation
    assert st["final_eval"].test.score(64).mse == pytest.approx(st["initial"].test.score(64).mse)
    report = (out / "report.md").read_text()
    for heading in ("Test metrics per stage", "Baselines", "FLOPs per experiment", "Time and energy", "Grid `grid`",
                    "Context sweep"):
        assert heading in report

    # re-running skips finished stages: no new ledger rows, same results
    again = run_plan(plan, out, progress=False)
    assert len(Ledger(out / "ledger.db").entries()) == len(names)
    assert again.stages["final"].best == st["final"].best
    # interrupted after their work but before stage.json: finished runs and evaluated contexts are reused,
    # not re-charged
    used = led.used()
    for f in (out / "stages").glob("*/stage.json"):
        f.unlink()
    again = run_plan(plan, out, progress=False)
    assert len(Ledger(out / "ledger.db").entries()) == len(names) and Ledger(out / "ledger.db").used() == used
    for name in st:
        assert again.stages[name].test == st[name].test
        assert again.stages[name].best == st[name].best


def test_shipped_plans_parse():
    root = ROOT / "plans"
    q, r = load_plan(root / "quickstart.toml"), load_plan(root / "reference.toml")
    assert q.model.name == "smollm2-135m" and q.stages[-1].steps == "remaining"
    assert r.budget == 1e17 and r.eval.protocol == "seed" and r.stage("grid").lr == (1e-5, 5e-5, 1e-4)
    assert r.stage("grid").rank == (2, 4, 8) and r.stage("context").seq_len == (128, 512, 768)
    # the reference's code: q_proj and v_proj, alpha = rank (scaling 1 at every rank of the grid), an LM-head bias
    assert r.lora.targets == ("q_proj", "v_proj") and r.lora.train_lm_head_bias
    assert [run.lora.lora_alpha for run in r.stage("grid").runs(r.train, r.lora)][:3] == [2.0, 4.0, 8.0]


@pytest.mark.parametrize("change, match", [
    ({"stages": []}, "at least one"),
    ({"stages": [{"name": "a", "kind": "train", "base": "zz"}]}, "not an earlier stage"),
    ({"stages": [{"name": "g", "kind": "grid", "lr": [1e-4]}]}, "needs lr"),
    ({"budget": -1}, "budget"),
    ({"train": {"stepz": 3}}, "unknown key"),
    ({"stages": [{"name": "z", "kind": "eval"}, {"name": "e", "kind": "eval", "adapter_from": "z"}]},
     "an eval stage: it trains no adapter"),
    ({"stages": [{"name": "z", "kind": "eval"}, {"name": "t", "kind": "train", "base": "z", "steps": 2}]},
     "an eval stage: it trains no adapter"),
    ({"stages": [{"name": "a", "kind": "train", "steps": "remaining"},
                 {"name": "b", "kind": "train", "steps": "remaining"}]}, "only one stage may spend the remaining"),
])
def test_bad_plans(change, match):
    with pytest.raises(FlopcastError, match=match):
        plan_from_dict({**TINY_PLAN, **change})


def test_cli_run_and_report(tmp_path, capsys):
    import tomli_w

    p = tmp_path / "plan.toml"
    small = {**TINY_PLAN, "stages": TINY_PLAN["stages"][:2]}
    p.write_text(tomli_w.dumps(small))
    assert main(["run", str(p), "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "zero_shot" in out and "report" in out
    assert main(["report", str(tmp_path / "s")]) == 0
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_same_seed_twice_identical_metrics(tmp_path):
    small = plan_from_dict({**TINY_PLAN, "budget": 5e9, "stages": [TINY_PLAN["stages"][0], TINY_PLAN["stages"][1]]})
    a = run_plan(small, tmp_path / "a", progress=False).stages
    b = run_plan(small, tmp_path / "b", progress=False).stages
    for stage in ("zero_shot", "initial"):
        ma, mb = a[stage].test.score(64), b[stage].test.score(64)
        assert ma.mse == mb.mse and ma.mae_per_step == mb.mae_per_step and ma.flops == mb.flops
    assert a["initial"].runs[0].val_loss == b["initial"].runs[0].val_loss


def test_remaining_budget_buys_more_steps_with_numeric_head(tmp_path):
    steps = {}
    for head in ("full", "numeric"):
        plan = plan_from_dict({**TINY_PLAN, "budget": 3e9, "train": {**TINY_PLAN["train"], "head": head},
                               "stages": [{"name": "only", "kind": "train", "steps": "remaining", "evaluate": False}]})
        st = run_plan(plan, tmp_path / head, progress=False).stages["only"]
        steps[head] = st.runs[0].steps
        used = Ledger(tmp_path / head / "ledger.db").used()
        assert 0.9 * plan.budget < used <= plan.budget
    assert steps["numeric"] > steps["full"] >= 1


def test_sigterm_stops_a_study_with_a_checkpoint_and_exit_143(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    import torch

    from flopcast.config import save_toml

    plan = tiny_plan(budget=1e13, stages=[{"name": "long", "kind": "train", "steps": 5000, "evaluate": False}])
    save_toml(plan, tmp_path / "plan.toml")
    out = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "flopcast", "run", str(tmp_path / "plan.toml"), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "stages" / "long" / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    def started() -> bool:
        return metrics.is_file() and metrics.read_text().count("\n") >= 3

    while not started() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "interrupted (SIGTERM); run the same command again to continue")
    logged = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines() if "loss" in json.loads(ln)]
    state = torch.load(metrics.parent / "checkpoint" / "state.pt", weights_only=False)
    # every logged step is in the checkpoint
    assert 3 <= state["step"] < 5000 and logged == list(range(1, state["step"] + 1))
    entry = Ledger(out / "ledger.db").find("long/run")
    assert entry.status == "interrupted" and entry.flops_used == state["flops"]  # its FLOPs stay counted for the resume
    assert not (out / "stages" / "long" / "stage.json").exists()


def test_settings_that_change_no_result_do_not_change_a_study(tmp_path):
    """Re-running with other compile settings (training and decoding) and sync_every reuses every stage: no
    "changed study" refusal, nothing charged again."""
    plan = tiny_plan(stages=[{"name": "zero_shot", "kind": "eval"}, {"name": "initial", "kind": "train", "steps": 2}])
    out = tmp_path / "s"
    first = run_plan(plan_from_dict(plan), out, progress=False)
    rows = len(Ledger(out / "ledger.db").entries())
    plan["eval"]["compile"], plan["train"]["compile"], plan["train"]["sync_every"] = "off", "off", 3
    again = run_plan(plan_from_dict(plan), out, progress=False)
    assert len(Ledger(out / "ledger.db").entries()) == rows
    assert again.stages["zero_shot"].test.score(64).mse == first.stages["zero_shot"].test.score(64).mse


@pytest.mark.parametrize("args, match", [
    (["--only", "nosuch"], "--only nosuch: no such stage"),
    (["--restart", "nosuch"], "--restart nosuch: no such stage"),
    (["--only", "zero_shot", "--restart", "initial"], "--only leaves it out"),
    (["--only", "final_eval"], "builds on 'initial', which has not run"),
])
def test_stage_selection_mistakes_stop_before_anything_is_written(tmp_path, capsys, args, match):
    from flopcast.config import save_toml

    save_toml(TINY_PLAN, tmp_path / "tiny.toml")
    out = tmp_path / "study"
    code = main(["run", str(tmp_path / "tiny.toml"), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err, err
    assert not (out / "stages").exists() and not (out / "ledger.db").exists() if "has not run" in match \
        else not out.exists()


def test_only_one_stage_of_a_finished_study_keeps_the_others_in_its_summary(tiny_study, tmp_path):
    import shutil

    plan, out, summary, _, _ = tiny_study
    copy = shutil.copytree(out, tmp_path / "study")
    used = Ledger(copy / "ledger.db").used()
    again = run_plan(plan, copy, progress=False, only=["initial"])
    assert list(again.stages) == list(summary.stages) and Ledger(copy / "ledger.db").used() == used
    written = json.loads((copy / "summary.json").read_text())
    assert list(written["stages"]) == [s.name for s in plan.stages]


@pytest.mark.parametrize("damaged, match", [
    ("stages/initial/stage.json", "--restart initial"),
    ("stages/grid/fingerprint.json", "--restart grid"),
    ("stages/initial/run/status.json", "--restart initial"),
    ("summary.json", "run the study again to write it anew"),
])
def test_a_damaged_study_file_is_one_line_naming_it_and_the_way_out(tiny_study, tmp_path, capsys, damaged, match):
    import shutil

    _, out, _, _, _ = tiny_study
    copy = shutil.copytree(out, tmp_path / "study")
    (copy / damaged).write_text('{"cut sho')
    if damaged.endswith("run/status.json"):  # read when its stage has not finished
        (copy / "stages" / "initial" / "stage.json").unlink()
    used = Ledger(copy / "ledger.db").used()
    args = ["report", str(copy)] if damaged == "summary.json" else ["run", str(copy / "plan.toml"), "--out", str(copy)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{damaged}: not valid JSON" in err and match in err, err
    assert Ledger(copy / "ledger.db").used() == used


def test_a_damaged_checkpoint_is_one_line(tmp_path):
    from flopcast.training.checkpoint import CheckpointManager

    ckpt = CheckpointManager(tmp_path / "stages" / "final" / "run")
    ckpt.dir.mkdir(parents=True)
    (ckpt.dir / "state.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(FlopcastError, match=r"state.pt: damaged checkpoint .*--restart final"):
        ckpt.load()


def test_the_plan_a_study_keeps_runs_again_as_it_is(tiny_study):
    plan, out, _, _, _ = tiny_study
    assert load_plan(out / "plan.toml") == plan


def test_a_study_compiling_past_torchs_limit_is_warned_before_it_starts(tmp_path, monkeypatch):
    """With compiling on, the tiny plan's runs have 4 training shapes (seq_len 32/64 x rank 2/4) and its evaluations
    3 decoded (context, adapter) pairs (the base, rank 2, rank 4 at S=64): at most 12 and 6 variants. A limit
    below that is warned of before anything runs; compiling off counts none."""
    import warnings

    from flopcast.study import preflight

    plan = tiny_plan()
    plan["train"] = {**plan["train"], "compile": "on"}
    plan["eval"] = {**plan["eval"], "compile": "on"}
    study = prepare(plan_from_dict(plan), tmp_path / "on", progress=False)
    assert preflight.compiled_variants(study, study.plan.stages) == (12, 6)
    monkeypatch.setattr(preflight, "RECOMPILE_LIMIT", 8)
    with pytest.warns(UserWarning, match=r"^training may compile up to 12 variants, more than the 8 torch keeps"):
        prepare(plan_from_dict(plan), tmp_path / "on", progress=False)
    off = prepare(plan_from_dict(TINY_PLAN), tmp_path / "off", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preflight.compiled_variants(off, off.plan.stages) == (0, 0)
