"""A training run's directory: what it reports as it goes, its result, whether it finished, what identifies its
settings. No torch. A run directory holds::

    config.toml      resolved run configuration (model, LoRA, codec with alpha, training, data hash, fingerprint)
    metrics.jsonl    one line per step (loss, lr, flops, time) and per validation
    checkpoint/      adapter + state.pt (optimizer, RNG, TrainState), see flopcast.training.checkpoint
    adapter/         last adapter       adapter_best/  adapter with the lowest validation loss
    flops.json       FLOPs per step and per validation, steps done, total, redone, ledger row
    status.json      done | stopped_budget | interrupted | diverged

The ledger hears of every step, so a run killed with ``kill -9`` has charged all the work it did; when it resumes
from its last checkpoint, the steps it does again are charged again (``flops_redone``). SIGTERM or Ctrl-C stops at
the end of the step under way, with a checkpoint of that step; a second signal stops at once. A loss that becomes
NaN or infinite stops the run with status ``diverged``; a run with a final status is never trained again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..budget.records import Record, write_record
from ..config import NOT_FINGERPRINTED, LoraSpec, TrainConfig, load_toml, result_settings, to_dict
from ..errors import SettingsChanged
from ..results import read_json

if TYPE_CHECKING:
    from .checkpoint import TrainState

FINAL = ("done", "stopped_budget", "diverged")  # a run with one of these statuses is not trained again


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    flops: int                 # charged to the ledger: the run's steps and validations plus redone work
    best_val_loss: float | None
    status: str
    wall_s: float
    flops_redone: int = 0


def series_sha256(*groups: Sequence[np.ndarray]) -> str:
    """A hash of the series a run trains and validates on."""
    h = hashlib.sha256()
    for group in groups:
        h.update(str(len(group)).encode())
        for s in group:
            a = np.ascontiguousarray(s, dtype=np.float64)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def run_fingerprint(model_name: str, lora: LoraSpec, cfg: TrainConfig, codec_state: dict, data_sha: str) -> str:
    key = {"model": model_name, "lora": to_dict(lora), "train": result_settings(cfg), "codec": codec_state,
           "data": data_sha}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def truncate_log(path: Path, step: int) -> None:
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def finished_run(run_dir: str | Path, lora: LoraSpec | None = None, cfg: TrainConfig | None = None,
                 data_sha: str | None = None) -> TrainResult | None:
    """The result of a run directory whose training ended for good (done, stopped_budget or diverged), else None.

    With ``lora``/``cfg``/``data_sha``, a finished run with other settings is an error rather than a result.
    """
    run = Path(run_dir)
    if not (run / "status.json").is_file():
        return None
    st = read_json(run / "status.json")
    if st.get("status") not in FINAL:
        return None
    saved = load_toml(run / "config.toml") if (run / "config.toml").is_file() else {}
    for key, want in (("train", cfg), ("lora", lora)):
        mine, theirs = (to_dict(want) if want is not None else None), saved.get(key, {})
        if mine is not None and theirs != mine:
            diff = sorted(k for k in {*theirs, *mine} if theirs.get(k) != mine.get(k) and k not in NOT_FINGERPRINTED)
            if diff:
                raise SettingsChanged(f"{run}: holds a finished run with other {key} settings ({', '.join(diff)}); "
                                      "choose another output directory or delete this one")
    if data_sha is not None and saved.get("data_sha256", data_sha) != data_sha:
        raise SettingsChanged(f"{run}: holds a finished run trained on other data; choose another output directory")
    flops = st["flops"] if "flops" in st else read_json(run / "flops.json")["total"]
    best = st.get("best_val_loss")
    if "best_val_loss" not in st and (run / "metrics.jsonl").is_file():  # status.json of an older flopcast
        vals = [r["val_loss"] for r in map(json.loads,
                                           (run / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
        best = min(vals) if vals else None
    redone = read_json(run / "flops.json").get("redone", 0) if (run / "flops.json").is_file() else 0
    return TrainResult(run, st["steps"], flops, best, st["status"], st["wall_s"], redone)


def wandb_run(cfg: TrainConfig, name: str, run: Path) -> Any:
    """A wandb run when wandb is installed (offline unless an API key is configured)."""
    if not cfg.wandb:
        return None
    try:
        import wandb
    except ImportError:
        return None
    mode = "online" if os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").exists() else "offline"
    return wandb.init(project="flopcast", name=name, dir=str(run), mode=os.environ.get("WANDB_MODE", mode),
                      config=to_dict(cfg), reinit=True)


class RunLog:
    """Where a run reports as it goes, from its main process only: ``metrics.jsonl`` (and wandb), its ledger row,
    and its wall clock (seconds of training over every process that worked on the run, restarts included)."""

    def __init__(self, main: bool, ledger: Any, wall0: float = 0.0, record: Record | None = None):
        self.main, self.ledger, self.wall0, self.t0 = main, ledger, wall0, time.time()
        self.record = record  # the run's entry in its charges.json (flopcast.budget.records), None without a ledger
        self.run_dir: Path | None = None
        self._file: IO[str] | None = None
        self._tracker: Any = None

    def wall(self) -> float:
        return self.wall0 + time.time() - self.t0

    def open(self, run_dir: Path, cfg: TrainConfig, name: str, step: int) -> None:
        """Append to ``metrics.jsonl`` after dropping its rows past ``step`` (a resumed run does them again)."""
        self.run_dir = run_dir
        if self.main:
            truncate_log(run_dir / "metrics.jsonl", step)
            self._file = (run_dir / "metrics.jsonl").open("a")
            self._tracker = wandb_run(cfg, name, run_dir)

    def row(self, **row: Any) -> None:
        """One line of ``metrics.jsonl`` (a step's loss, or a validation)."""
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self._tracker:
            self._tracker.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=row["step"])

    def charge(self, state: TrainState) -> None:
        """Report the run's FLOPs so far to its ledger row, then to its record (a run killed at any moment has
        charged its work, and the record never holds more than the ledger)."""
        if self.main and self.ledger is not None:
            self.ledger.progress(state.ledger_id, state.charged, wall_s=self.wall(), steps=state.step)
            self._note(state, "running")

    def settle(self, state: TrainState, status: str, info: dict[str, Any] | None = None) -> None:
        """Close the run's ledger row with what it charged."""
        if self.main and self.ledger is not None:
            self.ledger.settle(state.ledger_id, state.charged, status=status, wall_s=self.wall(), steps=state.step,
                               info=info)
            self._note(state, status)

    def _note(self, state: TrainState, status: str) -> None:
        if self.record is not None and self.run_dir is not None:
            write_record(self.run_dir, replace(self.record, flops=state.charged, status=status,
                                               ledger_id=state.ledger_id, steps=state.step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tracker:
            self._tracker.finish()
