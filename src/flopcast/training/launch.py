"""One training run on several processes or devices without a script of one's own: ``flopcast train --processes
N`` and a plan's ``[train] processes = N``.

:func:`train_in_processes` writes what the run needs (its :class:`~flopcast.training.engine.RunSpec`, the model
and seed, the ledger's path) to a file beside the run directory and starts ``accelerate launch --multi_gpu
--num_processes N -m flopcast.training.launch FILE`` (torchrun underneath; on a machine without GPUs, N CPU
processes with gloo). Each process loads the model and runs :func:`~flopcast.training.engine.train`, taking its
share of every global batch; the main process alone logs, checkpoints and charges the ledger, so the FLOPs and
the run directory are those of the same run on one process. The caller waits and reads the finished run back
from its directory. A user error in a process comes back as the same one line; a signal that stopped the run
(Ctrl-C, SIGTERM: every process stops at the same step and checkpoints) stops the caller too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ..budget.ledger import Ledger
from ..config import ModelSpec
from ..errors import FlopcastError, Interrupted
from ..model.load import load_model
from .engine import RunSpec, train
from .rundir import TrainResult, finished_run, series_sha256


def launch_command(job: Path, n: int) -> list[str]:
    """``accelerate launch`` of this module on ``n`` processes (one machine; the precision is the model's own)."""
    launcher = Path(sys.executable).parent / "accelerate"
    exe = str(launcher) if launcher.exists() else shutil.which("accelerate") or "accelerate"
    return [exe, "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "flopcast.training.launch", str(job)]


def train_in_processes(spec: RunSpec, model: ModelSpec, seed: int, ledger: Ledger | None, n: int) -> TrainResult:
    """Train ``spec`` on ``n`` processes (see the module doc) and return the finished run."""
    job = spec.dir.parent / f".{spec.dir.name}.launch"
    spec.dir.parent.mkdir(parents=True, exist_ok=True)
    error = job.with_suffix(".error")
    error.unlink(missing_ok=True)
    torch.save({"spec": spec, "model": model, "seed": seed, "ledger": str(ledger.path) if ledger else None,
                "error": str(error)}, job)
    try:
        rc = subprocess.run(launch_command(job, n)).returncode
    finally:
        job.unlink(missing_ok=True)
    if error.is_file():
        message = error.read_text()
        error.unlink()
        raise FlopcastError(message)
    if rc in (130, 143):
        raise Interrupted(rc - 128)
    done = finished_run(spec.dir, spec.lora, spec.train, series_sha256(spec.train_series, spec.val_series))
    if rc != 0 or done is None:
        raise FlopcastError(f"training {spec.name} on {n} processes stopped (exit status {rc}) before it finished; "
                            "its output is above, and running the same command again resumes it")
    return done


def _main(job: str) -> int:
    """One of the launched processes: train the job's run; a user error is written for the caller (main process,
    rank 0 as torchrun numbers them: the engine's Accelerator is made inside ``train``)."""
    main = os.environ.get("RANK", "0") == "0"
    work: dict[str, Any] = torch.load(job, weights_only=False)  # written by train_in_processes, just now
    try:
        lm = load_model(work["model"], seed=work["seed"])
        ledger = Ledger(work["ledger"]) if work["ledger"] and main else None
        train(lm.model, lm.tokenizer, work["spec"], ledger=ledger, progress=main)
    except FlopcastError as e:
        if main:
            Path(work["error"]).write_text(str(e))
        return 2
    except Interrupted as e:
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
