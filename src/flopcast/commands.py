"""Small library functions behind the data/encode CLI commands (each returns plain data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .codec import LLMTimeCodec
from .config import CodecConfig, SimConfig, SplitConfig
from .data import load, save_h5, split
from .errors import DataError


def simulate_to_file(path: str | Path, n: int = 1000, steps: int = 100, t_end: float = 200.0, seed: int = 0) -> Path:
    from .simulate import simulate

    return save_h5(simulate(SimConfig(n_systems=n, n_steps=steps, t_end=t_end, seed=seed)), path)


def inspect_file(path: str | Path, plot: str | Path | None = None, n_plot: int = 4) -> dict:
    ds = load(path)
    info = ds.summary()
    if plot is not None:
        from .plots import plot_series

        info["plot"] = str(plot_series(ds, plot, n=n_plot))
    return info


def split_file(path: str | Path, out: str | Path, train: float, val: float, test: float, seed: int) -> dict[str, int]:
    ds = load(path)
    sp = split(ds.n_series, SplitConfig(train, val, test, seed))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(sp.to_json())
    return {"train": len(sp.train), "val": len(sp.val), "test": len(sp.test)}


def encode_preview(path, series: int, steps: int, model: str, decimals: int, scale: str, no_point: bool) -> dict:
    """Text, tokens and ids for the first ``steps`` timesteps of one series."""
    from .inference import dataset_or_simulated
    from .models import load_tokenizer

    ds = dataset_or_simulated(path, n=50)
    if not 0 <= series < ds.n_series:
        raise DataError(f"series index {series} out of range (dataset has {ds.n_series})")
    cfg = CodecConfig(decimals=decimals, scale_mode=scale, drop_decimal_point=no_point)
    train = ds.subset(split(ds.n_series, SplitConfig()).train)
    codec = LLMTimeCodec.fit(cfg, train.series)
    s = ds.series[series]
    alpha = codec.series_alpha(s)
    text = codec.encode(s[:steps], alpha)
    tok = load_tokenizer(model)
    ids = tok(text, add_special_tokens=False).input_ids
    return {
        "alpha": alpha, "scale_mode": scale, "values": np.round(s[:steps], 4).tolist(), "text": text,
        "tokens": [tok.decode([i]) for i in ids], "ids": ids, "n_tokens": len(ids),
        "series_tokens": len(tok(codec.encode(s, alpha), add_special_tokens=False).input_ids),
    }


# ----------------------------------------------------------------------------- FLOPs

def flops_breakdown(model: str, seq: int, batch: int, rank: int, targets: tuple[str, ...], mode: str,
                    new_tokens: int = 50, gqa: str = "full"):
    from . import flops as F

    from .models import resolve_arch

    arch = resolve_arch(model)
    lora = F.LoraShape(rank, targets) if rank > 0 else None
    if mode == "train":
        br = F.train_step(arch, batch, seq, lora, gqa)
    elif mode == "forward":
        br = F.forward(arch, batch, seq, lora=lora, gqa=gqa)
    elif mode == "prefill":
        br = F.prefill(arch, batch, seq, lora, gqa)
    elif mode == "generate":
        br = F.generate(arch, batch, seq, new_tokens, lora, gqa)
    else:
        raise DataError(f"unknown mode {mode!r} (train, forward, prefill, generate)")
    return br, arch


def plan_table(model: str, budget: float, seqs, batches, ranks, eval_windows: int = 0) -> list[dict]:
    from .models import resolve_arch
    from .planner import affordable

    return [r.as_dict() for r in affordable(resolve_arch(model), budget, seqs, batches, ranks, eval_windows=eval_windows)]


def open_ledger(path: str | Path):
    from .ledger import Ledger

    if not Path(path).is_file():
        raise DataError(f"{path}: no ledger here (create one with `flopcast budget init {path} --budget 1e17`)")
    return Ledger(path)
