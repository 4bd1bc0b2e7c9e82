"""What several test modules share, and what the scripts that tests run in subprocesses import (``sys.path`` gets
this folder). Fixtures built on these live in conftest.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from flopcast.config import CodecConfig, LoraSpec, SimConfig, TrainConfig
from flopcast.data.simulate import simulate
from flopcast.encoding.codec import LLMTimeCodec

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# a tiny training run: 2 x 64 tokens a step, validation every 4 steps, a checkpoint every 5
TRAIN_CFG: dict[str, Any] = dict(batch_size=2, seq_len=64, lr=3e-3, eval_every=4, checkpoint_every=5, val_batches=2,
                                 wandb=False)

# a tiny study of every stage kind: tiny-qwen2, 20 simulated systems, one context length
TINY_PLAN: dict[str, Any] = {
    "name": "tiny", "budget": 2e10,
    "model": {"name": "tiny-qwen2"},
    "simulate": {"n_systems": 20, "n_steps": 40},
    "eval": {"contexts": [64], "max_series": 2, "baselines": ["persistence"], "n_boot": 20},
    "lora": {"rank": 2},
    "train": {"batch_size": 2, "seq_len": 64, "lr": 3e-3, "eval_every": 5, "checkpoint_every": 5, "wandb": False},
    "stages": [
        {"name": "zero_shot", "kind": "eval"},
        {"name": "initial", "kind": "train", "steps": 6},
        {"name": "grid", "kind": "grid", "lr": [1e-3, 3e-3], "rank": [2, 4], "steps": 3, "evaluate": False},
        {"name": "context", "kind": "context", "base": "grid", "seq_len": [32, 64], "steps": 3, "evaluate": False},
        {"name": "final_eval", "kind": "eval", "adapter_from": "initial"},
        {"name": "final", "kind": "train", "base": "context", "steps": "remaining"},
    ],
}


# a process that holds a directory's lock until killed; it prints "locked" once it holds it
LOCK_HOLDER = """
import sys, time
from flopcast.budget.lock import DirLock
with DirLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def tiny_plan(**changes: Any) -> dict[str, Any]:
    """A copy of :data:`TINY_PLAN` with top-level keys replaced (``stages=[...]``, ``budget=...``)."""
    return {**copy.deepcopy(TINY_PLAN), **changes}


def one_stage_plan(**changes: Any) -> dict[str, Any]:
    """The tiny plan with one 4-step training stage."""
    return tiny_plan(name="t", stages=[{"name": "initial", "kind": "train", "steps": 4}], **changes)


def train_data() -> tuple[list, list, LLMTimeCodec]:
    """Training and validation series (10 and 2 simulated systems of 30 steps) and a codec fitted on them."""
    ds = simulate(SimConfig(n_systems=12, n_steps=30, seed=1))
    return ds.series[:10], ds.series[10:], LLMTimeCodec.fit(CodecConfig(), ds.series[:10])


def train_tiny(run_dir: Path | str, data: tuple[list, list, LLMTimeCodec], steps: int = 12, ledger: Any = None,
               on_step: Any = None, **cfg: Any) -> Any:
    """A tiny-qwen2 LoRA run (rank 4) of ``steps`` steps with :data:`TRAIN_CFG` (``cfg`` overrides it)."""
    from flopcast.model.load import load_model
    from flopcast.training.engine import RunSpec, train

    tr, va, codec = data
    lm = load_model("tiny-qwen2", seed=0)
    spec = RunSpec(Path(run_dir), LoraSpec(rank=4), TrainConfig(steps=steps, **{**TRAIN_CFG, **cfg}), codec, tr, va,
                   name="t", model_name="tiny-qwen2")
    return train(lm.model, lm.tokenizer, spec, ledger=ledger, progress=False, on_step=on_step)


def lively_tiny(family: str = "tiny-qwen2", seed: int = 0) -> tuple[Any, Any]:
    """A random tiny model with large weights, so its forecasts depend on the context; and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from flopcast.model.load import tiny_config, tiny_tokenizer

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family, initializer_range=0.3)).eval(), tiny_tokenizer()


def run_cli(capsys: Any, *args: Any) -> tuple[int, str, str]:
    """``flopcast ARGS`` in this process: (exit code, stdout, stderr)."""
    from flopcast.cli import main

    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err
