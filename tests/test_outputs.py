"""No command writes over its inputs, a ledger, or a file a study keeps; an existing output is replaced only with
--force; an output's format follows its extension; all of it is refused in one line, exit 2, before any work."""

import hashlib
import shutil
import sqlite3

import pytest
from helpers import run_cli

from flopcast.api.tools import export_ledger
from flopcast.budget.ledger import Ledger


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path, sim_file):
    """A data file (HDF5 and CSV), a ledger with one entry, an existing CSV, JSON and plot."""
    shutil.copy(sim_file, tmp_path / "d.h5")
    csv = tmp_path / "in.csv"
    csv.write_text("prey,predator\n" + "".join(f"{1 + i % 5}.5,{2 + i % 3}.25\n" for i in range(30)))
    lg = Ledger(tmp_path / "l.db", 1e12)
    lg.settle(lg.reserve("earlier", "eval", 10), 7)
    for name in ("old.csv", "old.json", "old.png"):
        (tmp_path / name).write_text("keep me")
    return tmp_path


def _refused(capsys, files, *args, match):
    """Runs ``flopcast ARGS``: exit 2, one line naming ``match``, every file in ``files`` unchanged."""
    before = {p: _digest(p) for p in files.iterdir() if p.is_file()}
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and match in err, err
    assert {p: _digest(p) for p in files.iterdir() if p.is_file()} == before
    return err


FORECAST = ["forecast", "--model", "tiny-qwen2", "--steps", "2"]


@pytest.mark.parametrize("case, match", [
    (["forecast-ledger-as-out"], "is an input"),
    (["export-over-its-ledger"], "is an input"),
    (["forecast-csv-over-input"], "is an input"),
    (["forecast-h5-over-input"], "is an input"),
    (["split-over-data"], "is an input"),
    (["simulate-as-csv"], "written as .h5"),
    (["simulate-over-existing"], "exists; pass --force"),
    (["split-over-existing"], "exists; pass --force"),
    (["export-over-existing"], "exists; pass --force"),
    (["plot-as-text"], "written as .png"),
    (["inspect-plot-over-existing"], "exists; pass --force"),
    (["forecast-out-and-plot-the-same"], "named as both"),
])
def test_outputs_never_replace_inputs_ledgers_or_existing_files(capsys, files, case, match):
    f = files
    args = {
        "forecast-ledger-as-out": [*FORECAST, "-i", f / "in.csv", "--ledger", f / "l.db", "-o", f / "l.db"],
        "export-over-its-ledger": ["budget", "export", f / "l.db", "-o", f / "l.db"],
        "forecast-csv-over-input": [*FORECAST, "-i", f / "in.csv", "-o", f / "in.csv", "--force"],
        "forecast-h5-over-input": [*FORECAST, "-i", f / "d.h5", "-o", f / "d.h5"],
        "split-over-data": ["data", "split", f / "d.h5", "-o", f / "d.h5"],
        "simulate-as-csv": ["data", "simulate", "-o", f / "x.csv", "--n", 3],
        "simulate-over-existing": ["data", "simulate", "-o", f / "d.h5", "--n", 3],
        "split-over-existing": ["data", "split", f / "d.h5", "-o", f / "old.json"],
        "export-over-existing": ["budget", "export", f / "l.db", "-o", f / "old.csv"],
        "plot-as-text": [*FORECAST, "-i", f / "in.csv", "--ledger", f / "l.db", "--plot", f / "p.txt"],
        "inspect-plot-over-existing": ["data", "inspect", f / "d.h5", "--plot", f / "old.png"],
        "forecast-out-and-plot-the-same": [*FORECAST, "-i", f / "in.csv", "-o", f / "o.csv", "--plot", f / "o.csv"],
    }[case[0]]
    _refused(capsys, files, *args, match=match)
    assert not (f / "x.csv").exists() and not (f / "p.txt").exists()
    assert Ledger(f / "l.db").used() == 7  # no FLOP spent


def test_force_replaces_an_output_but_never_a_database_or_a_studys_file(capsys, files):
    f = files
    code, _, _ = run_cli(capsys, "budget", "export", f / "l.db", "-o", f / "old.csv", "--force")
    assert code == 0 and (f / "old.csv").read_bytes() == export_ledger(f / "l.db", None).encode()
    code, _, _ = run_cli(capsys, "data", "split", f / "d.h5", "-o", f / "old.json", "--force")
    assert code == 0 and '"test"' in (f / "old.json").read_text()
    other = f / "other.csv"  # another program's SQLite database, whatever its name
    sqlite3.connect(other).execute("create table t (x)").connection.commit()
    _refused(capsys, f, "budget", "export", f / "l.db", "-o", other, "--force", match="is a database")
    study = f / "study"
    study.mkdir()
    (study / "metrics.json").write_text("{}")
    (study / "windows.csv").write_text("kept")
    err = _refused(capsys, f, "budget", "export", f / "l.db", "-o", study / "windows.csv", "--force",
                   match="is kept by the study")
    assert (study / "windows.csv").read_text() == "kept", err
    assert not [p for p in f.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temporary files


def test_forecast_refuses_before_loading_a_model_or_charging(capsys, files, monkeypatch):
    import flopcast.api.forecaster as fc

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(fc.Forecaster, "from_pretrained", no_model)
    _refused(capsys, files, *FORECAST, "-i", files / "in.csv", "--ledger", files / "l.db", "-o", files / "old.csv",
             match="exists; pass --force")
