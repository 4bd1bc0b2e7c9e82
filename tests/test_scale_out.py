"""A study's training runs on a local Ray (2 CPUs, 2 workers), against the same plan run sequentially: the same
best runs, validation losses and ledger total; one ledger written by one process; a worker killed in the middle of
a run is settled as abandoned and the run retried from its checkpoint, its redone steps charged."""

import json
import os
import signal
import sqlite3
import threading
import time

import pytest
from helpers import tiny_plan

from flopcast.budget.ledger import Ledger
from flopcast.study.plan import plan_from_dict
from flopcast.study.runner import run_plan

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

GRID = {"name": "grid", "kind": "grid", "lr": [1e-3, 3e-3], "rank": [2], "steps": 3, "evaluate": False}
CONTEXT = {"name": "context", "kind": "context", "base": "grid", "seq_len": [32, 64], "steps": 3, "evaluate": False}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _runs(summary):
    return {(name, r.run): (r.steps, r.flops, r.status, r.val_loss) for name, st in summary.stages.items()
            for r in st.runs}


def test_flopcast_run_ray_gives_the_sequential_answers(local_ray, tmp_path, capsys):
    """``flopcast run PLAN --ray`` (no address: the running local instance): the same runs, validation losses,
    best runs, test scores and ledger total as the sequential study; training and evaluations in the workers'
    names; a later sequential run reuses every run."""
    from helpers import run_cli

    from flopcast.cli import optional_value
    from flopcast.config import save_toml

    assert optional_value(["run", "p.toml", "--ray"], "--ray", "local") == ["run", "p.toml", "--ray", "local"]
    assert optional_value(["run", "--ray", "-o", "d"], "--ray", "local") == ["run", "--ray", "local", "-o", "d"]
    assert optional_value(["run", "--ray", "auto"], "--ray", "local") == ["run", "--ray", "auto"]
    plan = tiny_plan(name="t", stages=[{"name": "zero_shot", "kind": "eval"}, GRID, {**CONTEXT, "evaluate": True}])
    seq = run_plan(plan_from_dict(plan), tmp_path / "seq", progress=False)
    save_toml(plan, tmp_path / "p.toml")
    code, _, err = run_cli(capsys, "run", tmp_path / "p.toml", "--ray", "-o", tmp_path / "ray")
    assert code == 0, err
    par = run_plan(plan_from_dict(plan), tmp_path / "ray", progress=False)  # sequential again: everything read back
    assert [st.best.run for st in par.stages.values() if st.best] == [st.best.run for st in seq.stages.values()
                                                                      if st.best]
    for name in ("zero_shot", "context"):  # evaluated on a worker: the same scores
        assert par.stages[name].test.score(64).mse == pytest.approx(seq.stages[name].test.score(64).mse, rel=1e-6)
    a, b = _runs(seq), _runs(par)
    assert a.keys() == b.keys() and len(a) == 4
    for k in a:
        assert a[k][:3] == b[k][:3] and a[k][3] == pytest.approx(b[k][3], rel=1e-4), k
    led_seq, led_par = Ledger(tmp_path / "seq" / "ledger.db"), Ledger(tmp_path / "ray" / "ledger.db")
    assert led_par.used() == led_seq.used() > 0
    rows = [e for e in led_par.entries() if e.kind == "train"]
    assert len(rows) == 4 and all(e.status == "done" for e in rows)
    assert len({e.owner_pid for e in rows} - {os.getpid()}) >= 2  # leases in the workers' names, two workers
    evals = [e for e in led_par.entries() if e.kind == "eval"]
    assert len(evals) == 2 and os.getpid() not in {e.owner_pid for e in evals}  # evaluated on workers
    for st, r in b:
        assert (tmp_path / "ray" / "stages" / st / r / "adapter_best").is_dir()


