"""A study that cannot lie: changed re-runs, locks, leases, budget changes, checks before spending, numbers."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import LOCK_HOLDER, ROOT, lively_tiny, one_stage_plan, train_data, train_tiny
from helpers import run_cli as run

from flopcast.budget.ledger import Ledger
from flopcast.config import save_toml
from flopcast.errors import FlopcastError
from flopcast.study.plan import plan_from_dict
from flopcast.study.runner import run_plan

PLAN = one_stage_plan()


@pytest.fixture(scope="module")
def data_file(sim_file):
    return sim_file


def _train_args(data, out, steps=4, lr="1e-3"):
    return ["train", "--model", "tiny-qwen2", "--data", data, "--steps", steps, "--lr", lr, "--seq-len", 64,
            "--batch-size", 2, "--context", 64, "--max-series", 2, "--budget", 1e12, "-o", out]


# ----------------------------------------------------------------------------- 1. honest re-runs

def test_changed_rerun_stops_and_names_the_keys_then_restart_archives(tmp_path, capsys, data_file):
    out = tmp_path / "R"
    assert run(capsys, *_train_args(data_file, out))[0] == 0
    plan_text, rows = (out / "plan.toml").read_text(), len(Ledger(out / "ledger.db").entries())
    code, _, err = run(capsys, *_train_args(data_file, out, steps=6, lr="1e-2"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "stage.steps: 4 -> 6" in err and "train.lr: 0.001 -> 0.01" in err and "--restart" in err and "--out" in err
    assert (out / "plan.toml").read_text() == plan_text  # the refused plan wrote nothing
    assert len(Ledger(out / "ledger.db").entries()) == rows  # and spent nothing
    # the same settings again: reused, nothing charged
    assert run(capsys, *_train_args(data_file, out))[0] == 0
    assert len(Ledger(out / "ledger.db").entries()) == rows
    # --restart: the old stage's files move to archive/, its FLOPs stay in the ledger, the new run is trained
    used = Ledger(out / "ledger.db").used()
    code, _, err = run(capsys, *_train_args(data_file, out, steps=6, lr="1e-2"), "--restart")
    assert code == 0, err
    archived = list((out / "archive").iterdir())
    assert len(archived) == 1 and (archived[0] / "run" / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "stages" / "train" / "run" / "status.json").read_text())["steps"] == 6
    assert Ledger(out / "ledger.db").used() > used
    assert "steps = 6" in (out / "plan.toml").read_text()


def test_changed_data_is_a_changed_setting(tmp_path, capsys, data_file):
    from flopcast.data.io import load, save_h5

    out, other = tmp_path / "R", tmp_path / "other.h5"
    ds = load(data_file)
    ds.series[0] = ds.series[0] * 1.01
    save_h5(ds, other)
    assert run(capsys, *_train_args(data_file, out))[0] == 0
    code, _, err = run(capsys, *_train_args(other, out))
    assert code == 2 and "data.sha256" in err


def test_changed_train_settings_inside_a_run_dir_are_refused(tmp_path):
    """The run directory itself knows its settings (data hash and fingerprint in config.toml)."""
    from flopcast.config import load_toml
    from flopcast.errors import SettingsChanged

    train_tiny(tmp_path / "run", train_data(), steps=3)
    cfg = load_toml(tmp_path / "run" / "config.toml")
    assert len(cfg["fingerprint"]) == 64 and len(cfg["data_sha256"]) == 64
    tr, va, codec = train_data()
    with pytest.raises(SettingsChanged, match="other data"):
        train_tiny(tmp_path / "run", ([s * 2 for s in tr], va, codec), steps=3)


# ----------------------------------------------------------------------------- 2. one process per directory


def test_second_process_on_a_directory_exits_2_naming_the_pid(tmp_path, capsys, data_file):
    out = tmp_path / "R"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(capsys, *_train_args(data_file, out))
        assert code == 2 and f"{out} is in use by pid {holder.pid}" in err
        assert not (out / "stages").exists()  # nothing was started
    finally:
        holder.kill()
        holder.wait()
    assert run(capsys, *_train_args(data_file, out))[0] == 0  # the lock died with its process


def test_two_train_commands_started_apart_train_once(tmp_path, data_file):
    out = tmp_path / "R"
    cmd = [sys.executable, "-m", "flopcast", *map(str, _train_args(data_file, out, steps=20))]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "stages" / "train" / "run" / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.05)
    # the first command is paused mid-training, so the second starts while it holds the run, however slow the machine
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err1 = first.communicate(timeout=300)
    assert second.returncode == 2 and f"is in use by pid {first.pid}" in second.stderr, second.stderr
    assert first.returncode == 0, err1[-2000:]
    rows = [json.loads(x) for x in (out / "stages" / "train" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 21))


def test_a_budget_changes_only_when_asked(tmp_path, capsys, data_file):
    """Running `train` again without --budget keeps the directory's budget; a plan run again keeps a budget set
    since by `budget set` while the plan's own value stays the same, and a changed plan value is applied and said."""
    from flopcast.config import save_toml

    out = tmp_path / "R"
    assert run(capsys, *_train_args(data_file, out))[0] == 0  # --budget 1e12
    args = [a for a in _train_args(data_file, out)]
    del args[args.index("--budget"):args.index("--budget") + 2]
    assert run(capsys, *args)[0] == 0
    assert Ledger(out / "ledger.db").budget == 1e12

    plan = one_stage_plan(budget=2e10)
    save_toml(plan, tmp_path / "p.toml")
    study = tmp_path / "S"
    assert run(capsys, "run", tmp_path / "p.toml", "--out", study)[0] == 0
    assert run(capsys, "budget", "set", study / "ledger.db", "--budget", 3e10)[0] == 0
    assert run(capsys, "run", tmp_path / "p.toml", "--out", study)[0] == 0
    assert Ledger(study / "ledger.db").budget == 3e10  # the plan's 2e10 is not put back
    save_toml({**plan, "budget": 4e10}, tmp_path / "p.toml")
    with pytest.warns(UserWarning, match=r"3\.000e\+10 -> 4\.000e\+10 FLOPs, as the plan now says"):
        assert run(capsys, "run", tmp_path / "p.toml", "--out", study)[0] == 0
    assert Ledger(study / "ledger.db").budget == 4e10


