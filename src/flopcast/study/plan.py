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

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..checks import check_budget, require, type_problems
from ..config import (
    CodecConfig,
    DataSpec,
    EvalConfig,
    LoraSpec,
    ModelSpec,
    SimConfig,
    SplitConfig,
    TrainConfig,
    from_dict,
    load_toml,
    to_dict,
)
from ..errors import FlopcastError

STAGE_KINDS = ("eval", "train", "grid", "context")
# the stage fields each kind takes (besides name and kind)
KIND_FIELDS = {
    "eval": {"adapter_from"},
    "train": {"train", "lora", "base", "steps", "evaluate"},
    "grid": {"train", "lora", "lr", "rank", "base", "steps", "evaluate"},
    "context": {"train", "lora", "seq_len", "base", "steps", "evaluate"},
}


@dataclass(frozen=True)
class RunPlan:
    """One training run a stage makes: its name (its directory under the stage) and its settings."""

    name: str
    train: TrainConfig
    lora: LoraSpec


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
        require(bool(self.name) and "/" not in self.name,
                f"stage name must be non-empty without '/', got {self.name!r}")
        require(self.kind in STAGE_KINDS, f"stage {self.name!r}: kind must be one of {STAGE_KINDS}, got {self.kind!r}")
        require(self.kind != "grid" or bool(self.lr and self.rank),
               f"grid stage {self.name!r} needs lr = [...] and rank = [...]")
        require(self.kind != "context" or bool(self.seq_len), f"context stage {self.name!r} needs seq_len = [...]")
        require(self.steps is None or (self.steps == "remaining" and self.kind == "train")
               or (isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps > 0),
               f"stage {self.name!r}: steps must be a positive integer"
               + (" or 'remaining'" if self.kind == "train" else ""))

    def settings(self, train: TrainConfig, lora: LoraSpec) -> tuple[TrainConfig, LoraSpec]:
        """``train`` and ``lora`` (the plan's defaults, or the best of ``base``) with this stage's own overrides."""
        t = from_dict(TrainConfig, {**to_dict(train), **self.train,
                                    **({"steps": self.steps} if isinstance(self.steps, int) else {})})
        return t, from_dict(LoraSpec, {**to_dict(lora), **self.lora})

    def runs(self, train: TrainConfig, lora: LoraSpec) -> list[RunPlan]:
        """The training runs this stage makes when it starts from ``train``/``lora``: one ``run`` for a train
        stage, one per (lr, rank) for a grid, one per sequence length for a context sweep, none for an eval."""
        t, lo = self.settings(train, lora)
        if self.kind == "grid":
            return [RunPlan(f"lr={lr:g}_r={r}", replace(t, lr=lr), replace(lo, rank=r)) for lr in self.lr
                    for r in self.rank]
        if self.kind == "context":
            return [RunPlan(f"S={s}", replace(t, seq_len=s), lo) for s in self.seq_len]
        return [RunPlan("run", t, lo)] if self.kind == "train" else []


