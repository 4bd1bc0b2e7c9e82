"""examples/quickstart.ipynb runs from top to bottom (so it never rots), on the embedded model, in a scratch
directory."""

import shutil
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    shutil.copy(NOTEBOOK, tmp_path)
    t0 = time.time()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    wall = time.time() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the forecast plot
    ledger_table = nb.cells[-1].outputs[0]["data"]["text/plain"]
    assert "lora/run" in ledger_table and "forecast" in ledger_table
    assert (tmp_path / "runs" / "notebook" / "report.md").is_file()
    print(f"notebook executed in {wall:.0f} s")
