"""Run a study plan: every stage inside one ledger budget, resumable after a kill.

``out_dir`` layout::

    plan.toml  data.h5 (when simulated)  split.json  ledger.db  summary.json  report.md  .flopcast.lock
    stages/<stage>/fingerprint.json                the resolved settings the stage was started with
    stages/<stage>/stage.json                      status + results of a finished stage
    stages/<stage>/<run>/...                       training run directories (see flopcast.training.engine)
    stages/<stage>/eval/metrics.json, windows.csv, plots
    baselines/                                     each baseline's forecasts, computed once for every stage
    archive/<stage>-<time>/                        files of stages run again with ``restart``

A re-run reuses every finished stage whose settings are unchanged and continues an unfinished one (finished runs
and evaluated context lengths inside it are read back, not charged again); :mod:`flopcast.study.preflight` checks
everything before anything is written. What each stage trains and evaluates is :func:`flopcast.study.stages
.stage_work`'s answer, the same the preflight priced.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from ..budget.flops import lora_shape
from ..budget.lock import DirLock
from ..errors import FlopcastError
from ..evaluation.evaluate import EvalJob, EvalRun
from ..model.load import load_model, released
from ..results import EvalResult, RunResult, StageResult, StudyResult
from ..training.card import write_card
from ..training.engine import RunSpec, train
from ..training.launch import train_in_processes
from ..training.rundir import TrainResult, finished_run
from . import fingerprint, scale_out
from .plan import Plan, RunPlan, Stage
from .preflight import check_selection, prepare
from .report import write_report
from .stages import StageWork, eval_price, remaining_run, stage_work
from .state import Study


def run_plan(plan: Plan, out_dir: str | Path, progress: bool = True, only: list[str] | None = None,
             restart: tuple[str, ...] = (), executor: str = "local", address: str | None = None) -> StudyResult:
    """Execute (or continue) every stage; finished stages with unchanged settings are reused. With ``executor =
    "ray"`` a stage's runs and evaluation run on the Ray cluster at ``address`` ("auto": the running one; None: an
    instance of its own; :mod:`flopcast.study.scale_out`)."""
    check_selection(plan, only, restart)  # before the directory is made
    with DirLock(out_dir):  # a second process on this study stops here
        study = prepare(plan, out_dir, progress, restart, only)
        if executor == "ray":
            study.cluster = scale_out.start(address, study.ledger)
        results = {}
        for stage in plan.stages:
            if only and stage.name not in only:  # left out this time; the summary still shows it when done
                if study.stage_done(stage.name):
                    results[stage.name] = study.stage_result(stage.name)
                continue
            fp = fingerprint.fingerprint_file(study.out, stage.name)
            if not fp.is_file():  # before any work: the stage is tied to these settings from now on
                fingerprint.save(fp, study.settings[stage.name])
            if study.stage_done(stage.name):
                results[stage.name] = study.stage_result(stage.name)
                continue
            t0 = time.time()
            res = run_stage(study, stage)
            res.wall_s, res.fingerprint = time.time() - t0, fingerprint.digest(study.settings[stage.name])
            study.save_stage_result(stage.name, res)
            results[stage.name] = res
        summary = StudyResult(plan.name, plan.budget, study.ledger.summary(), results)
        (study.out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
        write_report(study.out)
    return summary


def run_stage(study: Study, stage: Stage) -> StageResult:
    """One stage: an evaluation of the base model or of another stage's adapter, or the training runs
    :func:`~flopcast.study.stages.stage_work` gives (from the best run of ``base`` when it has one), then the
    evaluation of the best of them."""
    if stage.kind == "eval":
        adapter = None
        if stage.adapter_from:
            adapter = Path(_best_of(study, stage.adapter_from).dir) / "adapter_best"
        return StageResult(stage.kind, test=_evaluate(study, stage, adapter))
    base_best = _best_of(study, stage.base) if stage.base else None
    work = stage_work(study.plan, stage, base_best)
    done = _train_runs(study, stage, work)
    best = _best(stage, done)
    test = _evaluate(study, stage, Path(best.dir) / "adapter_best") if work.contexts else None
    if test is not None:
        write_card(Path(best.dir) / "adapter_best", best.dir, test)
    return StageResult(stage.kind, done, best, test)


def _best_of(study: Study, stage: str) -> RunResult:
    best = study.stage_result(stage).best
    if best is None:
        raise FlopcastError(f"stage {stage!r} trained no run that later stages could start from")
    return best


def _train_runs(study: Study, stage: Stage, work: StageWork) -> list[RunResult]:
    """Train the stage's runs while its evaluation's FLOPs (for its widest adapter) are held aside, so a stage never
    trains what it cannot then evaluate. A ``remaining`` run takes its steps once the hold is in place."""
    hold = None
    pending = any(finished_run(study.stage_dir(stage.name) / r.name) is None for r in work.runs)
    if work.contexts and pending:
        lora = lora_shape(work.eval_lora) if work.eval_lora is not None else None
        hold = study.ledger.hold(f"{stage.name}/{study.plan.eval.split} (held)",
                                 eval_price(study, work.contexts, lora))
    try:
        runs = [remaining_run(study, stage, run, study.stage_dir(stage.name) / run.name) if work.remaining else run
                for run in work.runs]
        specs = [_spec(study, stage, run) for run in runs]
        if study.cluster is not None and len(runs) > 1:
            _warn_processes(stage, specs)
            done = scale_out.train_parallel(specs, study.plan.model, study.plan.seed, study.plan.resources,
                                            study.out, study.cluster, study.progress)
        else:
            done = [_train_run(study, spec) for spec in specs]
        return [RunResult(run.name, str(spec.dir), run.train.lr, run.lora.rank, run.train.seq_len, r.steps, r.flops,
                          r.best_val_loss, r.status, r.wall_s) for run, spec, r in zip(runs, specs, done)]
    finally:
        study.ledger.drop_hold(hold)


def _warn_processes(stage: Stage, specs: list[RunSpec]) -> None:
    """A run on Ray trains in one process: say so where the plan asks for more (``processes`` serves a stage of
    one run, which trains on the driver)."""
    n = max(spec.train.processes for spec in specs)
    if n > 1:
        warnings.warn(f"stage {stage.name!r}: its runs train on Ray in one process each; [train] processes = {n} "
                      "applies to a stage of one run (trained on the driver)", stacklevel=3)


def _spec(study: Study, stage: Stage, run: RunPlan) -> RunSpec:
    return RunSpec(study.stage_dir(stage.name) / run.name, run.lora, run.train, study.codec, study.train.series,
                   study.val.series, name=f"{stage.name}/{run.name}", model_name=study.plan.model.name,
                   val_from=study.val_from)


def _train_run(study: Study, spec: RunSpec) -> TrainResult:
    """One training run on a freshly loaded model, whose memory is given back when it ends (the next run or
    evaluation measures free memory after that); on ``train.processes`` processes under accelerate when more
    than one (:mod:`flopcast.training.launch`)."""
    if spec.train.processes > 1:
        return train_in_processes(spec, study.plan.model, study.plan.seed, study.ledger, spec.train.processes)
    with released():
        lm = load_model(study.plan.model, seed=study.plan.seed)
        result = train(lm.model, lm.tokenizer, spec, ledger=study.ledger, progress=study.progress)
        del lm
    return result


def _best(stage: Stage, runs: list[RunResult]) -> RunResult:
    """The run with the lowest validation loss; diverged runs never win, and a stage of only diverged runs fails."""
    ok = [r for r in runs if r.status != "diverged"]
    if not ok:
        r = runs[-1]
        raise FlopcastError(f"stage {stage.name!r}: training diverged (loss became NaN or infinite) at step {r.steps} "
                            f"of {r.dir}; lower the learning rate (lr={r.lr:g})")
    scored = [r for r in ok if r.val_loss is not None]
    return min(scored, key=lambda r: r.val_loss or 0.0) if scored else ok[-1]


def _evaluate(study: Study, stage: Stage, adapter: Path | None) -> EvalResult:
    """The stage's test evaluation: on a Ray worker when the study runs on Ray (and the worker sees the study
    directory), else here."""
    run = EvalRun(name=f"{stage.name}/{study.plan.eval.split}", model_name=study.plan.model.name,
                  out_dir=study.stage_dir(stage.name) / "eval", baseline_store=study.out / "baselines",
                  fingerprint=fingerprint.digest(study.settings[stage.name]), progress=study.progress)
    job = EvalJob(study.plan.model, study.plan.seed, adapter, study.codec, study.eval_data, study.plan.eval, run)
    result = None
    if study.cluster is not None:
        result = scale_out.evaluate_remote(job, study.plan.resources, study.out, study.cluster)
    return result if result is not None else job.run_on(study.ledger)