def _query(db, sql: str) -> list:
    """The rows of ``sql`` on the ledger ``db`` while a study writes it; none before the file exists (never made
    here). Not opened read-only: between two of the study's connections a WAL database has no -wal and -shm files,
    and a read-only connection cannot make them ("unable to open database file")."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def _kill_a_running_worker(db, killed: list, stop: threading.Event) -> None:
    """Kill (SIGKILL) the worker of the first training run that has charged a few steps."""
    while not stop.is_set() and not killed:
        rows = _query(db, "SELECT name, owner_pid, steps FROM experiments WHERE kind='train' AND "
                      "status='running' AND steps >= 6")
        row = rows[0] if rows else None
        if row and row[1] != os.getpid():
            os.kill(row[1], signal.SIGKILL)
            killed.append(row)
        time.sleep(0.02)


def test_a_killed_worker_is_settled_and_its_run_retried_from_its_checkpoint(local_ray, tmp_path):
    """(Its runs ask for two processes, which Ray does not give them: a warning says so.)"""
    grid = {**GRID, "steps": 12, "train": {"checkpoint_every": 4, "eval_every": 4, "processes": 2}}
    plan = plan_from_dict(tiny_plan(name="t", stages=[grid]))
    killed: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_a_running_worker, args=(tmp_path / "ray" / "ledger.db", killed, stop))
    watcher.start()
    try:
        with pytest.warns(UserWarning, match=r"'grid': its runs train on Ray in one process each; \[train\] proc"):
            par = run_plan(plan, tmp_path / "ray", progress=False, executor="ray")
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was killed"
    name = killed[0][0]
    rows = Ledger(tmp_path / "ray" / "ledger.db").entries()
    (mine,) = [e for e in rows if e.name == name]  # one row, settled as abandoned, then adopted by the retry
    (other,) = [e for e in rows if e.kind == "train" and e.name != name]  # the same shape, never killed
    assert mine.status == other.status == "done" and mine.steps == other.steps == 12
    assert {r.status for r in par.stages["grid"].runs} == {"done"}
    assert mine.flops_used > other.flops_used  # the steps after its last checkpoint ran twice and are charged twice
    redone = json.loads((tmp_path / "ray" / "stages" / name / "flops.json").read_text())["redone"]
    assert mine.flops_used == other.flops_used + redone > other.flops_used


def test_runs_shipped_back_from_workers_that_do_not_see_the_study(local_ray, tmp_path):
    """Workers without the study directory train in their own and send each run back: the same run directories,
    results and ledger rows as runs written in place. Runs asking for both CPUs train one after the other: a run
    waiting on the ledger's actor does not lend its CPUs to another run."""
    from dataclasses import replace

    from flopcast.study import scale_out
    from flopcast.study.preflight import prepare
    from flopcast.study.runner import _spec
    from flopcast.study.stages import stage_work

    plan = plan_from_dict(tiny_plan(name="t", stages=[GRID]))
    study = prepare(plan, tmp_path / "s", progress=False)
    specs = [_spec(study, plan.stages[0], r) for r in stage_work(plan, plan.stages[0]).runs]
    actor = scale_out.start(None, study.ledger)
    shipped = scale_out.train_parallel(specs, plan.model, plan.seed, replace(plan.resources, cpus=2), study.out,
                                       actor, False, False)
    assert [r.run_dir for r in shipped] == [s.dir for s in specs]
    for spec, r in zip(specs, shipped):
        assert r.status == "done" and r.steps == 3
        assert {"adapter_best", "checkpoint", "metrics.jsonl", "flops.json"} <= {p.name for p in spec.dir.iterdir()}
    rows = sorted((e for e in study.ledger.entries() if e.kind == "train"), key=lambda e: e.created)
    assert sorted(e.name for e in rows) == sorted(s.name for s in specs) and all(e.status == "done" for e in rows)
    assert sum(e.flops_used for e in rows) == sum(r.flops for r in shipped)
    assert rows[0].updated <= rows[1].created  # one at a time: the second reserved after the first settled


