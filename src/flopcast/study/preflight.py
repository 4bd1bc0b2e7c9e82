"""What a study checks before it spends a FLOP or writes a file, in :func:`prepare`:

1. every stage's resolved settings against the fingerprints on disk (a changed stage stops the study with the
   keys that differ, unless it is restarted: :mod:`flopcast.study.fingerprint`);
2. the data: it loads, there is training data, and the evaluation has windows at some context length;
3. the budget: a changed budget follows the rules of ``flopcast budget set``, and the least every unfinished
   stage costs (:func:`flopcast.study.stages.stage_price`: its runs as planned, or one step for
   ``steps = "remaining"``, plus its evaluation's bound) fits in what the budget leaves.

Only then are ``plan.toml`` and ``split.json`` written.
"""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import h5py

from ..budget.flops import Arch
from ..budget.ledger import Ledger
from ..budget.memory import check_fits, train_step_bytes
from ..budget.records import check_covered
from ..config import save_toml, to_dict
from ..data.dataset import Dataset, split_dataset
from ..data.io import load, save_h5
from ..data.simulate import simulate
from ..encoding.codec import LLMTimeCodec
from ..errors import BudgetExceeded, DataError, FlopcastError
from ..model.compile import RECOMPILE_LIMIT, compile_on
from ..model.load import free_memory, resolve_device, resolve_dtype
from . import fingerprint
from .plan import Plan, Stage
from .stages import possible_work, stage_price
from .state import Study, recorded_budget, stage_done


def prepare(plan: Plan, out_dir: str | Path, progress: bool = True, restart: tuple[str, ...] = (),
            only: list[str] | None = None) -> Study:
    """Check the plan against the study directory, then its data, stages and budget; only then write anything.
    ``only`` and ``restart`` have passed :func:`check_selection` (the runner calls it before it locks the
    directory)."""
    out = Path(out_dir)
    _check_bases_run(plan, out, only, restart)
    out.mkdir(parents=True, exist_ok=True)
    settings = fingerprint.stage_settings(plan, fingerprint.data_settings(plan))
    fingerprint.check_fingerprints(out, settings, tuple(restart))
    fingerprint.archive_stages(out, tuple(restart))
    ds = _dataset(plan, out)
    sp, parts = split_dataset(ds, plan.split, plan.eval.horizon)
    study = Study(plan, out, _open_ledger(out, plan.budget), parts["train"], parts["val"], parts["test"],
                  LLMTimeCodec.fit(plan.codec, parts["train"].series), settings, progress)
    todo = [st for st in plan.stages if (not only or st.name in only) and not study.stage_done(st.name)]
    check_data(study, todo)
    check_memory(study, todo)
    check_compiled_variants(study, todo)
    target = _budget_change(plan, out, study.ledger)
    check_affordable(study, todo, study.ledger.budget if target is None else target)
    if target is not None:
        old = study.ledger.set_budget(target)  # raising is always allowed; lowering below what is used is refused
        warnings.warn(f"budget of {out}: {old:.3e} -> {target:.3e} FLOPs, as the plan now says", stacklevel=2)
    save_toml(plan.to_dict(), out / "plan.toml")
    (out / "split.json").write_text(sp.to_json())
    return study


def _budget_change(plan: Plan, out: Path, ledger: Ledger) -> float | None:
    """The budget the ledger should change to, or None. It changes only where the plan's budget is new: a study's
    first run, or a plan whose budget differs from the one the study last ran with. A budget changed since by
    ``flopcast budget set`` stays as it is while the plan's value stays the same."""
    recorded = recorded_budget(out)
    if (recorded is not None and recorded == plan.budget) or ledger.budget == int(plan.budget):
        return None
    ledger.check_budget_change(plan.budget)
    return plan.budget


