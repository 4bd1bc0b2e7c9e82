"""Run a study plan: every stage inside one ledger budget, resumable after a kill.

``out_dir`` layout::

    plan.toml  data.h5 (when simulated)  split.json  ledger.db  summary.json  report.md  .flopcast.lock
    stages/<stage>/fingerprint.json                the resolved settings the stage was started with
    stages/<stage>/stage.json                      status + results of a finished stage
    stages/<stage>/<run>/...                       training run directories (see flopcast.train)
    stages/<stage>/eval/metrics.json, windows.csv, plots
    archive/<stage>-<time>/                        files of stages run again with ``restart``

A re-run reuses every finished stage whose settings are unchanged, continues an unfinished one,
and stops with one line if a stage on disk was run with other settings (see :mod:`flopcast.preflight`).
Nothing is written (plan.toml included) and no FLOP is spent until the whole plan has passed its checks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from . import fingerprint, preflight
from .card import write_card
from .codec import LLMTimeCodec
from .config import LoraSpec, TrainConfig, from_dict, load_toml, save_toml, to_dict
from .costs import run_cost
from .data import Dataset, load, save_h5, split
from .errors import BudgetExceeded, FlopcastError
from .flops import lora_shape
from .ledger import Ledger
from .lock import DirLock
from .models import load_model, load_tokenizer, resolve_arch
from .plan import Plan, Stage
from .report import write_report
from .results import EvalResult, RunResult, StageResult, StudyResult
from .rundir import finished_run
from .simulate import simulate


@dataclasses.dataclass
class Study:
    plan: Plan
    out: Path
    ledger: Ledger
    train: Dataset
    val: Dataset
    test: Dataset
    codec: LLMTimeCodec
    settings: dict[str, dict]
    progress: bool = True

    @property
    def eval_data(self) -> Dataset:
        """The split the plan evaluates on (``eval.split``)."""
        return getattr(self, self.plan.eval.split)

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.plan.model.name)

    @cached_property
    def val_token_ids(self) -> list[list[int]]:
        """The validation series as token ids (once per study; each run length chunks them its own way)."""
        from .chunks import series_token_ids

        return series_token_ids(self.val.series, self.codec, self.tokenizer)

    @cached_property
    def arch(self):
        return resolve_arch(self.plan.model.name)

    def head_tokens(self, t: TrainConfig) -> int | None:
        """Columns of the numeric head (the series' alphabet, as training computes them), None for the full head."""
        from .heads import numeric_token_ids

        return len(numeric_token_ids(self.tokenizer, self.plan.codec)) if t.head == "numeric" else None

    @cached_property
    def eval_windows(self) -> dict:
        """Evaluation windows and decoding grammar per context length (built once per study)."""
        from .evaluation import build_windows, window_grammar

        cfg, ds = self.plan.eval, self.eval_data
        series = ds.series[: cfg.max_series] if cfg.max_series else ds.series
        out = {}
        for S in cfg.contexts:
            wins = build_windows(series, self.codec, self.tokenizer, S, cfg)
            out[S] = (wins, window_grammar(wins, self.tokenizer, self.codec, ds.n_vars) if wins else None)
        return out


def _stage_file(study: Study, stage: str) -> Path:
    return study.out / "stages" / stage / "stage.json"


def stage_result(study: Study, stage: str) -> StageResult:
    p = _stage_file(study, stage)
    if not p.is_file():
        raise FlopcastError(f"stage {stage!r} has no results yet")
    return StageResult.from_dict(json.loads(p.read_text()))


def _stage_done(study: Study, stage: str) -> bool:
    f = _stage_file(study, stage)
    return f.is_file() and json.loads(f.read_text()).get("status") == "done"


def _open_ledger(out: Path, budget: float) -> Ledger:
    """The study's ledger; its budget stays as it is until the plan has passed its checks."""
    path = out / "ledger.db"
    return Ledger(path) if path.is_file() else Ledger(path, budget)


def _dataset(plan: Plan, out: Path) -> Dataset:
    if plan.data:
        return load(plan.data)
    path = out / "data.h5"
    if not path.is_file() or _sim_settings(path) != to_dict(plan.simulate):
        save_h5(simulate(plan.simulate), path, attrs={"simulate": json.dumps(to_dict(plan.simulate))})
    return load(path)


def _sim_settings(path: Path) -> dict | None:
    """The simulation settings a study's data.h5 was made with (None for one of an older flopcast)."""
    import h5py

    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["simulate"]) if "simulate" in f.attrs else None


