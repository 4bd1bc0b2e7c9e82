"""What a stage runs, worked out in one place: both the price a study checks before it starts and the runner read it.

:func:`stage_work` is that one place. From the stage's kind and settings, and where it starts (the plan's training
and LoRA settings, or the best run of its ``base``), it gives the training runs (name, settings, steps) and the
context lengths evaluated afterwards. :func:`possible_work` asks it for every start a stage may get: one when the
stage has no base or the base has finished, else one per run the base might pick as its best. :func:`stage_price`
turns that into the least the stage can cost and what it costs at most (each run as planned, the evaluation's
bound), for the affordability check and the tests that hold the charged FLOPs to the price.

A ``steps = "remaining"`` run learns its steps when it starts, from what the ledger has left
(:func:`remaining_run`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ..budget.costs import RunCost, decode_batches, generation_bound, run_cost, val_chunks_used
from ..budget.flops import LoraShape, lora_shape
from ..config import LoraSpec, load_toml
from ..encoding.chunks import make_chunks
from ..errors import BudgetExceeded
from ..forecasting.decode import MAX_AUTO_BATCH
from ..model.compile import compile_on
from ..model.load import resolve_device
from ..results import RunResult
from ..training.checkpoint import CheckpointManager
from ..training.rundir import finished_run
from .plan import Plan, RunPlan, Stage
from .state import Study


@dataclass(frozen=True)
class StageWork:
    """What a stage does from one start: its training runs, and the context lengths its evaluation scores
    (none when it does not evaluate) with an adapter no wider than ``eval_lora`` (None: the base model alone).
    ``remaining``: the one run spends what the budget leaves."""

    runs: tuple[RunPlan, ...]
    contexts: tuple[int, ...]
    eval_lora: LoraSpec | None = None
    remaining: bool = False


def _widest(runs: Iterable[RunPlan]) -> LoraSpec | None:
    """The largest adapter among ``runs``: an evaluation with it bounds one with any of the others."""
    return max((r.lora for r in runs), key=lambda lo: lo.rank, default=None)


def stage_work(plan: Plan, stage: Stage, base_best: RunResult | RunPlan | None = None) -> StageWork:
    """The runs and evaluation of ``stage`` starting from the best run of its base (``base_best``; None for a stage
    without a base): the plan's training and LoRA settings, the base's best lr, seq_len and rank, the stage's own
    overrides, expanded by its kind (:meth:`~flopcast.study.plan.Stage.runs`)."""
    train, lora = plan.train, plan.lora
    if base_best is not None:
        lr, seq_len, rank = ((base_best.lr, base_best.seq_len, base_best.rank) if isinstance(base_best, RunResult)
                             else (base_best.train.lr, base_best.train.seq_len, base_best.lora.rank))
        train, lora = replace(train, lr=lr, seq_len=seq_len), replace(lora, rank=rank)
    runs = tuple(stage.runs(train, lora))
    evaluates = stage.kind == "eval" or stage.evaluate
    return StageWork(runs, plan.eval.contexts if evaluates else (), _widest(runs), stage.steps == "remaining")


def possible_work(study: Study, stage: Stage) -> list[StageWork]:
    """:func:`stage_work` for every start ``stage`` may get: the base's actual best once the base has finished,
    else each run the base may make. An evaluation of another stage's adapter (``adapter_from``) is priced with
    the widest adapter that stage may pick."""
    if stage.adapter_from:
        runs = [r for w in possible_work(study, study.plan.stage(stage.adapter_from)) for r in w.runs]
        return [replace(stage_work(study.plan, stage), eval_lora=_widest(runs))]
    if not stage.base:
        return [stage_work(study.plan, stage)]
    base = study.plan.stage(stage.base)
    if study.stage_done(base.name):
        return [stage_work(study.plan, stage, study.stage_result(base.name).best)]
    return [stage_work(study.plan, stage, run) for w in possible_work(study, base) for run in w.runs]


# ----------------------------------------------------------------------------- prices

@dataclass(frozen=True)
class Price:
    """The least a stage costs and the most it may cost (FLOPs), over every start it may get."""

    least: int
    most: int


def run_price(study: Study, run: RunPlan) -> RunCost:
    """What one run costs as planned (its validation over the study's validation chunks at its length)."""
    return run_cost(study.arch, run.train, lora_shape(run.lora), _val_chunks(study, run), study.head_tokens(run.train))


def eval_price(study: Study, contexts: tuple[int, ...], lora: LoraShape | None = None) -> int:
    """The bound an evaluation at ``contexts`` reserves: every window generating the grammar's longest output, over
    the rows decoding computes (compiled, each batch filled up: :func:`~flopcast.budget.costs.decode_batches`; an
    "auto" batch priced at its most rows)."""
    windows, cfg = study.eval_windows, study.plan.eval
    compiled = compile_on(cfg.compile, resolve_device(study.plan.model.device))
    size = cfg.batch_size if isinstance(cfg.batch_size, int) else MAX_AUTO_BATCH

    def rows(n: int) -> int:
        return sum(decode_batches(n * cfg.samples, size, compiled))
    return sum(generation_bound(study.arch, rows(len(wins)), S, grammar.max_tokens(cfg.horizon), lora)
               for S in contexts for wins, grammar in [windows[S]] if wins and grammar is not None)


def work_price(study: Study, work: StageWork) -> Price:
    """A stage's cost from one start: its runs as planned and its evaluation's bound (for its widest adapter).
    A ``remaining`` run needs one step at least and may spend everything the budget leaves."""
    ev = eval_price(study, work.contexts, lora_shape(work.eval_lora) if work.eval_lora is not None else None)
    costs = [run_price(study, r) for r in work.runs]
    if work.remaining:
        return Price(ev + min(c.per_step for c in costs), study.ledger.budget)
    planned = sum(c.planned for c in costs)
    return Price(ev + planned, ev + planned)


def stage_price(study: Study, stage: Stage) -> Price:
    """The least and the most ``stage`` may cost, over every start it may get."""
    prices = [work_price(study, w) for w in possible_work(study, stage)]
    return Price(min(p.least for p in prices), max(p.most for p in prices))


def _val_chunks(study: Study, run: RunPlan) -> int:
    if not study.val_token_ids:
        return 0
    tok, t = study.tokenizer, run.train
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    chunks = make_chunks(study.val_token_ids, t.seq_len, pad, t.stride, study.val_targets_from)
    return val_chunks_used(len(chunks), t)


# ----------------------------------------------------------------------------- steps = "remaining"

def remaining_run(study: Study, stage: Stage, run: RunPlan, run_dir: Path) -> RunPlan:
    """A ``steps = "remaining"`` run with its steps and FLOP cap: what the ledger has left (the stage's evaluation
    is held aside by then). A run trained before an interruption keeps the steps it was given; one resumed from a
    checkpoint counts its own ledger row's FLOPs as spendable."""
    done = finished_run(run_dir)
    if done is not None:
        saved = load_toml(done.run_dir / "config.toml")["train"]
        return replace(run, train=replace(run.train, steps=saved["steps"], max_flops=saved.get("max_flops")))
    per = run_cost(study.arch, run.train, lora_shape(run.lora), 0, study.head_tokens(run.train)).per_step
    ckpt = CheckpointManager(run_dir)
    row = ckpt.load()[0].ledger_id if ckpt.exists() else None
    mine = study.ledger.get(row).committed if row is not None else 0
    spendable = study.ledger.left() + mine
    steps = int(spendable // per)  # validation passes come out of this too: training stops at max_flops
    if steps < 1:
        raise BudgetExceeded(f"stage {stage.name!r}: no budget left for a training step "
                             f"({study.ledger.left():.3e} left, {per:.3e} per step)")
    return replace(run, train=replace(run.train, steps=steps, max_flops=spendable))
