"""Study plans: a TOML file describing the data, model, budget and stages. No torch.

See ``plans/quickstart.toml`` and ``plans/reference.toml``. Stage kinds:

* ``eval``    -- test evaluation of the base model (zero-shot) or of another stage's adapter (``adapter_from``)
* ``train``   -- one LoRA run; ``steps = "remaining"`` spends what the budget has left after the
  stage's own test evaluation
* ``grid``    -- a run per (``lr`` x ``rank``); the lowest validation loss wins
* ``context`` -- a run per ``seq_len`` with the best settings of ``base``

``base`` names an earlier stage whose best (lr, rank, seq_len) a stage starts from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (CodecConfig, EvalConfig, LoraSpec, ModelSpec, SimConfig, SplitConfig, TrainConfig, _check,
                     from_dict, load_toml, to_dict)
from .errors import FlopcastError

STAGE_KINDS = ("eval", "train", "grid", "context")


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str
    train: dict = field(default_factory=dict)   # TrainConfig overrides
    lora: dict = field(default_factory=dict)    # LoraSpec overrides
    lr: tuple[float, ...] = ()
    rank: tuple[int, ...] = ()
    seq_len: tuple[int, ...] = ()
    base: str | None = None
    steps: int | str | None = None
    adapter_from: str | None = None
    evaluate: bool = True

    def __post_init__(self) -> None:
        for k in ("lr", "rank", "seq_len"):
            object.__setattr__(self, k, tuple(getattr(self, k)))
        _check(bool(self.name) and "/" not in self.name, f"stage name must be non-empty without '/', got {self.name!r}")
        _check(self.kind in STAGE_KINDS, f"stage {self.name!r}: kind must be one of {STAGE_KINDS}, got {self.kind!r}")
        _check(self.kind != "grid" or (self.lr and self.rank), f"grid stage {self.name!r} needs lr = [...] and rank = [...]")
        _check(self.kind != "context" or self.seq_len, f"context stage {self.name!r} needs seq_len = [...]")
        _check(self.steps is None or self.steps == "remaining" or (isinstance(self.steps, int) and self.steps > 0),
               f"stage {self.name!r}: steps must be a positive integer or 'remaining'")


@dataclass(frozen=True)
class Plan:
    name: str
    budget: float
    stages: tuple[Stage, ...]
    model: ModelSpec = field(default_factory=ModelSpec)
    data: str | None = None
    simulate: SimConfig = field(default_factory=SimConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    device_power_w: float = 65.0       # for the energy estimate (a laptop CPU package; A100: 400)
    carbon_g_per_kwh: float = 300.0

    def __post_init__(self) -> None:
        _check(self.budget > 0, f"budget must be > 0, got {self.budget}")
        names = [s.name for s in self.stages]
        _check(len(names) == len(set(names)), f"stage names must be unique: {names}")
        for i, s in enumerate(self.stages):
            for ref in (s.base, s.adapter_from):
                _check(ref is None or ref in names[:i], f"stage {s.name!r} refers to {ref!r}, which is not an earlier stage")

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        d["stages"] = [to_dict(s) for s in self.stages]
        return d


SECTIONS = {"model": ModelSpec, "simulate": SimConfig, "split": SplitConfig, "codec": CodecConfig,
            "eval": EvalConfig, "lora": LoraSpec, "train": TrainConfig}


def plan_from_dict(d: dict[str, Any], where: str = "plan") -> Plan:
    d = dict(d)
    try:
        stages = tuple(from_dict(Stage, s) for s in d.pop("stages", []))
        kwargs = {k: from_dict(cls, d.pop(k)) for k, cls in SECTIONS.items() if k in d}
        if not stages:
            raise FlopcastError("a plan needs at least one [[stages]] entry")
        return from_dict(Plan, {**d, **kwargs, "stages": stages})
    except FlopcastError as e:
        raise FlopcastError(f"{where}: {e}") from None


def load_plan(path: str | Path) -> Plan:
    return plan_from_dict(load_toml(path), str(path))
