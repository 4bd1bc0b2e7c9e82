import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import run_cli as run

from flopcast.budget.ledger import Ledger


def test_help(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "data" in out and "flops" in out and "budget" in out


def test_data_simulate_inspect_split(tmp_path, capsys):
    f = tmp_path / "sim.h5"
    assert run(capsys, "data", "simulate", "-o", str(f), "--n", "10", "--steps", "30")[0] == 0
    with h5py.File(f) as h:
        assert h["trajectories"].shape == (10, 30, 2)
    code, out, _ = run(capsys, "data", "inspect", str(f), "--plot", str(tmp_path / "p.png"))
    assert code == 0 and "n_series" in out and (tmp_path / "p.png").stat().st_size > 1000
    code, out, _ = run(capsys, "data", "split", str(f), "-o", str(tmp_path / "s.json"))
    assert code == 0 and "train 8, val 1, test 1" in out


def test_encode_shows_text_and_ids(tmp_path, capsys):
    code, out, _ = run(capsys, "encode", "--steps", "2", "--scale", "none", "--model", "tiny-qwen2")
    assert code == 0 and "ids" in out and ";" in out


@pytest.mark.parametrize("content, match", [
    (None, "file not found"),
    (b"not hdf5 at all", "not a readable HDF5"),
    ("nan", "missing value"),
    ("rank", "(N, T, V)"),
])
def test_bad_data_one_line_error_nonzero_exit(tmp_path, capsys, content, match):
    f = tmp_path / "bad.h5"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        arr = {"nan": np.full((2, 3, 2), np.nan), "rank": np.ones((2, 3))}[content]
        with h5py.File(f, "w") as h:
            h["trajectories"] = arr
    code, out, err = run(capsys, "data", "inspect", str(f))
    assert code == 2 and match in err and err.strip().count("\n") == 0 and "Traceback" not in err


def test_empty_csv_error(tmp_path, capsys):
    f = tmp_path / "e.csv"
    f.write_text("")
    code, _, err = run(capsys, "data", "inspect", str(f))
    assert code == 2 and "empty CSV" in err


def test_flops_and_plan(capsys):
    from flopcast.budget.flops import PRESETS, forward

    code, out, _ = run(capsys, "flops", "--model", "qwen2.5-0.5b", "--seq", "128", "--batch", "1", "--mode", "forward")
    total = forward(PRESETS["qwen2.5-0.5b"], 1, 128).total
    assert code == 0 and "attn_scores" in out and f"total: {total:.4e} FLOPs" in out
    code, out, _ = run(capsys, "plan", "--budget", "1e15", "--model", "smollm2-135m", "--seq", "128", "--rank", "8")
    assert code == 0 and "affordable" in out
    code, _, err = run(capsys, "flops", "--model", "no-such-model")
    assert code == 2 and "unknown model" in err


def test_budget_commands(tmp_path, capsys):
    p = tmp_path / "ledger.db"
    assert run(capsys, "budget", "init", str(p), "--budget", "1e15")[0] == 0
    lg = Ledger(p)
    lg.settle(lg.reserve("zero-shot", "eval", 1e12), 1e12)
    code, out, _ = run(capsys, "budget", "show", str(p))
    assert code == 0 and "zero-shot" in out and "left" in out
    code, out, _ = run(capsys, "budget", "export", str(p))
    assert code == 0 and out.startswith("id,name")
    code, _, err = run(capsys, "budget", "show", str(tmp_path / "none.db"))
    assert code == 2 and "budget init" in err


def test_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flopcast", "data", "inspect", str(tmp_path / "missing.h5")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_eval_forecast_baselines_commands(tmp_path, capsys, sim_file):
    data = sim_file
    out = tmp_path / "ev"
    code, text, err = run(capsys, "eval", "--model", "tiny-qwen2", "--data", str(data), "--context", "64",
                          "--max-series", "2", "--baselines", "persistence", "--out", str(out),
                          "--ledger", str(tmp_path / "l.db"), "--budget", "1e12", "--batch-size", "auto")
    assert code == 0, err
    assert "persistence" in text and (out / "metrics.json").is_file()
    for bad in ("0", "2,3", "many"):
        code, _, err = run(capsys, "eval", "--model", "tiny-qwen2", "--data", str(data), "--batch-size", bad)
        assert code == 2 and "batch" in err and err.count("\n") == 1, err
    assert Ledger(tmp_path / "l.db").used() > 0
    code, text, err = run(capsys, "baselines", "--data", str(data), "--context", "64", "--max-series", "2",
                          "--tokenizer", "tiny-qwen2", "--protocol", "seed", "--baselines", "persistence,linear",
                          "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "linear" in text
    csv_in = tmp_path / "mine.csv"
    csv_in.write_text("prey,predator\n1,1\n1.5,0.8\n2.2,0.6\n2.9,0.5\n")
    code, text, err = run(capsys, "forecast", "-i", str(csv_in), "--model", "tiny-qwen2", "--steps", "3",
                          "-o", str(tmp_path / "f.csv"), "--plot", str(tmp_path / "f.png"),
                          "--ledger", str(tmp_path / "f.db"), "--budget", "1e12")
    assert code == 0, err
    charged = Ledger(tmp_path / "f.db").entries()
    assert len(charged) == 1 and charged[0].kind == "forecast" and 0 < charged[0].flops_used <= charged[0].flops_planned
    lines = (tmp_path / "f.csv").read_text().strip().splitlines()
    assert lines[0] == "series,step,prey,predator" and len(lines) == 4
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_eval_bad_protocol_one_line(capsys):
    code, _, err = run(capsys, "eval", "--model", "tiny-qwen2", "--protocol", "nope")
    assert code == 2 and "protocol must be one of" in err


def test_sigterm_during_eval_settles_the_ledger_and_exits_143(tmp_path, capsys, sim_file, monkeypatch):
    import os
    import signal

    from flopcast.forecasting.decode import Decoder

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    data = sim_file
    real, calls = Decoder.generate, []

    def term_on_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(Decoder, "generate", term_on_second_batch)
    code, _, err = run(capsys, "eval", "--model", "tiny-qwen2", "--data", str(data), "--context", "64",
                       "--max-series", "4", "--batch-size", "2", "--baselines", "persistence",
                       "--ledger", str(tmp_path / "l.db"), "--budget", "1e12")
    assert code == 128 + signal.SIGTERM and err.strip().splitlines()[-1].startswith("interrupted (SIGTERM)")
    (e,) = Ledger(tmp_path / "l.db").entries()
    # the finished batch stays counted, nothing stays reserved
    assert e.status == "failed" and 0 < e.flops_used < e.flops_planned
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main() put the default back


def test_quiet_normal_verbose_output(tmp_path, sim_file):
    """A normal run prints flopcast's own output and no library warnings; -q only results; -v the libraries too."""
    data = sim_file

    def train(*flags, out):
        args = [*flags, "train", "--model", "tiny-qwen2", "--data", str(data), "--steps", "2", "--seq-len", "64",
                "--batch-size", "2", "--context", "64", "--max-series", "2", "--budget", "1e12", "-o", str(out)]
        env = {**__import__("os").environ, "PYTHONWARNINGS": "default"}  # every warning shown unless filtered
        r = subprocess.run([sys.executable, "-m", "flopcast", *args], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout, r.stderr

    out, err = train(out=tmp_path / "normal")
    assert "MSE" in out and "FutureWarning" not in err and "DeprecationWarning" not in err
    qout, qerr = train("-q", out=tmp_path / "quiet")
    assert "MSE" in qout and "Warning" not in qerr and "%|" not in qerr  # no warnings, no progress bars
    _, verr = train("-v", out=tmp_path / "verbose")
    assert "Warning" in verr  # the libraries' own warnings (filtered above) are shown


@pytest.mark.parametrize("args, match", [
    (["data", "simulate", "-o", "x.h5", "--n", "2.5"], "Invalid value for '--n'"),
    (["train", "--model", "tiny-qwen2", "--steps", "2.5"], "Invalid value for '--steps'"),
    (["budget", "release", "l.db", "-1"], "No such option: -1"),
    (["data", "simulate"], "Missing option '--out'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["data", "simulate", "-o", "x.h5", "--bogus", "1"], "No such option: --bogus"),
])
def test_mistyped_options_and_values_are_one_line(tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and match in err and "--help`" in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_bare_command_prints_its_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "Usage: flopcast" in out and "forecast" in out
