"""An evaluation's results directory: one process at a time, and nothing left from a run with other settings."""

import json
import subprocess
import sys

from helpers import LOCK_HOLDER
from helpers import run_cli as run


def _eval(data, out, contexts="64"):
    return ["eval", "--model", "tiny-qwen2", "--data", data, "--context", contexts, "--max-series", 2,
            "--baselines", "persistence", "-o", out]


def test_a_second_evaluation_into_one_directory_stops(tmp_path, capsys, sim_file):
    out = tmp_path / "E"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(capsys, *_eval(sim_file, out))
        assert code == 2 and f"{out} is in use by pid {holder.pid}" in err
        assert not (out / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_rerun_with_other_settings_leaves_no_stale_files(tmp_path, capsys, sim_file):
    out = tmp_path / "E"
    assert run(capsys, *_eval(sim_file, out, "64,96"))[0] == 0
    assert {p.name for p in out.glob("forecasts_S*.png")} == {"forecasts_S96.png"}
    assert {p.name for p in (out / "contexts").iterdir()} == {"S=64.json", "S=64.npy", "S=96.json", "S=96.npy"}
    assert run(capsys, *_eval(sim_file, out, "64"))[0] == 0
    assert {p.name for p in out.glob("forecasts_S*.png")} == {"forecasts_S64.png"}
    assert {p.name for p in (out / "contexts").iterdir()} == {"S=64.json", "S=64.npy"}
    assert list(json.loads((out / "metrics.json").read_text())["contexts"]) == ["64"]
    assert {r.split(",")[0] for r in (out / "windows.csv").read_text().splitlines()[1:]} == {"64"}