def test_a_run_waiting_on_the_ledger_keeps_its_cpus(local_ray):
    """A task blocked in ``ray.get`` lends its CPUs to the scheduler, which starts another run on them (both then
    share the cores for the rest of their training: each run 5x slower in benchmarks/scale_out.py). A run waiting
    for the ledger's answer keeps them: a second run asking for the same CPUs starts only after the first ends."""

    class SlowService:  # defined here, so that Ray ships it by value to workers that cannot import the tests
        def call(self, method, args, kwargs):
            time.sleep(4)
            return method

    def wait_on_the_ledger(actor):
        from flopcast.study.scale_out import RemoteLedger

        t0 = time.time()
        RemoteLedger(actor)._call("find")
        return t0, time.time()

    actor = ray.remote(num_cpus=0)(SlowService).remote()
    task = ray.remote(num_cpus=2)(wait_on_the_ledger)
    first = task.remote(actor)
    time.sleep(1.0)
    second = task.remote(actor)
    (_, first_end), (second_start, _) = ray.get([first, second])
    assert second_start >= first_end - 0.05


CTRL_C_DRIVER = """
import signal
import sys
import time
sys.path.insert(0, {tests!r})
import ray
from helpers import tiny_plan
from flopcast.study.plan import plan_from_dict
from flopcast.study import scale_out
from flopcast.study.runner import run_plan


class SlowLedger(scale_out.LedgerService):  # runs wait on the ledger most of the time: a signal finds a call
    def call(self, method, args, kwargs):
        if method == "reserve":  # a file says a run is reserving (still setting up)
            open({out!r} + ".reserving", "w").close()
            time.sleep({reserve_s!r})
        time.sleep(0.05)
        return super().call(method, args, kwargs)


scale_out.LedgerService = SlowLedger
signal.signal(signal.SIGINT, signal.default_int_handler)  # not the SIG_IGN a background job's parent passes on
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
try:
    run_plan(plan_from_dict(tiny_plan(name="t", budget=1e11, stages={stages!r})), {out!r}, progress=False,
             executor="ray")
except KeyboardInterrupt:
    sys.exit(130)
"""


CTRL_C_GRID = {**GRID, "steps": 150, "train": {"checkpoint_every": 5, "eval_every": 50}}


def _driver_in_training(tmp_path, reserving: bool = False, stages: list | None = None):
    """A study's driver (a process of its own with its own Ray), once both its runs have charged 3 steps (or,
    ``reserving``, once a run or evaluation of ``stages`` has begun to reserve its row, which then takes 3 s);
    the process and the study directory."""
    import subprocess
    import sys

    from helpers import TESTS

    out = tmp_path / "s"
    script = tmp_path / "driver.py"
    script.write_text(CTRL_C_DRIVER.format(tests=str(TESTS), stages=stages or [CTRL_C_GRID], out=str(out),
                                           reserve_s=3.0 if reserving else 0.0))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    db, deadline = out / "ledger.db", time.time() + 240
    while time.time() < deadline and p.poll() is None:  # a row just reserved shows its planned steps, no FLOPs
        if reserving and (tmp_path / "s.reserving").is_file():
            break
        rows = _query(db, "SELECT steps, flops_used FROM experiments WHERE kind='train' AND status='running'")
        if not reserving and len(rows) == 2 and all(s is not None and s >= 3 and f > 0 for s, f in rows):
            break
        time.sleep(0.1)
    if p.poll() is not None or time.time() >= deadline:
        p.kill()
        raise AssertionError(f"the driver did not get both runs to step 3 (exit {p.wait()}): "
                             f"{p.communicate()[1][-5000:]}")
    return p, out


def _rerun_finishes_both_runs(out):
    """The same study run again (sequentially) finishes both runs in their own rows."""
    again = run_plan(plan_from_dict(tiny_plan(name="t", budget=1e11, stages=[CTRL_C_GRID])), out, progress=False)
    rows = [e for e in Ledger(out / "ledger.db").entries() if e.kind == "train"]
    assert len(rows) == 2 and all(e.status == "done" and e.steps == 150 for e in rows), rows
    assert all(r.steps == 150 for r in again.stages["grid"].runs)