# ----------------------------------------------------------------------------- 3. leases

RESERVE_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    from flopcast.budget.ledger import Ledger
    lg = Ledger(sys.argv[1])
    i = lg.reserve("eval/S=64", "eval", 500)
    lg.progress(i, 123)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill9_reservation_is_settled_abandoned_on_next_open(tmp_path, capsys):
    db = tmp_path / "l.db"
    Ledger(db, 1000)
    p = subprocess.run([sys.executable, "-c", RESERVE_AND_DIE, str(db)], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    lg = Ledger(db)
    (e,) = lg.entries()
    assert (e.status, e.flops_used) == ("abandoned", 123) and e.owner_pid not in (None, os.getpid())
    assert lg.left() == 1000 - 123  # the bound is free again, what it reported stays counted
    code, out, _ = run(capsys, "budget", "show", db)
    assert code == 0 and "abandoned" in out


def test_budget_release_settles_a_lease_held_elsewhere(tmp_path, capsys):
    import sqlite3

    db = tmp_path / "l.db"
    lg = Ledger(db, 1000)
    i = lg.reserve("eval/S=64", "eval", 600)
    lg.progress(i, 50)
    with sqlite3.connect(db) as c:  # a process on another host: it cannot be checked from here
        c.execute("UPDATE experiments SET owner_host='elsewhere' WHERE id=?", (i,))
    assert Ledger(db).get(i).status == "running" and Ledger(db).left() == 400
    code, out, _ = run(capsys, "budget", "release", db, i)
    assert code == 0 and "released" in out
    assert Ledger(db).get(i).status == "released" and Ledger(db).left() == 950
    code, _, err = run(capsys, "budget", "release", db, i)
    assert code == 2 and "not an open reservation" in err


def test_release_refuses_a_live_owner_on_this_host(tmp_path, capsys):
    db = tmp_path / "l.db"
    lg = Ledger(db, 1000)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from flopcast.budget.ledger import Ledger
        Ledger(sys.argv[1]).reserve("x", "eval", 10)
        print("ok", flush=True)
        time.sleep(60)
    """), str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        code, _, err = run(capsys, "budget", "release", db, lg.entries()[0].id)
        assert code == 2 and f"running process {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- 5. budget

def test_budget_set_raises_and_refuses_lowering_below_used(tmp_path, capsys):
    db = tmp_path / "l.db"
    lg = Ledger(db, 1000)
    lg.settle(lg.reserve("a", "eval", 600), 600)
    code, out, _ = run(capsys, "budget", "set", db, "--budget", 5000)
    assert code == 0 and Ledger(db).budget == 5000
    code, _, err = run(capsys, "budget", "set", db, "--budget", 500)
    assert code == 2 and "cannot lower the budget" in err and Ledger(db).budget == 5000
    assert run(capsys, "budget", "set", db, "--budget", 600)[0] == 0


def test_unaffordable_plan_is_refused_with_numbers_before_anything(tmp_path):
    out = tmp_path / "s"
    with pytest.raises(FlopcastError, match=r"needs at least .* \(initial .*\) but only .* budget are left"):
        run_plan(plan_from_dict({**PLAN, "budget": 1e8}), out, progress=False)
    assert not (out / "plan.toml").exists() and Ledger(out / "ledger.db").entries() == []


def test_training_never_starts_without_its_evaluation_then_raising_the_plan_budget_continues(tmp_path, capsys):
    """A budget that covers the training but not the evaluation after it is refused up front; raising the
    plan's budget on the re-run goes through `budget set` and the study runs."""
    from flopcast.study.preflight import prepare
    from flopcast.study.stages import eval_price, stage_price

    out = tmp_path / "s"
    probe = plan_from_dict(PLAN)
    study = prepare(probe, tmp_path / "probe", progress=False)
    need, ev = stage_price(study, probe.stages[0]).least, eval_price(study, probe.eval.contexts)
    small = {**PLAN, "budget": need - ev // 2}  # the training fits, its evaluation does not
    save_toml(small, tmp_path / "small.toml")
    code, _, err = run(capsys, "run", tmp_path / "small.toml", "--out", out)
    assert code == 2 and "needs at least" in err and Ledger(out / "ledger.db").entries() == []
    save_toml({**PLAN, "budget": need * 2}, tmp_path / "big.toml")
    code, _, err = run(capsys, "run", tmp_path / "big.toml", "--out", out)
    assert code == 0, err
    lg = Ledger(out / "ledger.db")
    assert lg.budget == int(need * 2) and lg.used() <= lg.budget
    assert {e.kind for e in lg.entries()} == {"train", "eval"}  # the hold of the evaluation is gone
    # lowering the plan's budget below what is used is refused, and leaves plan.toml as it was
    text = (out / "plan.toml").read_text()
    save_toml({**PLAN, "budget": lg.used() // 2}, tmp_path / "low.toml")
    code, _, err = run(capsys, "run", tmp_path / "low.toml", "--out", out)
    assert code == 2 and "cannot lower the budget" in err and (out / "plan.toml").read_text() == text


def test_stage_holds_its_evaluation_while_training(tmp_path, monkeypatch):
    import flopcast.study.runner as P

    seen = []
    real = P._train_run

    def spy(study, stage, *a):
        seen.append([(e.kind, e.flops_planned) for e in study.ledger.entries() if e.kind == "hold"])
        return real(study, stage, *a)

    monkeypatch.setattr(P, "_train_run", spy)
    run_plan(plan_from_dict(PLAN), tmp_path / "s", progress=False)
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0][1] > 0
    assert all(e.kind != "hold" for e in Ledger(tmp_path / "s" / "ledger.db").entries())


# ----------------------------------------------------------------------------- 6. checks before spending

def test_series_too_short_for_evaluation_found_before_training(tmp_path):
    plan = plan_from_dict({**PLAN, "eval": {**PLAN["eval"], "protocol": "seed", "contexts": [100000]}})
    with pytest.raises(FlopcastError, match="no evaluation windows"):
        run_plan(plan, tmp_path / "s", progress=False)
    assert Ledger(tmp_path / "s" / "ledger.db").used() == 0


def test_unwritable_forecast_output_found_before_charging(tmp_path, capsys):
    csv_in = tmp_path / "mine.csv"
    csv_in.write_text("prey,predator\n1,1\n1.5,0.8\n2.2,0.6\n")
    (tmp_path / "afile").write_text("x")
    for bad in (["-o", tmp_path / "afile" / "f.csv"], ["--plot", tmp_path / "afile" / "p.png"], ["-o", tmp_path]):
        code, _, err = run(capsys, "forecast", "-i", csv_in, "--model", "tiny-qwen2", "--steps", 2, *bad,
                           "--ledger", tmp_path / "f.db", "--budget", 1e12)
        assert code == 2 and err.count("\n") == 1, err
        assert not (tmp_path / "f.db").exists()  # refused before the ledger was even opened


# ----------------------------------------------------------------------------- 7. numbers

@pytest.mark.parametrize("args, match", [
    (["budget", "init", "{tmp}/a.db", "--budget", "inf"], "finite"),
    (["budget", "init", "{tmp}/a.db", "--budget", "0"], ">= 1"),
    (["budget", "init", "{tmp}/a.db", "--budget", "-5"], ">= 1"),
    (["budget", "init", "{tmp}/a.db", "--budget", "nan"], "finite"),
    (["flops", "--seq", "-5"], "seq must be integers >= 1"),
    (["flops", "--batch", "0"], "batch must be"),
    (["flops", "--rank", "-1"], "rank must be"),
    (["plan", "--seq", "0"], "seq must be"),
    (["plan", "--budget", "inf"], "finite"),
    (["plan", "--rank", "2.5"], "integers"),
    (["train", "--model", "tiny-qwen2", "--max-series", "0", "-o", "{tmp}/r"], "max_series must be >= 1"),
    (["train", "--model", "tiny-qwen2", "--lr", "nan", "-o", "{tmp}/r"], "lr must be a finite number"),
    (["train", "--model", "tiny-qwen2", "--budget", "0", "-o", "{tmp}/r"], "budget"),
    (["sweep", "--model", "tiny-qwen2", "--lr", "1e-3,inf", "-o", "{tmp}/r"], "lr must be a finite number"),
    (["eval", "--model", "tiny-qwen2", "--max-series", "0"], "max_series must be >= 1"),
    (["eval", "--model", "tiny-qwen2", "--batch-size", "0"], "batch_size"),
    (["forecast", "-i", "{tmp}/x.csv", "--model", "tiny-qwen2", "--context-tokens", "0"], "context_tokens"),
    (["forecast", "-i", "{tmp}/x.csv", "--model", "tiny-qwen2", "--samples", "0"], "n_samples"),
    (["data", "simulate", "-o", "{tmp}/s.h5", "--t-end", "inf"], "t_end"),
    (["data", "inspect", "{tmp}/x.csv", "--n-plot", "0"], "n_plot"),
    (["encode", "--steps", "0", "--model", "tiny-qwen2"], "steps must be"),
])
def test_every_number_is_validated(tmp_path, capsys, args, match):
    (tmp_path / "x.csv").write_text("prey,predator\n1,1\n2,2\n3,1\n")
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and match in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("change, match", [
    ({"budget": float("inf")}, "budget must be a finite"),
    ({"train": {"lr": float("nan")}}, "lr must be a finite"),
    ({"train": {"steps": 3.5}}, "steps must be an integer"),
    ({"split": {"seed": -1}}, "seed must be >= 0"),
    ({"eval": {"n_boot": -1}}, "n_boot"),
    ({"lora": {"alpha": float("inf")}}, "alpha"),
])
def test_plan_numbers_are_validated(change, match):
    with pytest.raises(FlopcastError, match=match):
        plan_from_dict({**PLAN, **change})


def test_plan_reports_every_problem_at_once():
    bad = {**PLAN, "stages": [{"name": "a", "kind": "train", "stepz": 3}, {"name": "b", "kind": "train", "lr": [1.0]},
                              {"name": "c", "kind": "eval", "adapter_from": "a", "steps": 4},
                              {"name": "d", "kind": "grid", "lr": [1e-3, -1], "rank": [2]}]}
    with pytest.raises(FlopcastError) as ei:
        plan_from_dict(bad)
    msg = str(ei.value)
    assert "\n" not in msg
    for part in ("'a': stepz not allowed in a train stage", "'b': lr not allowed",
                 "'c': steps not allowed in an eval stage",
                 "'d': lr must be a finite number > 0, got -1"):
        assert part in msg, msg


def test_diverged_loss_stops_the_run_and_is_never_done(tmp_path, monkeypatch, capsys, data_file):
    import flopcast.training.engine as T

    real = T._loss_fn
    calls = []

    def poisoned(model, head_ids, vocab, device):
        fn = real(model, head_ids, vocab, device)

        def loss(b):
            calls.append(1)
            return fn(b) * (float("nan") if len(calls) >= 3 else 1.0)
        return loss

    monkeypatch.setattr(T, "_loss_fn", poisoned)
    out = tmp_path / "R"
    code, _, err = run(capsys, *_train_args(data_file, out, steps=8))
    assert code == 2 and "diverged" in err and "lower the learning rate" in err and err.count("\n") == 1
    st = json.loads((out / "stages" / "train" / "run" / "status.json").read_text())
    assert st["status"] == "diverged" and st["steps"] == 3
    (e,) = [e for e in Ledger(out / "ledger.db").entries() if e.kind == "train"]
    assert e.status == "diverged" and e.flops_used == st["flops"] > 0
    assert not (out / "stages" / "train" / "stage.json").exists()
    rows = len(Ledger(out / "ledger.db").entries())
    monkeypatch.setattr(T, "_loss_fn", real)
    code, _, err = run(capsys,
                       *_train_args(data_file, out, steps=8))  # the same command: still diverged, not re-charged
    assert code == 2 and "diverged" in err and len(Ledger(out / "ledger.db").entries()) == rows


# ----------------------------------------------------------------------------- 8. CSV columns

def test_csv_id_and_time_columns_are_not_variables(tmp_path, capsys):
    f = tmp_path / "long.csv"
    rows = ["item_id,timestamp,prey,predator"]
    for sid, n in (("a", 6), ("b", 8)):
        rows += [f"{sid},2024-01-0{d + 1},{1 + 0.1 * d},{2 - 0.1 * d}" for d in range(n)]
    f.write_text("\n".join(rows) + "\n")
    code, out, _ = run(capsys, "data", "inspect", f)
    assert code == 0 and "id_column" in out and "item_id" in out and "timestamp" in out and '"prey", "predator"' in out
    code, out, err = run(capsys, "forecast", "-i", f, "--model", "tiny-qwen2", "--steps", 2, "-o", tmp_path / "o.csv")
    assert code == 0, err
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert lines[0] == "item_id,timestamp,prey,predator" and [ln.split(",")[:2] for ln in lines[1:]] == [
        ["a", "2024-01-07"], ["a", "2024-01-08"], ["b", "2024-01-09"], ["b", "2024-01-10"]]
    # explicit columns; '' turns recognition off (then the id and time columns are text: not variables, said)
    with pytest.warns(UserWarning, match="item_id, timestamp hold text, not numbers: not variables"):
        code, _, err = run(capsys, "data", "inspect", f, "--id-column", "", "--time-column", "")
    assert code == 0
    code, _, err = run(capsys, "data", "inspect", f, "--id-column", "nope")
    assert code == 2 and "id_column='nope' is not a column" in err


def test_plan_data_table_with_columns(tmp_path):
    from flopcast.data.io import load

    f = tmp_path / "d.csv"
    f.write_text("series,prey,predator\n" + "".join(f"{i % 3},{1 + i % 5},{2 + i % 3}\n" for i in range(90)))
    plan = plan_from_dict({**PLAN, "data": {"path": str(f), "id_column": "series"}})
    assert plan.data.id_column == "series" and load(plan.data).n_series == 3


# ----------------------------------------------------------------------------- 9. no ceiling

def test_forecasts_above_999_parse_and_the_cap_is_reported():
    from flopcast.config import CodecConfig, ForecastConfig
    from flopcast.encoding.codec import LLMTimeCodec
    from flopcast.encoding.grammar import int_digits_for
    from flopcast.encoding.scaling import Scale
    from flopcast.forecasting.forecast import forecast

    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0))
    assert int_digits_for(["1.00,2.00;"], codec.config) == 3 and int_digits_for(["12345.00,2.00;"], codec.config) == 6
    assert int_digits_for(["1234,5;"], CodecConfig(drop_decimal_point=True)) == 3  # 12.34: 2 integer digits
    model, tok = lively_tiny()
    ctx = [np.full((6, 2), 5000.0) + np.arange(12).reshape(6, 2)]
    res = forecast(model, tok, codec, ctx, ForecastConfig(horizon=3))
    assert res.int_digits == 5 and res.parse_ok.all() and res.capped is not None
    values = [v for v in res.texts[0][0].replace(";", ",").split(",") if v]
    assert res.capped_rate == float(max(len(v.split(".")[0]) for v in values) >= 5)


def test_seed_protocol_on_large_values_parses(tmp_path):
    from flopcast.config import CodecConfig, EvalConfig
    from flopcast.data.dataset import Dataset
    from flopcast.encoding.codec import LLMTimeCodec
    from flopcast.encoding.scaling import Scale
    from flopcast.evaluation.evaluate import EvalRun, evaluate

    rng = np.random.default_rng(0)
    ds = Dataset([2000 + 500 * rng.random((40, 2)) for _ in range(3)])
    model, tok = lively_tiny()
    res = evaluate(model, tok, LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0)), ds,
                   EvalConfig(protocol="seed", contexts=(64,), window_stride_tokens=32, baselines=(), n_boot=10),
                   EvalRun(progress=False))
    m = res.score(64)
    assert m.n_windows > 3 and m.parse_failure_rate == 0 and m.int_digits == 5


