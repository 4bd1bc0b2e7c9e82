"""Small library functions behind the data/encode CLI commands (each returns plain data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .codec import LLMTimeCodec
from .config import CodecConfig, SimConfig, SplitConfig
from .data import Dataset, load, save_h5, split
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


def dataset_or_simulated(path: str | Path | None, n: int = 50, seed: int = 0) -> Dataset:
    if path is not None:
        return load(path)
    from .simulate import simulate

    return simulate(SimConfig(n_systems=n, seed=seed))


def encode_preview(path, series: int, steps: int, model: str, decimals: int, scale: str, no_point: bool) -> dict:
    """Text, tokens and ids for the first ``steps`` timesteps of one series."""
    from .models import TINY, load_model

    ds = dataset_or_simulated(path)
    if not 0 <= series < ds.n_series:
        raise DataError(f"series index {series} out of range (dataset has {ds.n_series})")
    cfg = CodecConfig(decimals=decimals, scale_mode=scale, drop_decimal_point=no_point)
    train = ds.subset(split(ds.n_series, SplitConfig()).train)
    codec = LLMTimeCodec.fit(cfg, train.series)
    s = ds.series[series]
    alpha = codec.series_alpha(s)
    text = codec.encode(s[:steps], alpha)
    tok = _tokenizer(model) if model not in TINY else load_model(model).tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    return {
        "alpha": alpha, "scale_mode": scale, "values": np.round(s[:steps], 4).tolist(), "text": text,
        "tokens": [tok.decode([i]) for i in ids], "ids": ids, "n_tokens": len(ids),
        "series_tokens": len(tok(codec.encode(s, alpha), add_special_tokens=False).input_ids),
    }


def _tokenizer(model: str):
    """Only the tokenizer (no weights) where possible."""
    from transformers import AutoTokenizer

    from .models import EMBEDDED, _embedded_dir, load_model

    if model == EMBEDDED:
        return AutoTokenizer.from_pretrained(_embedded_dir())
    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError):
        return load_model(model).tokenizer  # raises a clear ModelNotAvailable
