"""The misuse harness: every CLI command, each of its options given a generated bad value, and one invariant for
all of them. A command succeeds, or exits 2 with exactly one ``error:`` line; it never shows a traceback; no file
it was not asked to write changes (hashes before and after); nothing appears outside the paths it names (and the
documented ``runs/`` defaults); a ledger stays a ledger and never holds fewer FLOPs than before.

The commands and their options are read from the CLI itself, so a new command or option is covered as soon as it
exists: a command without a known-good invocation in :data:`BASE` fails :func:`test_every_command_has_a_base`.
The values come from each option's type (:func:`values_for`). The Python API gets the same treatment with
Hypothesis in ``test_misuse_api.py``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import typing
from pathlib import Path

import pytest
from helpers import TINY_PLAN

from flopcast.budget.ledger import Ledger
from flopcast.config import SimConfig, save_toml
from flopcast.data.io import save_h5
from flopcast.data.simulate import simulate

PLAN = {**TINY_PLAN, "name": "m", "budget": 1e13, "simulate": {"n_systems": 10, "n_steps": 30},
        "eval": {**TINY_PLAN["eval"], "max_series": 1, "n_boot": 10}, "stages": [{"name": "zs", "kind": "eval"}]}
TINY = ["--model", "tiny-qwen2"]
EVAL = ["--context", "64", "--max-series", "1"]
# a known-good invocation of every command, run in the sandbox (see sandbox())
BASE: dict[str, list[str]] = {
    "flops": ["flops", *TINY],
    "plan": ["plan", *TINY, "--budget", "1e12"],
    "encode": ["encode", "d.h5", *TINY, "--steps", "3"],
    "eval": ["eval", *TINY, "--data", "d.h5", *EVAL, "--baselines", "persistence", "-o", "E", "--ledger", "l.db"],
    "baselines": ["baselines", "--data", "d.h5", *EVAL, "--baselines", "persistence", "-o", "B"],
    "forecast": ["forecast", "--input", "d.csv", *TINY, "--steps", "2", "-o", "f.csv", "--ledger", "l.db"],
    "run": ["run", "p.toml", "--out", "R"],
    "train": ["train", *TINY, "--data", "d.h5", "--steps", "1", "--seq-len", "32", "--batch-size", "1", *EVAL,
              "--budget", "1e12", "-o", "T"],
    "sweep": ["sweep", *TINY, "--data", "d.h5", "--lr", "1e-3", "--rank", "2", "--steps", "1", "--seq-len", "32",
              "--batch-size", "1", *EVAL, "--budget", "1e12", "-o", "W"],
    "report": ["report", "S"],
    "data simulate": ["data", "simulate", "-o", "sim.h5", "--n", "2", "--steps", "10"],
    "data inspect": ["data", "inspect", "d.h5"],
    "data split": ["data", "split", "d.h5", "-o", "split.json"],
    "budget init": ["budget", "init", "new.db", "--budget", "1e12"],
    "budget set": ["budget", "set", "l.db", "--budget", "2e15"],
    "budget release": ["budget", "release", "l.db", "1"],
    "budget rebuild": ["budget", "rebuild", "S", "--force"],
    "budget show": ["budget", "show", "l.db"],
    "budget export": ["budget", "export", "l.db", "-o", "x.csv"],
}
HEAVY = {"eval", "forecast", "run", "train", "sweep", "baselines"}  # a success costs seconds: fewer cases
OUTPUT_OPTIONS = ("-o", "--out", "--plot")
LIMIT_S = 30  # a case still running after this long is a bug too (a value that makes the work endless)
PATHS = ["", "nope/x.h5", "dir", "d.h5", "d.csv", "l.db", "exists.csv", "empty.csv", "empty.h5", "other.db", "junk.bin",
         "trunc.h5", "p.toml", "dâtä€.csv", "/proc/flopcast-misuse/x.csv"]
NUMBERS = ["0", "-1", "2.5", "1e30", "nan", "inf", "abc", ""]
STRINGS = ["", "ü€", "a,b", "-1", "2.5", "1e30", "nan", "x" * 300]


# ----------------------------------------------------------------------------- the commands, read from the CLI

def commands() -> dict[str, list[tuple[str, str, typing.Any]]]:
    """Every command (``data split``) with its parameters: (name, option or "" for an argument, Python type)."""
    import typer._click.core as click_core
    import typer.main

    from flopcast.cli import app

    found: dict[str, list[tuple[str, str, typing.Any]]] = {}

    def walk(cmd: typing.Any, prefix: tuple[str, ...]) -> None:
        ctx = click_core.Context(cmd)
        if hasattr(cmd, "list_commands"):
            for n in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, n), (*prefix, n))
            return
        hints = typing.get_type_hints(cmd.callback)
        found[" ".join(prefix)] = [(p.name, p.opts[0] if p.param_type_name == "option" else "", _bare(hints[p.name]))
                                   for p in cmd.params]

    walk(typer.main.get_command(app), ())
    return found


def _bare(t: typing.Any) -> typing.Any:
    """``Optional[X]`` -> X."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if typing.get_origin(t) is typing.Union and len(args) == 1 else t


def values_for(t: typing.Any) -> list[str]:
    if t is bool:
        return []
    if t is Path:
        return PATHS
    if t in (int, float):
        return NUMBERS
    return STRINGS


