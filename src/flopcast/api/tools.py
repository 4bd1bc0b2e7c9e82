"""The library calls behind flopcast's data, encoding, FLOP and budget commands; each returns plain data.

Every check that can run before work starts runs first: bad numbers, unreadable data, output paths that cannot
be written. None of these commands loads a model's weights or imports torch.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..budget import flops
from ..budget.ledger import Ledger
from ..budget.planner import affordable
from ..budget.records import RECORD_FILE, read_records
from ..budget.rows import COLUMNS
from ..checks import check_arg, check_budget, check_ints
from ..config import CodecConfig, DataSpec, SimConfig, SplitConfig
from ..data.dataset import Dataset, split, split_dataset
from ..data.io import load, save_h5
from ..data.simulate import simulate
from ..encoding.codec import LLMTimeCodec
from ..errors import BudgetExceeded, DataError, FlopcastError
from ..evaluation.plots import plot_series
from ..model.load import load_tokenizer, resolve_arch
from ..results import write_atomic
from ..study.state import recorded_budget
from .outputs import PLOT_SUFFIXES, Output, check_outputs

FLOP_MODES = ("train", "forward", "prefill", "generate")


# ----------------------------------------------------------------------------- data

def simulate_to_file(path: str | Path, config: SimConfig, force: bool = False) -> Path:
    """``flopcast data simulate``: simulated damped Lotka-Volterra systems, written as HDF5 (an existing file is
    replaced only with ``force``)."""
    check_arg("path", path, str, os.PathLike, optional=False)
    check_outputs([Output(Path(path), (".h5", ".hdf5"), "dataset")], force=force)
    return save_h5(simulate(config), path)


def inspect_file(spec: DataSpec, plot: str | Path | None = None, n_plot: int = 4,
                 force: bool = False) -> dict[str, Any]:
    """``flopcast data inspect``: a dataset's summary (and a plot of its first series)."""
    check_ints("n_plot", [n_plot])
    check_arg("plot", plot, str, os.PathLike)
    check_outputs([Output(Path(plot), PLOT_SUFFIXES, "plot") if plot is not None else None], [spec.path], force)
    ds = load(spec)
    info = ds.summary()
    if plot is not None:
        info["plot"] = str(plot_series(ds, plot, n=n_plot))
    return info


def split_file(spec: DataSpec, out: str | Path, config: SplitConfig, force: bool = False) -> dict[str, int]:
    """``flopcast data split``: a seeded split by series, written as JSON; the sizes of the three parts."""
    check_arg("out", out, str, os.PathLike, optional=False)
    check_outputs([Output(Path(out), (".json",), "split")], [spec.path], force)
    sp = split(load(spec).n_series, config)
    write_atomic(out, lambda tmp: tmp.write_text(sp.to_json()))
    return {"train": len(sp.train), "val": len(sp.val), "test": len(sp.test)}


def dataset_or_simulated(data: DataSpec | str | Path | None, n: int = 100, seed: int = 0) -> Dataset:
    """The data file, or ``n`` simulated systems without one."""
    return load(data) if data is not None else simulate(SimConfig(n_systems=n, seed=seed))


def fitted_codec(ds: Dataset | None, config: CodecConfig, split_cfg: SplitConfig | None = None,
                 horizon: int = 1) -> LLMTimeCodec:
    """A codec for ``ds``: its global scale fitted on the train part (scale mode ``global``; ``horizon``: a time
    split's), else per series or none."""
    if config.scale_mode != "global" or ds is None:
        return LLMTimeCodec(config)
    sc = split_cfg or SplitConfig()
    if sc.by == "time":
        return LLMTimeCodec.fit(config, split_dataset(ds, sc, horizon)[1]["train"].series)
    return LLMTimeCodec.fit(config, ds.subset(split(ds.n_series, sc).train).series)


def encode_preview(data: DataSpec | None, series: int, steps: int, model: str,
                   codec_cfg: CodecConfig) -> dict[str, Any]:
    """``flopcast encode``: text, tokens and ids for the first ``steps`` timesteps of one series."""
    check_ints("steps", [steps])
    ds = dataset_or_simulated(data, n=50)
    if not 0 <= series < ds.n_series:
        raise DataError(f"series index {series} out of range (dataset has {ds.n_series})")
    codec = fitted_codec(ds, codec_cfg)
    s = ds.series[series]
    scale = codec.series_scale(s[:steps] if codec_cfg.scale_mode == "per_series" else s)
    text = codec.encode(s[:steps], scale)
    tok = load_tokenizer(model)
    ids = tok(text, add_special_tokens=False).input_ids
    return {
        **scale.state(), "variables": list(ds.variables), "scale_mode": codec_cfg.scale_mode,
        "values": np.round(s[:steps], 4).tolist(), "text": text,
        "tokens": [tok.decode([i]) for i in ids], "ids": ids, "n_tokens": len(ids),
        "series_tokens": len(tok(codec.encode(s, scale), add_special_tokens=False).input_ids),
    }


