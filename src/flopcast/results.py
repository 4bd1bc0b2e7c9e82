"""Typed results of evaluations, training runs, stages and studies, and their JSON form. No torch.

On disk they are the JSON files flopcast has always written (``eval/metrics.json``,
``stages/<stage>/stage.json``, ``summary.json``), readable by people, with a ``format`` number added;
``from_dict`` also reads files written before it (format 0). Context lengths are ``int`` keys here and
strings in JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FlopcastError

FORMAT = 1
BASELINE_ORDER = ("persistence", "linear", "lv_ode", "seasonal_naive", "auto_ets", "auto_arima", "theta")


def _known(cls: Any, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _no_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@dataclass
class Score:
    """One method's errors at one context length (original units unless ``_scaled``)."""

    n_windows: int
    n_scored: int
    parse_failure_rate: float
    mse: float = math.nan
    mae: float = math.nan
    mse_scaled: float = math.nan
    mae_scaled: float = math.nan
    mse_ci95: list[float] | None = None
    mae_ci95: list[float] | None = None
    mse_per_var: list[float] | None = None
    mae_per_var: list[float] | None = None
    mse_per_step: list[float] | None = None
    mae_per_step: list[float] | None = None
    flops: int | None = None          # model only: FLOPs charged for these forecasts
    wall_s: float | None = None
    capped_rate: float | None = None  # share of forecasts that reached the decoder's integer-digit cap
    int_digits: int | None = None
    mase: float | None = None         # mean absolute scaled error (scale: the history's seasonal-naive error)
    mase_ci95: list[float] | None = None
    mase_per_series: list[float] | None = None
    mase_relative: float | None = None  # geometric mean over series of MASE / seasonal naive's MASE
    wql: float | None = None          # sampled forecasts: weighted quantile loss
    coverage: dict[str, float] | None = None  # sampled forecasts: share of truths inside each band ("0.1-0.9")
    unavailable: str | None = None    # windows a baseline could not forecast, and why

    def to_dict(self) -> dict:
        return _no_none(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "Score":
        return cls(**_known(cls, d))


@dataclass
class ContextScore:
    """Every method's score at one context length ``S`` (tokens)."""

    S: int
    n_windows: int
    scores: dict[str, Score] = field(default_factory=dict)
    context_steps_mean: float | None = None
    prompt_tokens_mean: float | None = None
    skipped: str | None = None  # why there were no windows

    @property
    def model(self) -> Score | None:
        return self.scores.get("model")

    def to_dict(self) -> dict:
        head = {"n_windows": self.n_windows, "context_steps_mean": self.context_steps_mean,
                "prompt_tokens_mean": self.prompt_tokens_mean, "skipped": self.skipped}
        return {**_no_none(head), **{m: s.to_dict() for m, s in self.scores.items()}}

    @classmethod
    def from_dict(cls, S: int, d: dict) -> "ContextScore":
        scores = {k: Score.from_dict(v) for k, v in d.items() if isinstance(v, dict)}
        return cls(int(S), d.get("n_windows", 0), scores, d.get("context_steps_mean"), d.get("prompt_tokens_mean"),
                   d.get("skipped"))


@dataclass
class EvalResult:
    """An evaluation of one model (and the baselines) at every context length."""

    name: str
    model: str            # the model's name ("" for baselines only)
    protocol: str
    config: dict
    codec: dict
    n_series: int
    contexts: dict[int, ContextScore] = field(default_factory=dict)
    fingerprint: str | None = None

    def score(self, S: int, method: str = "model") -> Score | None:
        ctx = self.contexts.get(S)
        return ctx.scores.get(method) if ctx else None

    def rows(self) -> list[dict]:
        """One row per (S, method) for tables."""
        out = []
        for S, ctx in self.contexts.items():
            for method in ("model", *BASELINE_ORDER):
                m = ctx.scores.get(method)
                if m:
                    ci = m.mse_ci95 or [math.nan, math.nan]
                    out.append({"S": S, "method": method, "windows": m.n_windows, "MSE": m.mse, "MAE": m.mae,
                                "MSE 95% CI": f"[{ci[0]:.4g}, {ci[1]:.4g}]", "MASE": m.mase,
                                "MASE / seasonal naive": m.mase_relative, "WQL": m.wql,
                                "parse fail %": 100 * m.parse_failure_rate, "FLOPs": m.flops,
                                "not forecast": m.unavailable})
        return out

    def to_dict(self) -> dict:
        return _no_none({"format": FORMAT, "name": self.name, "model": self.model, "protocol": self.protocol,
                         "config": self.config, "codec": self.codec, "n_series": self.n_series,
                         "contexts": {str(S): c.to_dict() for S, c in self.contexts.items()},
                         "fingerprint": self.fingerprint})

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        return cls(d.get("name", ""), d.get("model", ""), d["protocol"], d.get("config", {}), d.get("codec", {}),
                   d.get("n_series", 0), {int(S): ContextScore.from_dict(S, c) for S, c in d["contexts"].items()},
                   d.get("fingerprint"))


@dataclass
class RunResult:
    """One training run of a stage."""

    run: str
    dir: str
    lr: float
    rank: int
    seq_len: int
    steps: int
    flops: int
    val_loss: float | None
    status: str
    wall_s: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        return cls(**_known(cls, d))


@dataclass
class StageResult:
    """A finished stage: its runs, the best of them, and its evaluation."""

    kind: str
    runs: list[RunResult] = field(default_factory=list)
    best: RunResult | None = None
    test: EvalResult | None = None
    status: str = "done"
    wall_s: float = 0.0
    fingerprint: str | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"format": FORMAT, "kind": self.kind, "status": self.status, "wall_s": self.wall_s}
        if self.runs:
            d["runs"] = [r.to_dict() for r in self.runs]
        if self.best is not None:
            d["best"] = self.best.to_dict()
        if self.test is not None:
            d["test"] = self.test.to_dict()
        return _no_none({**d, "fingerprint": self.fingerprint})

    @classmethod
    def from_dict(cls, d: dict) -> "StageResult":
        return cls(d.get("kind", ""), [RunResult.from_dict(r) for r in d.get("runs", [])],
                   RunResult.from_dict(d["best"]) if "best" in d else None,
                   EvalResult.from_dict(d["test"]) if "test" in d else None,
                   d.get("status", "done"), d.get("wall_s", 0.0), d.get("fingerprint"))