@dataclass(frozen=True)
class Resources:
    """What each training run of a study asks of a Ray cluster (``flopcast run --ray``), the plan's
    ``[resources]``: ``cpus`` (also the run's torch threads, so that runs on one machine do not fight over cores),
    ``gpus`` (None: one where the cluster has GPUs, else none; fractions share a GPU) and ``retries`` (how often
    a run whose worker died is started again from its checkpoint). Changes no result."""

    cpus: float = 1.0
    gpus: float | None = None
    retries: int = 3

    def __post_init__(self) -> None:
        require(self.cpus > 0, f"resources.cpus must be > 0, got {self.cpus}")
        require(self.gpus is None or self.gpus >= 0, f"resources.gpus must be >= 0, got {self.gpus}")
        require(self.retries >= 0, f"resources.retries must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class Plan:
    name: str
    budget: float
    stages: tuple[Stage, ...]
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec | None = None
    simulate: SimConfig = field(default_factory=SimConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: Resources = field(default_factory=Resources)
    seed: int = 0
    device_power_w: float = 65.0       # for the energy estimate (a laptop CPU package; A100: 400)
    carbon_g_per_kwh: float = 300.0

    def __post_init__(self) -> None:
        check_budget(self.budget)
        names = [s.name for s in self.stages]
        require(len(names) == len(set(names)), f"stage names must be unique: {names}")
        kinds = {s.name: s.kind for s in self.stages}
        for i, s in enumerate(self.stages):
            for ref in (s.base, s.adapter_from):
                require(ref is None or ref in names[:i],
                       f"stage {s.name!r} refers to {ref!r}, which is not an earlier stage")
                require(ref is None or kinds[ref] != "eval",
                        f"stage {s.name!r} builds on {ref!r}, an eval stage: it trains no adapter; name a train, "
                        "grid or context stage")
        remaining = [s.name for s in self.stages if s.steps == "remaining"]
        require(len(remaining) <= 1, f"only one stage may spend the remaining budget (steps = 'remaining'); "
                                     f"{', '.join(remaining)} all do")

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The plan as a table :func:`plan_from_dict` reads back: each stage with only the fields its kind takes
        that are set (the ``plan.toml`` a study keeps runs again as it is)."""
        d = to_dict(self)
        d["stages"] = [_stage_table(s) for s in self.stages]
        return d


def _stage_table(stage: Stage) -> dict[str, Any]:
    return {k: v for k, v in to_dict(stage).items()
            if k in ("name", "kind") or (k in KIND_FIELDS[stage.kind] and v not in (None, [], (), {}))}


SECTIONS = {"model": ModelSpec, "simulate": SimConfig, "split": SplitConfig, "codec": CodecConfig,
            "eval": EvalConfig, "lora": LoraSpec, "train": TrainConfig, "resources": Resources}


def _stage(raw: Any, i: int, problems: list[str]) -> Stage | None:
    """One stage from its table; what is wrong with it goes to ``problems``."""
    if not isinstance(raw, dict):
        problems.append(f"stages[{i}] must be a table")
        return None
    label = f"stage {raw.get('name', i)!r}"
    extra = sorted(set(raw) - {"name", "kind"} - KIND_FIELDS.get(str(raw.get("kind")), set(raw)))
    if extra:
        kind = raw["kind"]
        problems.append(f"{label}: {', '.join(extra)} not allowed in a{'n' if kind[0] in 'aeiou' else ''} {kind} stage "
                        f"(it takes {', '.join(sorted(KIND_FIELDS[kind])) or 'no other fields'})")
    try:
        return from_dict(Stage, {k: v for k, v in raw.items() if k not in extra})
    except FlopcastError as e:
        problems.append(f"{label}: {e}" if not str(e).startswith("stage") else str(e))
        return None


def _check_stage_settings(stages: list[Stage], train: TrainConfig, lora: LoraSpec, problems: list[str]) -> None:
    """Build every stage's training and LoRA configs now, so a bad value stops the plan before it spends."""
    for st in stages:
        bad_types = [p for cls,
                     d in ((TrainConfig, st.train), (LoraSpec, st.lora)) for p in _unknown_or_mistyped(cls, d)]
        if bad_types:
            problems += [f"stage {st.name!r}: {p}" for p in bad_types]
            continue
        try:
            st.runs(train, lora)
        except FlopcastError as e:
            problems.append(f"stage {st.name!r}: {e}")


def _unknown_or_mistyped(cls: type, d: dict) -> list[str]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    return ([f"unknown {cls.__name__} key(s) {', '.join(unknown)}"] if unknown else []) + type_problems(cls, d)


def _data_spec(value: Any) -> DataSpec | None:
    if value is None or isinstance(value, DataSpec):
        return value
    if isinstance(value, str):
        return DataSpec(value)
    if isinstance(value, dict):
        return from_dict(DataSpec, value)
    raise FlopcastError(f"data must be a file path or a table with path, id_column, time_column; got {value!r}")


def plan_from_dict(d: dict[str, Any], where: str = "plan") -> Plan:
    """A validated plan: every problem of every section and stage is reported in one error."""
    d, problems = dict(d), list[str]()
    raw = d.pop("stages", [])
    if not isinstance(raw, (list, tuple)):
        problems.append(f"stages must be a list of tables ([[stages]]), got {raw!r}")
        raw = []
    stages = [_stage(s, i, problems) for i, s in enumerate(raw)]
    kwargs: dict[str, Any] = {}
    for k, cls in SECTIONS.items():
        if k in d:
            try:
                kwargs[k] = from_dict(cls, d.pop(k))
            except FlopcastError as e:
                problems.append(f"[{k}] {e}")
    try:
        kwargs["data"] = _data_spec(d.pop("data", None))
    except FlopcastError as e:
        problems.append(str(e))
    if not stages and not problems:
        problems.append("a plan needs at least one [[stages]] entry")
    _check_stage_settings([s for s in stages if s is not None], kwargs.get("train", TrainConfig()),
                          kwargs.get("lora", LoraSpec()), problems)
    if "split" in kwargs and kwargs["split"].by == "time" and kwargs.get("eval", EvalConfig()).protocol == "seed":
        problems.append("[split] by = \"time\" scores each series' tail; it needs [eval] protocol = \"aligned\"")
    if not problems:
        try:
            return from_dict(Plan, {**d, **kwargs, "stages": tuple(stages)})
        except FlopcastError as e:
            problems.append(str(e))
    raise FlopcastError(f"{where}: " + "; ".join(problems))


def load_plan(path: str | Path) -> Plan:
    return plan_from_dict(load_toml(path), str(path))