def check_selection(plan: Plan, only: list[str] | None, restart: tuple[str, ...]) -> None:
    """``only`` and ``restart`` name stages of the plan, and a stage run again is one that runs this time."""
    names = [s.name for s in plan.stages]
    for option, given in (("--only", only or []), ("--restart", restart)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise FlopcastError(f"{option} {', '.join(unknown)}: no such stage in plan {plan.name!r} "
                                f"(its stages: {', '.join(names)})")
    left_out = [n for n in restart if only and n not in only]
    if left_out:
        raise FlopcastError(f"--restart {', '.join(left_out)}: --only leaves it out, so it would be archived and not "
                            "run again; name it in --only too")


def _check_bases_run(plan: Plan, out: Path, only: list[str] | None, restart: tuple[str, ...]) -> None:
    """Every stage to run builds on stages that are done (and not run again) or that run before it this time."""
    done = {s.name for s in plan.stages if stage_done(out, s.name) and s.name not in restart}
    running = {s.name for s in plan.stages if (not only or s.name in only) and s.name not in done}
    for st in (s for s in plan.stages if s.name in running):
        for ref in (st.base, st.adapter_from):
            if ref and ref not in running | done:
                raise FlopcastError(f"stage {st.name!r} builds on {ref!r}, which has not run; run it first "
                                    f"(--only {ref},{st.name})")


def _open_ledger(out: Path, budget: float) -> Ledger:
    """The study's ledger; its budget stays as it is until the plan has passed its checks. A ledger that is
    missing, or holds less than the work in ``out`` recorded, stops the study (:mod:`flopcast.budget.records`)."""
    path = out / "ledger.db"
    ledger = Ledger(path) if path.is_file() else None
    check_covered(path, out, ledger.used() if ledger is not None else None)
    return ledger or Ledger(path, budget)


def _dataset(plan: Plan, out: Path) -> Dataset:
    """The plan's data file, or its simulated systems (kept in ``data.h5``, made again when the settings change)."""
    if plan.data:
        return load(plan.data)
    path = out / "data.h5"
    if not path.is_file() or _sim_settings(path) != to_dict(plan.simulate):
        save_h5(simulate(plan.simulate), path, attrs={"simulate": json.dumps(to_dict(plan.simulate))})
    return load(path)


def _sim_settings(path: Path) -> dict | None:
    """The simulation settings a study's data.h5 was made with (None for a file without them)."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["simulate"]) if "simulate" in f.attrs else None


def check_affordable(study: Study, stages: list[Stage], budget: float) -> None:
    """Refuse, with the numbers, a plan whose unfinished stages cannot all fit in what ``budget`` leaves."""
    ledger = study.ledger
    left = int(budget) - (ledger.budget - ledger.left())
    needs = {st.name: max(0, stage_price(study, st).least - ledger.committed_under(st.name + "/")) for st in stages}
    total = sum(needs.values())
    if total > left:
        parts = ", ".join(f"{n} {v:.3e}" for n, v in needs.items() if v)
        raise BudgetExceeded(f"plan {study.plan.name!r} needs at least {total:.3e} FLOPs to finish ({parts}) but only "
                             f"{max(left, 0):.3e} of its {budget:.3e} budget are left; raise the plan's budget")


def check_data(study: Study, stages: list[Stage]) -> None:
    """Training data exists, and the evaluation has windows at some context length."""
    if any(st.kind != "eval" for st in stages) and not study.train.series:
        raise DataError(f"the train split is empty ({study.plan.split}); there is nothing to train on")
    if any(st.kind == "eval" or st.evaluate for st in stages):
        wins = study.eval_windows
        if not any(w for w, _ in wins.values()):
            cfg = study.plan.eval
            raise DataError(f"no evaluation windows at any context length {list(cfg.contexts)}: the {cfg.split} "
                            f"series are too short for protocol {cfg.protocol!r} (horizon {cfg.horizon}); use shorter "
                            "contexts or longer series")


def check_memory(study: Study, stages: list[Stage]) -> None:
    """Every training run's step fits in the free memory of the device the study runs on (a later stage's batch that
    cannot fit is found before the first stage spends anything)."""
    device = resolve_device(study.plan.model.device)
    free = free_memory(device)
    elem = resolve_dtype(study.plan.model.dtype, device).itemsize
    for st in stages:
        for run in {r for w in possible_work(study, st) for r in w.runs}:
            need = partial(_step_bytes, study.arch, run.train.seq_len, elem, study.head_tokens(run.train))
            check_fits(f"stage {st.name!r}: a training step", need, run.train.batch_size, free, device,
                       "train.batch_size")


TRAIN_VARIANTS = 3   # compiled variants of the decoder layer per training shape: first layer, the rest, validation
DECODE_VARIANTS = 2  # ... of the decode step per context length and adapter shape: at most two cache-length buckets


def compiled_variants(study: Study, stages: list[Stage]) -> tuple[int, int]:
    """At most how many variants of the decoder layer (training) and of the decode step (evaluations) ``stages``
    compile, where they compile: :data:`TRAIN_VARIANTS` per (sequence length, LoRA rank, head) and
    :data:`DECODE_VARIANTS` per (context length, evaluated adapter's rank), as counted on tiny models (one compiled
    variant serves every model instance of a shape)."""
    device, plan = resolve_device(study.plan.model.device), study.plan
    works = [w for st in stages for w in possible_work(study, st)]
    shapes = {(r.train.seq_len, r.lora.rank, r.train.head) for w in works for r in w.runs
              if compile_on(r.train.compile, device)}
    decoded = {(S, w.eval_lora.rank if w.eval_lora else 0) for w in works for S in w.contexts
               if compile_on(plan.eval.compile, device)}
    return TRAIN_VARIANTS * len(shapes), DECODE_VARIANTS * len(decoded)


def check_compiled_variants(study: Study, stages: list[Stage]) -> None:
    """Warn when a study may compile more variants of one function than torch keeps (:data:`RECOMPILE_LIMIT`):
    past the limit, torch runs every new shape eagerly, slower and with no word of its own."""
    train, decode = compiled_variants(study, stages)
    for what, n in (("training", train), ("decoding", decode)):
        if n > RECOMPILE_LIMIT:
            warnings.warn(f"{what} may compile up to {n} variants, more than the {RECOMPILE_LIMIT} torch keeps: "
                          "the rest would run eagerly; fewer distinct sequence lengths, ranks or contexts per study "
                          "avoid it", stacklevel=3)


def _step_bytes(arch: Arch, seq: int, elem: int, head: int | None, batch: int) -> int:
    return train_step_bytes(arch, batch, seq, elem, head)
