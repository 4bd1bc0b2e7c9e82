"""A saved adapter directory, read and checked before any model is loaded for it.

Each way an adapter directory can be damaged -- no ``adapter_config.json``, JSON that does not parse, missing or
truncated weights, a rank in the config that the weights do not have -- is one line naming the file, found here
rather than as a traceback from PEFT or safetensors halfway through loading. :func:`adapter_base` decides which
base model an adapter goes on: the one its metadata names, and never another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import FlopcastError
from ..results import read_json

ADAPTER_META = "flopcast_adapter.json"
ADAPTER_CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path, "the adapter directory is damaged")
    if not isinstance(data, dict):
        raise FlopcastError(f"{path}: expected a JSON object; the adapter directory is damaged")
    return data


def read_adapter_meta(directory: str | Path) -> dict[str, Any]:
    """An adapter's ``flopcast_adapter.json`` (base model, LoRA settings, codec state); ``{}`` without one."""
    p = Path(directory) / ADAPTER_META
    return _read_json(p) if p.is_file() else {}


def note_adapter_meta(directory: str | Path, **fields: Any) -> None:
    """Add ``fields`` to an adapter's ``flopcast_adapter.json`` (written whole, then moved into place)."""
    p = Path(directory) / ADAPTER_META
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({**read_adapter_meta(directory), **fields}, indent=2))
    tmp.replace(p)


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """The tensor shapes a safetensors file declares, after checking that the file holds all their bytes (the
    format: 8 bytes of header length, a JSON header, then the data)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else size
        if n > size - 8:
            raise FlopcastError(f"{path}: truncated or not a safetensors file; save or copy the adapter again")
        try:
            header = json.loads(fh.read(n))
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise FlopcastError(f"{path}: not a safetensors file ({type(e).__name__})") from e
    if 8 + n + end > size:
        raise FlopcastError(f"{path}: truncated ({size} of {8 + n + end} bytes); save or copy the adapter again")
    return {k: list(v.get("shape", [])) for k, v in tensors.items()}


def check_adapter(directory: str | Path) -> dict[str, Any]:
    """Check a saved adapter directory (one line for each way it can be damaged); its flopcast metadata."""
    d = Path(directory)
    if not d.is_dir():
        raise FlopcastError(f"{d}: no adapter directory here")
    if not (d / ADAPTER_CONFIG).is_file():
        raise FlopcastError(f"{d}: not an adapter directory (no {ADAPTER_CONFIG})")
    config = _read_json(d / ADAPTER_CONFIG)
    meta = read_adapter_meta(d)
    if not (d / WEIGHTS).is_file():
        if (d / "adapter_model.bin").is_file():  # PEFT's older format: read by torch, not checked here
            return meta
        raise FlopcastError(f"{d}: the adapter's weights ({WEIGHTS}) are missing")
    ranks = {shape[0] for name, shape in safetensors_shapes(d / WEIGHTS).items() if "lora_A" in name and shape}
    rank = config.get("r")
    if rank is not None and ranks and ranks != {rank}:
        raise FlopcastError(f"{d}: {ADAPTER_CONFIG} says rank {rank} but the weights have rank "
                            f"{', '.join(map(str, sorted(ranks)))}; the adapter directory is damaged")
    return meta


def adapter_base(adapter: str | Path, model: str | None) -> str:
    """The base model to load ``adapter`` on: ``model`` if named, else the one the adapter's metadata names. A named
    model other than the adapter's base is refused: the adapter's weights would load onto it without complaint
    whenever the shapes happen to match, and forecast nonsense."""
    base = check_adapter(adapter).get("base_model") or None
    if model is None:
        if base is None:
            raise FlopcastError(f"{adapter}: its metadata names no base model; name the model it was trained on")
        return str(base)
    if base is not None and str(base) != str(model):
        raise FlopcastError(f"{adapter}: trained on {base!r}, not {model!r}; leave the model out to use its base")
    return str(model)