@dataclass
class StudyResult:
    """What ``flopcast run`` returns and writes to ``summary.json``."""

    plan: str
    budget: float
    ledger: dict
    stages: dict[str, StageResult] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "plan": self.plan, "budget": self.budget, "ledger": self.ledger,
                "stages": {n: s.to_dict() for n, s in self.stages.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "StudyResult":
        return cls(d["plan"], d["budget"], d["ledger"], {n: StageResult.from_dict(s) for n, s in d["stages"].items()})


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path`` (one step on POSIX): readers
    see the old file or the whole new one, and a failed or killed write leaves the old file as it was. Every file
    flopcast writes goes through here (directories of files -- checkpoints, adapters -- swap by renames too)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def read_json(path: str | Path, fix: str | None = None) -> Any:
    """A JSON file flopcast wrote (a result, status, fingerprint, summary, adapter metadata). A damaged one -- cut
    short by a full disk, edited by hand -- is one line naming it and the way out (``fix``, else
    :func:`way_out`), not a traceback."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise FlopcastError(f"{p}: not valid JSON ({type(e).__name__}); {fix or way_out(p)}") from e


def way_out(path: Path) -> str:
    """How to get past a damaged file of a study: run its stage again (the stage is the directory below
    ``stages/``), or write the study's summary again."""
    parts = path.parts
    if "stages" in parts[:-2]:
        stage = parts[parts.index("stages") + 1]
        return f"run the study again with --restart {stage} (it archives the stage's files and runs it anew)"
    return "run the study again to write it anew, or delete it"
