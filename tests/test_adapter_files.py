"""An adapter goes on its own base model only, and a damaged adapter directory is one line naming the file, found
before any model is loaded or FLOP charged."""

import json
import shutil

import pytest
from helpers import run_cli

from flopcast.budget.ledger import Ledger
from flopcast.config import LoraSpec
from flopcast.errors import FlopcastError
from flopcast.model.load import load_model
from flopcast.model.lora import attach_lora, save_adapter


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A rank-2 adapter saved on tiny-qwen2."""
    pm = attach_lora(load_model("tiny-qwen2", seed=0).model, LoraSpec(rank=2))
    return save_adapter(pm, tmp_path_factory.mktemp("a") / "adapter", LoraSpec(rank=2), "tiny-qwen2")


@pytest.fixture
def csv(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("prey,predator\n" + "".join(f"{1 + i % 5}.5,{2 + i % 3}.25\n" for i in range(20)))
    return p


def _damaged(adapter, tmp_path, how):
    d = shutil.copytree(adapter, tmp_path / "damaged")
    weights = d / "adapter_model.safetensors"
    if how == "missing weights":
        weights.unlink()
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif how == "corrupt metadata":
        (d / "flopcast_adapter.json").write_text("{not json")
    elif how == "corrupt config":
        (d / "adapter_config.json").write_text("")
    elif how == "rank mismatch":
        cfg = json.loads((d / "adapter_config.json").read_text())
        (d / "adapter_config.json").write_text(json.dumps({**cfg, "r": 8}))
    elif how == "no config":
        (d / "adapter_config.json").unlink()
    return d


@pytest.mark.parametrize("how, match", [
    ("missing weights", "weights (adapter_model.safetensors) are missing"),
    ("truncated weights", "truncated"),
    ("corrupt metadata", "flopcast_adapter.json: not valid JSON"),
    ("corrupt config", "adapter_config.json: not valid JSON"),
    ("rank mismatch", "says rank 8 but the weights have rank 2"),
    ("no config", "not an adapter directory"),
])
def test_a_damaged_adapter_is_one_line_before_any_flop(capsys, tmp_path, adapter, csv, how, match):
    d = _damaged(adapter, tmp_path, how)
    code, _, err = run_cli(capsys, "forecast", "-i", csv, "--adapter", d, "--ledger", tmp_path / "l.db",
                           "--budget", 1e12, "--steps", 2)
    assert code == 2 and err.count("\n") == 1 and match in err, err
    assert Ledger(tmp_path / "l.db").used() == 0


def test_an_adapter_goes_on_its_own_base_only(capsys, tmp_path, adapter, csv):
    import flopcast

    code, _, err = run_cli(capsys, "forecast", "-i", csv, "--adapter", adapter, "--model", "tiny-llama",
                           "--steps", 2, "--ledger", tmp_path / "l.db", "--budget", 1e12)
    assert code == 2 and "trained on 'tiny-qwen2', not 'tiny-llama'" in err and err.count("\n") == 1, err
    assert Ledger(tmp_path / "l.db").used() == 0
    with pytest.raises(FlopcastError, match="not 'tiny-llama'"):
        flopcast.evaluate("tiny-llama", adapter=adapter, max_series=1)
    # without a model named, the adapter's own base is loaded (the default model would not fit it)
    code, out, err = run_cli(capsys, "forecast", "-i", csv, "--adapter", adapter, "--steps", 2)
    assert code == 0 and "prey" in out, err
    assert flopcast.Forecaster.from_pretrained(adapter=adapter).model_name == "tiny-qwen2"
