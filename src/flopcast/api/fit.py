"""Fine-tuning on your own series from Python: what :meth:`flopcast.Forecaster.fit` runs.

The series (a long DataFrame or arrays, read by the rules of :mod:`flopcast.data.frames`) are written to
``out_dir/series.csv`` and trained by a two-stage study plan in ``out_dir`` -- the same engine, ledger, checks and
resumption as ``flopcast run``: a zero-shot evaluation, then one LoRA run on each series' history with its tail held
out by a time split (the last ``test_windows`` horizons tested, the horizon before them validating), evaluated on
the same windows beside seasonal naive. The report (``out_dir/report.md``) shows whether fine-tuning paid for its
FLOPs; the adapter of the lowest validation loss is what :meth:`~flopcast.Forecaster.fit` loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checks import check_budget, check_ints
from ..config import ZERO_SHOT_CODEC, TrainConfig, to_dict
from ..data.differences import check_lag, differenced
from ..data.frames import SeriesBatch
from ..errors import FlopcastError
from ..model.adapter_files import note_adapter_meta
from ..results import StudyResult
from .outputs import ensure_writable
from .study import run_study

SERIES_FILE = "series.csv"


@dataclass(frozen=True)
class FitSettings:
    """One fine-tuning run: ``steps`` optimizer steps of ``batch_size`` chunks of ``seq_len`` tokens at ``lr``, LoRA
    ``rank``, the LM head ``head`` (``numeric``: its softmax over the series' characters only), seeded by ``seed``
    (the adapter's initial weights, the batch order); the tail held out is
    ``test_windows`` horizons of ``horizon`` steps; ``budget`` caps every FLOP of the study (zero-shot evaluation,
    training, evaluation); ``difference`` = m > 0: the study sees each series' lag-m differences."""

    budget: float
    steps: int = 100
    lr: float = 1e-4
    rank: int = 8
    seq_len: int = 256
    batch_size: int = 4
    horizon: int = 5
    test_windows: int = 1
    baselines: tuple[str, ...] = ("persistence", "seasonal_naive")
    head: str = "full"
    seed: int = 0
    difference: int = 0

    def __post_init__(self) -> None:
        TrainConfig(head=self.head)  # an unknown head stops here
        check_lag(self.difference, [], 0)
        check_budget(self.budget)
        check_ints("steps, rank, seq_len, batch_size, horizon, test_windows",
                   [self.steps, self.rank, self.seq_len, self.batch_size, self.horizon, self.test_windows])
        check_ints("seed", [self.seed], minimum=0)


def write_series(batch: SeriesBatch, path: Path) -> dict[str, Any]:
    """The series as a long CSV (id, time, one column per variable) and the plan's data table for it."""
    frames = []
    for key, values, stamps in zip(batch.ids, batch.values, batch.timestamps):
        time = stamps if stamps is not None else np.arange(len(values))
        frame = pd.DataFrame(values, columns=list(batch.variables))
        frame.insert(0, "time", time)
        frame.insert(0, "id", str(key))
        frames.append(frame)
    pd.concat(frames).to_csv(path, index=False)
    return {"path": str(path), "id_column": "id", "time_column": "time", "value_columns": list(batch.variables)}


def fit_plan(model_name: str, data: dict[str, Any], fs: FitSettings) -> dict[str, Any]:
    """The study behind :meth:`~flopcast.Forecaster.fit` (see the module doc)."""
    return {
        "name": "fit", "budget": fs.budget, "seed": fs.seed, "model": {"name": model_name}, "data": data,
        "codec": to_dict(ZERO_SHOT_CODEC),
        "split": {"by": "time", "test_windows": fs.test_windows},
        "eval": {"protocol": "aligned", "contexts": [fs.seq_len], "horizon": fs.horizon,
                 "baselines": list(fs.baselines)},
        "lora": {"rank": fs.rank},
        "train": {"lr": fs.lr, "seq_len": fs.seq_len, "batch_size": fs.batch_size, "schedule": "cosine",
                  "head": fs.head, "eval_every": max(1, fs.steps // 4), "checkpoint_every": max(1, fs.steps // 4),
                  "wandb": False, "seed": fs.seed},
        "stages": [{"name": "zero_shot", "kind": "eval"}, {"name": "fit", "kind": "train", "steps": fs.steps}],
    }


def train_adapter(batch: SeriesBatch, model_name: str, out_dir: str | Path, fs: FitSettings,
                  progress: bool = True) -> tuple[Path, StudyResult]:
    """Run the fit study in ``out_dir`` (resuming what is there) and return its best adapter and the results."""
    out = Path(out_dir)
    ensure_writable(out, directory=True)
    if fs.difference:
        batch = differenced_batch(batch, fs.difference)
    out.mkdir(parents=True, exist_ok=True)
    data = write_series(batch, out / SERIES_FILE)
    result = run_study(fit_plan(model_name, data, fs), out, progress=progress)
    best = result.stages["fit"].best
    if best is None:
        raise FlopcastError(f"{out}: the fit stage finished without a run to load")
    adapter = out / "stages" / "fit" / best.run / "adapter_best"
    if fs.difference:  # the adapter forecasts differences: it says at which lag, so forecasts integrate them back
        note_adapter_meta(adapter, difference=fs.difference)
    return adapter, result


def differenced_batch(batch: SeriesBatch, lag: int) -> SeriesBatch:
    """Each series' lag-``lag`` differences, dated by the later step of each pair (refused, naming the series,
    where one is too short to leave two differences)."""
    check_lag(lag, batch.values, 2)
    return replace(batch, values=[differenced(v, lag) for v in batch.values],
                   timestamps=[None if t is None else t[lag:] for t in batch.timestamps],
                   rows=None if batch.rows is None else [r[lag:] for r in batch.rows])
