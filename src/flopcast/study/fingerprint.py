"""Fingerprints of resolved settings: what each stage of a study was computed with, and refusing changed ones.

A fingerprint is the settings themselves (flattened to dotted keys, so a mismatch can name the keys that differ)
and their SHA-256 digest. Every stage's resolved settings (model, data hash, split, codec, LoRA, training,
evaluation, seed, and the fingerprints of the stages it builds on) are stored in
``stages/<stage>/fingerprint.json`` before it starts. A stage on disk with other settings stops the study with one
line naming the keys that differ; ``--restart STAGE`` moves its files to ``archive/`` instead. No torch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import result_settings, to_dict
from ..errors import DataError, FlopcastError, SettingsChanged
from ..results import read_json
from .plan import Plan


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
    return read_json(path)["settings"] if path.is_file() else None


# ----------------------------------------------------------------------------- a study's stages

def data_settings(plan: Plan) -> dict:
    """What identifies a study's data: the file's hash (and CSV columns), or the simulation settings."""
    if plan.data is None:
        return {"simulate": to_dict(plan.simulate)}
    p = Path(plan.data.path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    return {"sha256": file_sha256(p), **{k: v for k, v in to_dict(plan.data).items() if k != "path"}}


def stage_settings(plan: Plan, data: dict) -> dict[str, dict]:
    """The resolved settings each stage's results depend on, by stage name."""
    common = {"model": to_dict(plan.model), "data": data, "split": to_dict(plan.split), "codec": to_dict(plan.codec),
              "seed": plan.seed}
    out: dict[str, dict] = {}
    for st in plan.stages:
        s = {**common, "stage": to_dict(st)}
        if st.kind != "eval":
            s["train"] = result_settings(plan.train)
            s["lora"] = to_dict(plan.lora)
        if st.kind == "eval" or st.evaluate:
            s["eval"] = result_settings(plan.eval)
        for dep in (st.base, st.adapter_from):
            if dep:
                s[f"after_{dep}"] = digest(out[dep])
        out[st.name] = s
    return out


def fingerprint_file(out: Path, stage: str) -> Path:
    return out / "stages" / stage / "fingerprint.json"


def check_fingerprints(out: Path, settings: dict[str, dict], restart: tuple[str, ...] = ()) -> None:
    """Stop (one line) when a stage on disk was run with other settings, unless it is to be restarted."""
    unknown = sorted(set(restart) - set(settings))
    if unknown:
        raise FlopcastError(f"--restart: no stage {', '.join(unknown)} in the plan (stages: {', '.join(settings)})")
    changed = []
    for name, new in settings.items():
        old = load(fingerprint_file(out, name))
        if name not in restart and old is not None and (diff := differences(old, new)):
            changed.append((name, diff))
    if changed:
        what = "; ".join(f"{n} ({', '.join(d[:5])}{', ...' if len(d) > 5 else ''})" for n, d in changed)
        raise SettingsChanged(f"{out} holds stages run with other settings: {what}; use another --out, or "
                              f"--restart {','.join(n for n, _ in changed)} (`flopcast train`/`sweep`: --restart) to "
                              "archive their files and run them again")


def archive_stages(out: Path, names: tuple[str, ...]) -> list[Path]:
    """Move the files of stages to restart to ``out/archive/<stage>-<time>/`` (their FLOPs stay in the ledger)."""
    moved = []
    for name in names:
        d = out / "stages" / name
        if d.exists():
            dest = out / "archive" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(d), str(dest))
            moved.append(dest)
    return moved