def with_value(base: list[str], option: str, position: int, value: str) -> list[str]:
    """``base`` with one option (or the ``position``-th argument) set to ``value``."""
    argv = list(base)
    if option:
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        return argv
    words = len(_name_words(base))
    args = [i for i in range(words, len(argv)) if not argv[i].startswith("-") and not argv[i - 1].startswith("-")]
    if position < len(args):
        argv[args[position]] = value
    return argv


def _name_words(argv: list[str]) -> list[str]:
    return argv[:2] if argv[0] in ("data", "budget") else argv[:1]


def cases(seed: int = 0) -> list[tuple[str, list[str]]]:
    """(id, argv) of every generated case: all of them for light commands, a seeded sample for heavy ones."""
    rng = random.Random(seed)
    out = []
    for name, params in commands().items():
        mine = []
        position = 0
        for pname, option, t in params:
            for v in values_for(t):
                mine.append((f"{name}|{option or pname}={v[:12]}", with_value(BASE[name], option, position, v)))
            position += 0 if option else 1
        out += rng.sample(mine, min(len(mine), 14)) if name in HEAVY else mine
    return out


def test_every_command_has_a_base():
    assert set(commands()) == set(BASE), "a command without a known-good invocation in BASE"


# ----------------------------------------------------------------------------- the sandbox and the invariant

@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A finished eval-only study, copied into the sandboxes that name it (report, budget rebuild)."""
    from flopcast.study.plan import plan_from_dict
    from flopcast.study.runner import run_plan

    out = tmp_path_factory.mktemp("study") / "S"
    run_plan(plan_from_dict(PLAN), out, progress=False)
    return out


def sandbox(d: Path, study: Path) -> None:
    ds = simulate(SimConfig(n_systems=6, n_steps=30, seed=2))
    save_h5(ds, d / "d.h5")
    rows = ["id,time,prey,predator"] + [f"{i},{t},{v[0]:.4f},{v[1]:.4f}" for i, s in enumerate(ds.series[:2])
                                        for t, v in enumerate(s)]
    (d / "d.csv").write_text("\n".join(rows) + "\n")
    lg = Ledger(d / "l.db", 1e15)
    lg.settle(lg.reserve("earlier", "eval", 1e9), 1e9)
    save_toml(PLAN, d / "p.toml")
    (d / "exists.csv").write_text("keep me\n")
    (d / "empty.csv").write_bytes(b"")
    (d / "empty.h5").write_bytes(b"")
    (d / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (d / "trunc.h5").write_bytes((d / "d.h5").read_bytes()[:300])
    (d / "dir").mkdir()
    with sqlite3.connect(d / "other.db") as c:
        c.execute("CREATE TABLE t (x)")
    shutil.copytree(study, d / "S")


def snapshot(d: Path) -> dict[str, str]:
    """Hash of every file under ``d`` (an SQLite database's -wal and -shm files are part of it: see ledgers())."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def ledgers(d: Path) -> dict[str, int]:
    """FLOPs used per ledger under ``d``, read without writing (another program's database stays as it is)."""
    out = {}
    for p in d.rglob("*.db"):
        try:
            with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as c:
                out[str(p.relative_to(d))] = int(c.execute("SELECT COALESCE(SUM(flops_used), 0) FROM experiments")
                                                 .fetchone()[0])
        except sqlite3.Error:  # another program's database, or not a database
            continue
    return out


def check_invariant(d: Path, argv: list[str], code: int, err: str, before: dict[str, str],
                    used_before: dict[str, int]) -> None:
    assert code in (0, 2), f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    named = [a for a in argv if not a.startswith("-")]
    if "" in named:  # typer reads an empty path as "." (the working directory): it is named, as a whole
        return
    outputs = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in OUTPUT_OPTIONS}
    writable = {o for o in outputs if "--force" in argv or o not in before}
    after = snapshot(d)
    for f, h in before.items():
        if f in used_before:  # a ledger: still one, never with fewer FLOPs
            assert ledgers(d).get(f, -1) >= used_before[f], f"{f}: ledger lost FLOPs or was destroyed"
        elif not any(f == w or f.startswith(w.rstrip("/") + "/") for w in writable | {"S", "runs"}):
            assert after.get(f) == h, f"{f} changed or vanished"
    for f in set(after) - set(before):
        assert any(f == n or f.startswith(n.rstrip("/") + "/") for n in [*named, "runs"]), f"{f} written unasked"


@pytest.mark.slow
@pytest.mark.parametrize("argv", [c[1] for c in cases()], ids=[c[0] for c in cases()])
def test_misuse(argv, tmp_path, study_dir, capsys, monkeypatch):
    from flopcast.cli import main

    d = tmp_path / "box"
    d.mkdir()
    sandbox(d, study_dir)
    monkeypatch.chdir(d)
    monkeypatch.setenv("FLOPCAST_DEBUG", "")
    monkeypatch.delenv("FLOPCAST_DEBUG")
    before, used = snapshot(d), ledgers(d)

    def too_long(signum, frame):
        raise TimeoutError(f"still running after {LIMIT_S} s")
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(LIMIT_S)
    try:
        code = main(["-q", *argv])
    except BaseException as e:  # noqa: BLE001 - anything escaping main is the bug this harness looks for
        pytest.fail(f"{type(e).__name__} escaped: {e}")
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    check_invariant(d, argv, code, err, before, used)
    assert os.getcwd() == str(d)