# ----------------------------------------------------------------------------- FLOPs and budget

def flops_breakdown(model: str, seq: int, batch: int, rank: int, targets: tuple[str, ...], mode: str,
                    new_tokens: int = 50, gqa: str = "full") -> tuple[flops.Breakdown, flops.Arch]:
    """``flopcast flops``: FLOPs per component of one training step, forward, prefill or generation."""
    check_arg("model", model, str, optional=False)
    check_ints("seq", [seq])
    check_ints("batch", [batch])
    check_ints("rank", [rank], minimum=0)
    check_ints("new_tokens", [new_tokens])
    if mode not in FLOP_MODES:
        raise DataError(f"unknown mode {mode!r} ({', '.join(FLOP_MODES)})")
    arch = resolve_arch(model)
    lora = flops.LoraShape(rank, targets) if rank > 0 else None
    if mode == "train":
        return flops.train_step(arch, batch, seq, lora, gqa), arch
    if mode == "forward":
        return flops.forward(arch, batch, seq, lora=lora, gqa=gqa), arch
    if mode == "prefill":
        return flops.prefill(arch, batch, seq, lora, gqa), arch
    return flops.generate(arch, batch, seq, new_tokens, lora, gqa), arch


def plan_table(model: str, budget: float, seqs: list[int], batches: list[int], ranks: list[int],
               eval_windows: int = 0) -> list[dict[str, Any]]:
    """``flopcast plan``: affordable training steps per (S, B, r) under a budget."""
    return [r.as_dict() for r in affordable(resolve_arch(model), budget, seqs, batches, ranks,
                                            eval_windows=eval_windows)]


def init_ledger(path: str | Path, budget: float) -> Ledger:
    """``flopcast budget init``: a new ledger with ``budget`` (an existing one must have the same budget)."""
    check_arg("path", path, str, os.PathLike, optional=False)
    check_budget(budget)
    return Ledger(path, budget)


def open_ledger(path: str | Path) -> Ledger:
    """An existing ledger (one line when there is none)."""
    check_arg("ledger", path, str, os.PathLike, optional=False)
    if not Path(path).is_file():
        raise DataError(f"{path}: no ledger here (create one with `flopcast budget init {path} --budget 1e17`)")
    return Ledger(path)


def rebuild_ledger(directory: str | Path, budget: float | None = None, force: bool = False) -> dict[str, Any]:
    """``flopcast budget rebuild``: make ``DIR/ledger.db`` again from the FLOPs its work recorded
    (:mod:`flopcast.budget.records`), with ``budget`` or the one its plan says. An existing ledger is kept, renamed
    beside it, and only with ``force``."""
    check_arg("directory", directory, str, os.PathLike, optional=False)
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: no such directory")
    records = read_records(d)
    if not records:
        raise DataError(f"{d}: no recorded work ({RECORD_FILE}) under it; there is nothing to rebuild a ledger from")
    recorded = sum(r.flops for r in records)
    budget = budget if budget is not None else recorded_budget(d)
    if budget is None:
        raise DataError(f"{d}: has no plan.toml to take the budget from; give it with --budget")
    check_budget(budget)
    if budget < recorded:
        raise BudgetExceeded(f"{d}: its work recorded {recorded:.3e} FLOPs, more than a budget of {budget:.3e}; "
                             "give a larger --budget")
    path, kept = d / "ledger.db", None
    if path.exists():
        if not force:
            raise FlopcastError(f"{path}: exists; pass --force to keep it beside as ledger.db.old-<time> and rebuild")
        kept = path.with_name(f"ledger.db.old-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):  # the database and its write-ahead log move together
            if Path(f"{path}{suffix}").exists():
                os.replace(f"{path}{suffix}", f"{kept}{suffix}")
    ledger = Ledger(path, budget)
    ledger.restore(records)
    return {"ledger": str(path), "rows": len(records), "flops": recorded, "budget": ledger.budget,
            "kept": str(kept) if kept else None}


def export_ledger(path: str | Path, out: str | Path | None, force: bool = False) -> str:
    """``flopcast budget export``: the ledger as CSV, written to ``out`` (returned as text when ``out`` is None)."""
    check_arg("ledger", path, str, os.PathLike, optional=False)
    check_arg("out", out, str, os.PathLike)
    if out is not None:
        check_outputs([Output(Path(out), (".csv",), "ledger export")], [path], force)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*COLUMNS, "share"])
    w.writeheader()
    w.writerows(open_ledger(path).rows())
    text = buf.getvalue()
    if out is not None:
        write_atomic(out, lambda tmp: tmp.write_text(text))
    return text