# ----------------------------------------------------------------------------- 10./11. models and pins

def test_mistyped_model_names_fail_at_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a closed local port: the Hub is "unreachable" without leaving here
    for name, match in (("no-such-org/no-such-model-xyz", "local directory"),
                        ("smollm-135", "not a built-in name (smollm2-135m")):
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "flopcast", "eval", "--model", name, "--max-series", "1"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert p.returncode == 2 and match in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert time.time() - t < 30  # imports included; hub retries took 49-95 s


def test_decoding_uses_the_current_cache_api(tiny):
    import warnings

    from flopcast.config import CodecConfig, ForecastConfig
    from flopcast.encoding.codec import LLMTimeCodec
    from flopcast.encoding.scaling import Scale
    from flopcast.forecasting.forecast import forecast

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forecast(tiny.model, tiny.tokenizer, LLMTimeCodec(CodecConfig(), Scale.identity()), [np.ones((4, 2))],
                 ForecastConfig(horizon=2))
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_pins_cover_the_installed_versions():
    """The upper bounds in pyproject are versions the tests have seen: the installed ones must satisfy them."""
    import importlib.metadata as md
    import re

    from packaging.specifiers import SpecifierSet

    from flopcast.config import tomllib

    pyproject = ROOT / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for dep in deps:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*([^;]*)", dep).groups()
        if name in ("transformers", "peft", "accelerate", "torch"):
            assert "<" in spec, f"{name} needs an upper bound"
            version = md.version(name).split("+")[0]
            assert version in SpecifierSet(spec), f"{name} {version} not in {spec}"
