"""A study in progress: its plan, directory, ledger, data splits and codec, and what is derived from them once.

:class:`Study` is what the preflight checks, the pricing of stages and the stage runner all read. The tokenizer,
the validation series' tokens, the FLOP-count architecture and the evaluation windows are computed on first use
and kept, so a study builds each once. The results of finished stages live in ``stages/<stage>/stage.json``.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..budget.flops import Arch
from ..budget.ledger import Ledger
from ..config import TrainConfig, load_toml
from ..data.dataset import Dataset
from ..encoding.chunks import series_token_ids, target_starts
from ..encoding.codec import LLMTimeCodec
from ..encoding.grammar import LLMTimeGrammar
from ..encoding.windows import Window, build_windows, window_grammar
from ..errors import FlopcastError
from ..model.heads import numeric_token_ids
from ..model.load import load_tokenizer, resolve_arch
from ..results import StageResult, read_json
from .plan import Plan


def recorded_budget(out: Path) -> float | None:
    """The budget of the plan the study in ``out`` last ran with (None where none has run)."""
    p = out / "plan.toml"
    return float(load_toml(p)["budget"]) if p.is_file() else None


def stage_done(out: Path, stage: str) -> bool:
    """Whether the study in ``out`` has finished ``stage``."""
    f = out / "stages" / stage / "stage.json"
    return f.is_file() and read_json(f).get("status") == "done"


@dataclasses.dataclass
class Study:
    """A study directory opened with a plan that passed its checks."""

    plan: Plan
    out: Path
    ledger: Ledger
    train: Dataset
    val: Dataset
    test: Dataset
    codec: LLMTimeCodec
    settings: dict[str, dict[str, Any]]   # each stage's resolved settings (see flopcast.study.fingerprint)
    progress: bool = True
    cluster: Any = None                   # the ledger actor when a stage's runs go to Ray (flopcast.study.scale_out)

    @property
    def eval_data(self) -> Dataset:
        """The split the plan evaluates on (``eval.split``)."""
        data: Dataset = getattr(self, self.plan.eval.split)
        return data

    @cached_property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.plan.model.name)

    @property
    def val_from(self) -> list[int] | None:
        """A time split's validation origin per series (the steps before it are context), else None."""
        return [o[0] for o in self.val.origins] if self.val.origins is not None else None

    @cached_property
    def val_targets_from(self) -> list[int] | None:
        """Where each validation series' scored tokens begin (None: every token is scored)."""
        vf = self.val_from
        return target_starts(self.val.series, vf, self.codec, self.tokenizer) if vf is not None else None

    @cached_property
    def val_token_ids(self) -> list[list[int]]:
        """The validation series as token ids (once per study; each run length chunks them its own way)."""
        return series_token_ids(self.val.series, self.codec, self.tokenizer)

    @cached_property
    def arch(self) -> Arch:
        return resolve_arch(self.plan.model.name)

    def head_tokens(self, t: TrainConfig) -> int | None:
        """Columns of the numeric head (the series' alphabet, as training computes them), None for the full head."""
        if t.head != "numeric":
            return None
        decimals = self.plan.codec.decimals
        signed = any((np.round(self.codec.series_scale(s).apply(s), decimals) < 0).any() for s in self.train.series)
        return len(numeric_token_ids(self.tokenizer, self.plan.codec, signed))

    @cached_property
    def eval_windows(self) -> dict[int, tuple[list[Window], LLMTimeGrammar | None]]:
        """Evaluation windows and decoding grammar per context length (built once per study)."""
        cfg, ds = self.plan.eval, self.eval_data
        series = ds.series[: cfg.max_series] if cfg.max_series else ds.series
        origins = ds.origins[: len(series)] if ds.origins is not None else None
        out: dict[int, tuple[list[Window], LLMTimeGrammar | None]] = {}
        for S in cfg.contexts:
            wins = build_windows(series, self.codec, self.tokenizer, S, cfg, origins)
            out[S] = (wins, window_grammar(wins, self.tokenizer, self.codec, ds.n_vars) if wins else None)
        return out

    def stage_dir(self, stage: str) -> Path:
        return self.out / "stages" / stage

    def stage_done(self, stage: str) -> bool:
        return stage_done(self.out, stage)

    def stage_result(self, stage: str) -> StageResult:
        p = self.stage_dir(stage) / "stage.json"
        if not p.is_file():
            raise FlopcastError(f"stage {stage!r} has no results yet")
        return StageResult.from_dict(read_json(p))

    def save_stage_result(self, stage: str, result: StageResult) -> None:
        (self.stage_dir(stage) / "stage.json").write_text(json.dumps(result.to_dict(), indent=2))