def test_ctrl_c_on_the_driver_stops_every_run_and_a_rerun_resumes(tmp_path):
    """Ctrl-C on a study's driver: every run still training on Ray stops as SIGTERM stops a run -- checkpointed,
    its ledger row settled, none left running -- and the same study run again resumes each run from its
    checkpoint in its own row. The driver's ledger answers slowly, so the signal finds a run waiting on it: the
    cancel must stop the run, not its call to the ledger (which left the row running in 1 test run of 12 with a ledger
    answering at once)."""
    p, out = _driver_in_training(tmp_path)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 130, (p.returncode, err[-5000:])
    rows = [e for e in Ledger(out / "ledger.db").entries() if e.kind == "train"]
    # every run still training stopped with a checkpoint (one may have finished before the signal came)
    stopped = [e for e in rows if e.status == "interrupted"]
    assert len(rows) == 2 and stopped and all(e.status in ("interrupted", "done") for e in rows), rows
    assert all(0 < e.steps < 150 for e in stopped)
    _rerun_finishes_both_runs(out)


def test_ctrl_c_while_runs_set_up_closes_their_rows(tmp_path):
    """Ctrl-C on the driver while its runs are still setting up (one waiting for its row's reservation): no row is
    left open -- a Ray worker outlives its task, so an open lease would never be reaped -- and a re-run trains both
    runs."""
    p, out = _driver_in_training(tmp_path, reserving=True)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 130, (p.returncode, err[-5000:])
    rows = [e for e in Ledger(out / "ledger.db").entries() if e.kind == "train"]
    assert rows and all(e.status == "interrupted" and e.flops_used == 0 for e in rows), rows
    again = run_plan(plan_from_dict(tiny_plan(name="t", budget=1e11, stages=[CTRL_C_GRID])), out, progress=False)
    assert [r.steps for r in again.stages["grid"].runs] == [150, 150]  # no checkpoint yet: new rows, from step 0


def test_ctrl_c_while_an_evaluation_reserves_closes_its_row(tmp_path):
    """The same for a stage's evaluation on Ray stopped while its first row is being reserved."""
    p, out = _driver_in_training(tmp_path, reserving=True, stages=[{"name": "zero_shot", "kind": "eval"}])
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 130, (p.returncode, err[-5000:])
    rows = [e for e in Ledger(out / "ledger.db").entries() if e.kind == "eval"]
    assert rows and all(e.status == "interrupted" for e in rows), rows


def test_a_killed_driver_resumes_on_rerun(tmp_path):
    """kill -9 on a study's driver: its Ray's workers exit within seconds (until then a re-run stops with one line:
    the run's directory is in use), and the same study run again settles the runs' leases as abandoned (FLOPs
    kept) and resumes each run from its checkpoint in its own row."""
    p, out = _driver_in_training(tmp_path)
    before = {e.id: e for e in Ledger(out / "ledger.db").entries() if e.kind == "train"}
    p.kill()
    p.communicate(timeout=60)
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(e.owner_pid) for e in before.values()):
        time.sleep(0.2)
    rows = {e.id: e for e in Ledger(out / "ledger.db").entries() if e.kind == "train"}  # opening it reaps
    seen = {i: (e.status, e.steps, e.flops_used) for i, e in rows.items()}, {i: (e.status, e.steps, e.flops_used)
                                                                            for i, e in before.items()}
    assert {e.status for e in rows.values()} == {"abandoned"} and rows.keys() == before.keys(), seen
    assert all(rows[i].flops_used >= before[i].flops_used > 0 for i in rows), seen
    _rerun_finishes_both_runs(out)
    assert {e.id for e in Ledger(out / "ledger.db").entries() if e.kind == "train"} == before.keys()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
