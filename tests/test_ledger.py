import multiprocessing as mp
import sqlite3

import pytest

from flopcast.api.tools import export_ledger
from flopcast.budget.ledger import Ledger
from flopcast.errors import BudgetExceeded, FlopcastError


def test_reserve_settle_release(tmp_path):
    lg = Ledger(tmp_path / "l.db", budget=1000)
    a = lg.reserve("train-a", "train", 600, model="m", seq=128, batch=4, rank=8, steps=10)
    assert lg.left() == 400
    with pytest.raises(BudgetExceeded, match=r"needs 5\.000e\+02 FLOPs but only 4\.000e\+02"):
        lg.reserve("train-b", "train", 500)
    lg.settle(a, 450, wall_s=1.5)  # used less than planned: the rest is released
    assert lg.left() == 550 and lg.used() == 450
    e = lg.get(a)
    assert (e.status, e.flops_used, e.seq, e.rank) == ("done", 450, 128, 8)


def test_progress_survives_and_resume(tmp_path):
    p = tmp_path / "l.db"
    lg = Ledger(p, budget=1000)
    i = lg.reserve("final", "train", 300)
    lg.progress(i, 350, steps=7)  # overran its plan: committed is max(planned, used)
    again = Ledger(p)  # another process opens the same file
    assert again.left() == 650
    r = again.resume("final")
    assert r is not None and r.id == i and r.flops_used == 350 and r.steps == 7
    again.settle(i, 400)
    assert again.resume("final") is None and again.left() == 600


def test_budget_required_and_consistent(tmp_path):
    with pytest.raises(FlopcastError, match="needs a budget"):
        Ledger(tmp_path / "new.db")
    Ledger(tmp_path / "b.db", 100)
    with pytest.raises(FlopcastError, match="ledger budget is"):
        Ledger(tmp_path / "b.db", 200)


def test_not_a_ledger(tmp_path):
    (tmp_path / "x.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FlopcastError, match="not a flopcast ledger"):
        Ledger(tmp_path / "x.db", 10)


def test_csv_export(tmp_path):
    lg = Ledger(tmp_path / "l.db", budget=1e17)
    lg.settle(lg.reserve("eval-zero-shot", "eval", 2.5e13), 2.5e13, wall_s=3.0)
    text = export_ledger(lg.path, None)
    header, row = text.strip().splitlines()
    assert header.startswith("id,name,kind") and "eval-zero-shot" in row and "25000000000000" in row


def _worker(path, n, out, done):
    lg = Ledger(path)
    ok = 0
    for k in range(n):
        try:
            lg.reserve(f"w-{k}", "train", 7)
            ok += 1
        except BudgetExceeded:
            pass
    out.put(ok)
    done.wait(120)  # hold the leases: a reservation whose process is gone is released on the next open


def test_eight_processes_cannot_oversubscribe(tmp_path):
    p = tmp_path / "l.db"
    Ledger(p, budget=100)
    ctx = mp.get_context("spawn")
    q, done = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(str(p), 10, q, done)) for _ in range(8)]
    for pr in procs:
        pr.start()
    granted = sum(q.get(timeout=120) for _ in procs)
    assert granted == 100 // 7  # 14 reservations of 7 fit in 100; 80 were asked for
    db = sqlite3.connect(p)
    assert db.execute("SELECT SUM(flops_planned) FROM experiments").fetchone()[0] <= 100
    assert Ledger(p).left() == 100 - 7 * granted
    done.set()
    for pr in procs:
        pr.join(120)
