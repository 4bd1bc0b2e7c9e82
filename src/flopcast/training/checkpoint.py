"""Training checkpoints: the loop's state (:class:`TrainState`) and one manager that saves, loads
and recovers them.

A run directory keeps its newest complete checkpoint in ``checkpoint/``: the adapter plus
``state.pt`` (optimizer, RNG and the :class:`TrainState` fields). A new checkpoint is written to
``checkpoint.tmp/`` and swapped in by renames, with ``state.pt`` renamed into place last, so at
every moment a complete checkpoint exists (in ``checkpoint/`` or ``checkpoint.old/``) and
:meth:`CheckpointManager.recover` finishes a swap that a kill cut short.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import FlopcastError
from ..results import way_out


@dataclass
class TrainState:
    """Everything the loop needs to continue exactly where it stopped."""

    step: int = 0
    flops: int = 0                 # FLOPs of the steps and validations on the way to ``step``
    flops_redone: int = 0          # FLOPs of work done again after a kill (charged too: the ledger never undercounts)
    best_val: float | None = None
    order: dict = field(default_factory=lambda: {"epoch": 0, "pos": 0})  # BatchOrder position
    wall: float = 0.0              # seconds of training before this process started
    ledger_id: int | None = None

    @property
    def charged(self) -> int:
        """What the ledger holds for this run: the trajectory's FLOPs plus the redone work."""
        return self.flops + self.flops_redone

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def rng_state() -> dict:
    """Every generator a step draws from: Python's, numpy's, torch's CPU one and, on CUDA, each GPU's (dropout on a
    GPU draws from the GPU's), so that a resumed run continues exactly."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(s: dict) -> None:
    """Restore :func:`rng_state`; the GPUs' states where the checkpoint has them for as many GPUs as this process
    sees (a checkpoint from a CPU run, or from another machine, leaves them seeded as they are)."""
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"].cpu())
    cuda = s.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([c.cpu() for c in cuda])


class CheckpointManager:
    """Saves and loads the checkpoint of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.run = Path(run_dir)
        self.dir = self.run / "checkpoint"

    def recover(self) -> None:
        """Finish a checkpoint swap cut short: keep the newest complete checkpoint as ``checkpoint/``."""
        tmp, old = self.run / "checkpoint.tmp", self.run / "checkpoint.old"
        if not (self.dir / "state.pt").is_file():
            for cand in (tmp, old):  # a checkpoint with state.pt is complete (state.pt is renamed into place last)
                if (cand / "state.pt").is_file():
                    shutil.rmtree(self.dir, ignore_errors=True)
                    cand.rename(self.dir)
                    break
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

    def exists(self) -> bool:
        return (self.dir / "state.pt").is_file()

    def load(self) -> tuple[TrainState, dict, dict]:
        """(train state, optimizer state dict, RNG state) of the checkpoint, its tensors on the CPU wherever it was
        saved: the optimizer's state follows its parameters' device when loaded into it, so a run checkpointed on a
        GPU resumes on the CPU or another GPU."""
        path = self.dir / "state.pt"
        try:
            raw = torch.load(path, map_location="cpu", weights_only=False)  # our own file: optimizer and RNG states
            return TrainState.from_dict(raw), raw["optimizer"], raw["rng"]
        except (RuntimeError, EOFError, OSError, KeyError, TypeError, pickle.UnpicklingError) as e:
            raise FlopcastError(f"{path}: damaged checkpoint ({type(e).__name__}); delete {self.dir} to train this "
                                f"run from its start, or {way_out(path)}") from e

    def save(self, save_adapter: Callable[[Path], None], optimizer: Any, state: TrainState) -> None:
        tmp, old = self.run / "checkpoint.tmp", self.run / "checkpoint.old"
        save_adapter(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state(), **state.to_dict()}, tmp / "state.pt.part")
        (tmp / "state.pt.part").rename(tmp / "state.pt")  # so a state.pt is always a complete one
        shutil.rmtree(old, ignore_errors=True)
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)
        shutil.rmtree(old, ignore_errors=True)
