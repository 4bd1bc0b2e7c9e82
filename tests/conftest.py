"""Fixtures every test module may use. Helpers that subprocess scripts import too are in helpers.py.

Tests never leave the machine: the Hugging Face Hub is switched off (``HF_HUB_OFFLINE``), and its endpoint is a
closed port on the loopback interface, so a check that the Hub is reachable fails at once, locally. Tiny models are
built from configs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, train_data

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per test process: `make test` runs two side by side
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: nothing listens there

def pytest_collection_modifyitems(items):
    """The slow tests first, so that the rest fill in beside them rather than after them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


REAL_DATA = ROOT.parent / "shared" / "data" / "lotka_volterra_data.h5"
QWEN_ARCH = ROOT.parent / "shared" / "models" / "qwen2.5-0.5b-arch"


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    p = Path(os.environ.get("FLOPCAST_REAL_DATA", REAL_DATA))
    if not p.is_file():
        pytest.skip("reference dataset ../shared/data/lotka_volterra_data.h5 not present")
    return p


@pytest.fixture(scope="session")
def qwen_arch_dir() -> Path:
    """The Qwen2.5-0.5B config and tokenizer without weights (``FLOPCAST_QWEN_ARCH`` elsewhere, as on a GPU box)."""
    p = Path(os.environ.get("FLOPCAST_QWEN_ARCH", QWEN_ARCH))
    if not (p / "config.json").is_file():
        pytest.skip("../shared/models/qwen2.5-0.5b-arch not present")
    return p


@pytest.fixture(scope="session")
def sim_ds():
    """20 simulated systems of 40 steps."""
    from flopcast.config import SimConfig
    from flopcast.data.simulate import simulate

    return simulate(SimConfig(n_systems=20, n_steps=40, t_end=80.0, seed=3))


@pytest.fixture(scope="session")
def sim_file(sim_ds, tmp_path_factory) -> Path:
    """:func:`sim_ds` as an HDF5 file."""
    from flopcast.data.io import save_h5

    return save_h5(sim_ds, tmp_path_factory.mktemp("data") / "sim.h5")


@pytest.fixture(scope="session")
def data():
    """Series and codec for a tiny training run (see helpers.train_tiny)."""
    return train_data()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny():
    from flopcast.model.load import load_model

    return load_model("tiny-qwen2", seed=0)