def prepare(plan: Plan, out_dir: str | Path, progress: bool = True, restart: tuple[str, ...] = (),
            only: list[str] | None = None) -> Study:
    """Check the plan against the study directory, then its data, stages and budget; only then write anything."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = preflight.stage_settings(plan, preflight.data_settings(plan))
    preflight.check_fingerprints(out, settings, tuple(restart))
    preflight.archive_stages(out, tuple(restart))
    ds = _dataset(plan, out)
    sp = split(ds.n_series, plan.split)
    train, val, test = ds.subset(sp.train), ds.subset(sp.val), ds.subset(sp.test)
    study = Study(plan, out, _open_ledger(out, plan.budget), train, val, test,
                  LLMTimeCodec.fit(plan.codec, train.series),
                  settings, progress)
    todo = [st for st in plan.stages if (not only or st.name in only) and not _stage_done(study, st.name)]
    preflight.check_data(study, todo)
    study.ledger.check_budget_change(plan.budget)
    preflight.check_affordable(study, todo, plan.budget)
    if study.ledger.budget != int(plan.budget):
        study.ledger.set_budget(plan.budget)  # raising is always allowed; lowering below what is used is refused
    save_toml(plan.to_dict(), out / "plan.toml")
    (out / "split.json").write_text(sp.to_json())
    return study


def run_plan(plan: Plan, out_dir: str | Path, progress: bool = True, only: list[str] | None = None,
             restart: tuple[str, ...] = ()) -> StudyResult:
    """Execute (or continue) every stage; finished stages with unchanged settings are reused."""
    with DirLock(out_dir):  # a second process on this study stops here
        study = prepare(plan, out_dir, progress, restart, only)
        results = {}
        for stage in plan.stages:
            if only and stage.name not in only:
                continue
            fp = preflight.fingerprint_file(study.out, stage.name)
            if not fp.is_file():  # before any work: the stage is tied to these settings from now on
                fingerprint.save(fp, study.settings[stage.name])
            if _stage_done(study, stage.name):
                results[stage.name] = stage_result(study, stage.name)
                continue
            t0 = time.time()
            res = RUNNERS[stage.kind](study, stage)
            res.wall_s, res.fingerprint = time.time() - t0, fingerprint.digest(study.settings[stage.name])
            _stage_file(study, stage.name).write_text(json.dumps(res.to_dict(), indent=2))
            results[stage.name] = res
        summary = StudyResult(plan.name, plan.budget, study.ledger.summary(), results)
        (study.out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
        write_report(study.out)
    return summary


# ----------------------------------------------------------------------------- helpers

def _load(study: Study):
    return load_model(study.plan.model, seed=study.plan.seed)


def _evaluate(study: Study, stage: Stage, adapter: Path | None) -> EvalResult:
    from .adapters import load_adapter
    from .evaluation import evaluate

    lm = _load(study)
    model = load_adapter(lm.model, adapter).eval() if adapter else lm.model
    return evaluate(model, lm.tokenizer, study.codec, study.eval_data, study.plan.eval,
                    out_dir=study.out / "stages" / stage.name / "eval", ledger=study.ledger,
                    name=f"{stage.name}/{study.plan.eval.split}", model_name=study.plan.model.name,
                    progress=study.progress, fingerprint=fingerprint.digest(study.settings[stage.name]),
                    baseline_store=study.out / "baselines")


def _settings(study: Study, stage: Stage) -> tuple[TrainConfig, LoraSpec]:
    """Training and LoRA settings: plan defaults <- base stage's best <- stage's own."""
    tcfg, lora = study.plan.train, study.plan.lora
    if stage.base:
        best = stage_result(study, stage.base).best
        tcfg = replace(tcfg, lr=best.lr, seq_len=best.seq_len)
        lora = replace(lora, rank=best.rank)
    t = from_dict(TrainConfig,
                  {**to_dict(tcfg), **stage.train, **({"steps": stage.steps} if isinstance(stage.steps, int) else {})})
    return t, from_dict(LoraSpec, {**to_dict(lora), **stage.lora})


def _train_run(study: Study, stage: Stage, run_name: str, tcfg: TrainConfig, lora: LoraSpec) -> RunResult:
    from .train import train

    lm = _load(study)
    d = study.out / "stages" / stage.name / run_name
    r = train(lm.model, lm.tokenizer, study.codec, study.train.series, study.val.series, lora, tcfg, d,
              ledger=study.ledger, name=f"{stage.name}/{run_name}", model_name=study.plan.model.name,
              progress=study.progress)
    return RunResult(run_name, str(d), tcfg.lr, lora.rank, tcfg.seq_len, r.steps, r.flops, r.best_val_loss, r.status,
                     r.wall_s)


def _train_runs(study: Study, stage: Stage, widest: LoraSpec, names: list[str], runs) -> StageResult:
    """Train ``runs()`` (name, training and LoRA settings of each run) while the stage's evaluation FLOPs
    (for its ``widest`` adapter) are held aside, then evaluate the best run."""
    hold = None
    pending = any(finished_run(study.out / "stages" / stage.name / n) is None for n in names)
    if stage.evaluate and pending:  # a stage never trains what it cannot then evaluate
        hold = study.ledger.hold(f"{stage.name}/{study.plan.eval.split} (held)",
                                 preflight.eval_cost(study, lora_shape(widest)))
    try:
        done = [_train_run(study, stage, *r) for r in runs()]
    finally:
        study.ledger.drop_hold(hold)
    best = _best(stage, done)
    test = _evaluate(study, stage, Path(best.dir) / "adapter_best") if stage.evaluate else None
    if test is not None:
        write_card(Path(best.dir) / "adapter_best", best.dir, test)
    return StageResult(stage.kind, done, best, test)


def _best(stage: Stage, runs: list[RunResult]) -> RunResult:
    """The run with the lowest validation loss; diverged runs never win, and a stage of only diverged runs fails."""
    ok = [r for r in runs if r.status != "diverged"]
    if not ok:
        r = runs[-1]
        raise FlopcastError(f"stage {stage.name!r}: training diverged (loss became NaN or infinite) at step {r.steps} "
                            f"of {r.dir}; lower the learning rate (lr={r.lr:g})")
    scored = [r for r in ok if r.val_loss is not None]
    return min(scored, key=lambda r: r.val_loss) if scored else ok[-1]


# ----------------------------------------------------------------------------- stage kinds

def run_eval_stage(study: Study, stage: Stage) -> StageResult:
    adapter = None
    if stage.adapter_from:
        adapter = Path(stage_result(study, stage.adapter_from).best.dir) / "adapter_best"
    return StageResult(stage.kind, test=_evaluate(study, stage, adapter))


def _remaining_steps(study: Study, stage: Stage, tcfg: TrainConfig, lora: LoraSpec, run_dir: Path) -> TrainConfig:
    """Steps and FLOP cap of a ``steps = "remaining"`` run: what the ledger has left (its evaluation is held aside)."""
    from .checkpoint import CheckpointManager

    done = finished_run(run_dir)
    if done is not None:  # trained before an interruption: keep the steps it was given

        saved = load_toml(done.run_dir / "config.toml")["train"]
        return replace(tcfg, steps=saved["steps"], max_flops=saved.get("max_flops"))
    per = run_cost(study.arch, tcfg, lora_shape(lora), 0, study.head_tokens(tcfg)).per_step
    ckpt = CheckpointManager(run_dir)
    row = ckpt.load()[0].ledger_id if ckpt.exists() else None  # a resumed run keeps its own row's FLOPs
    mine = study.ledger.get(row).committed if row is not None else 0
    spendable = study.ledger.left() + mine
    steps = int(spendable // per)  # validation passes come out of this too: training stops at max_flops
    if steps < 1:
        raise BudgetExceeded(f"stage {stage.name!r}: no budget left for a training step "
                             f"({study.ledger.left():.3e} left, {per:.3e} per step)")
    return replace(tcfg, steps=steps, max_flops=spendable)


def run_train_stage(study: Study, stage: Stage) -> StageResult:
    tcfg, lora = _settings(study, stage)
    if stage.steps == "remaining":  # counted once the evaluation is held, so they leave it its FLOPs
        run_dir = study.out / "stages" / stage.name / "run"
        return _train_runs(study, stage, lora, ["run"],
                           lambda: [("run", _remaining_steps(study, stage, tcfg, lora, run_dir), lora)])
    return _train_runs(study, stage, lora, ["run"], lambda: [("run", tcfg, lora)])


def run_grid_stage(study: Study, stage: Stage) -> StageResult:
    tcfg, lora = _settings(study, stage)
    runs = [(f"lr={lr:g}_r={rank}", replace(tcfg, lr=lr),
             replace(lora, rank=rank)) for lr in stage.lr for rank in stage.rank]
    widest = max((lo for *_, lo in runs), key=lambda lo: lo.rank)
    return _train_runs(study, stage, widest, [r[0] for r in runs], lambda: runs)


def run_context_stage(study: Study, stage: Stage) -> StageResult:
    tcfg, lora = _settings(study, stage)
    runs = [(f"S={s}", replace(tcfg, seq_len=s), lora) for s in stage.seq_len]
    return _train_runs(study, stage, lora, [r[0] for r in runs], lambda: runs)


RUNNERS = {"eval": run_eval_stage, "train": run_train_stage, "grid": run_grid_stage, "context": run_context_stage}
