"""Fingerprints of resolved settings: what a stage, run or evaluation was computed with. No torch.

A fingerprint is the settings themselves (flattened to dotted keys, so a mismatch can name the keys
that differ) and their SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(flatten(settings), sort_keys=True, default=str).encode()).hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted({*a, *b}) if a.get(k) != b.get(k)]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(path: Path, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sha256": digest(settings), "settings": settings}, indent=2, default=str))


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text())["settings"] if path.is_file() else None
