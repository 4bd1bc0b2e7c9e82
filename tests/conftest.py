from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests never reach a model hub: tiny models are built from configs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lotka_volterra_data.h5"
QWEN_ARCH = Path(__file__).resolve().parents[2] / "shared" / "models" / "qwen2.5-0.5b-arch"


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
    from flopcast.config import SimConfig
    from flopcast.simulate import simulate

    return simulate(SimConfig(n_systems=20, n_steps=40, t_end=80.0, seed=3))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny():
    from flopcast.models import load_model

    return load_model("tiny-qwen2", seed=0)
