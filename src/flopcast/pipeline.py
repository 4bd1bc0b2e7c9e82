"""Run a study plan: every stage inside one ledger budget, resumable after a kill.

``out_dir`` layout::

    plan.toml  data.h5 (when simulated)  split.json  ledger.db  summary.json  report.md
    stages/<stage>/stage.json                      status + results of a finished stage
    stages/<stage>/<run>/...                       training run directories (see flopcast.train)
    stages/<stage>/eval/metrics.json, windows.csv, plots
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import replace
from pathlib import Path

from .codec import LLMTimeCodec
from .config import TrainConfig, from_dict, save_toml, to_dict
from .data import Dataset, load, save_h5, split
from .errors import BudgetExceeded, FlopcastError
from .ledger import Ledger
from .plan import Plan, Stage


@dataclasses.dataclass
class Study:
    plan: Plan
    out: Path
    ledger: Ledger
    ds: Dataset
    train: Dataset
    val: Dataset
    test: Dataset
    codec: LLMTimeCodec
    progress: bool = True


def _stage_file(study: Study, stage: str) -> Path:
    return study.out / "stages" / stage / "stage.json"


def stage_result(study: Study, stage: str) -> dict:
    p = _stage_file(study, stage)
    if not p.is_file():
        raise FlopcastError(f"stage {stage!r} has no results yet")
    return json.loads(p.read_text())


def prepare(plan: Plan, out_dir: str | Path, progress: bool = True) -> Study:
    """Data, split, codec and ledger of a study (re-used as they are when resuming)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_toml(plan.to_dict(), out / "plan.toml")
    if plan.data:
        ds = load(plan.data)
    else:
        path = out / "data.h5"
        if not path.is_file():
            from .simulate import simulate

            save_h5(simulate(plan.simulate), path)
        ds = load(path)
    sp = split(ds.n_series, plan.split)
    (out / "split.json").write_text(sp.to_json())
    train, val, test = ds.subset(sp.train), ds.subset(sp.val), ds.subset(sp.test)
    codec = LLMTimeCodec.fit(plan.codec, train.series)
    return Study(plan, out, Ledger(out / "ledger.db", plan.budget), ds, train, val, test, codec, progress)


def run_plan(plan: Plan, out_dir: str | Path, progress: bool = True, only: list[str] | None = None) -> dict:
    """Execute (or continue) every stage; finished stages are skipped."""
    study = prepare(plan, out_dir, progress)
    results = {}
    for stage in plan.stages:
        if only and stage.name not in only:
            continue
        f = _stage_file(study, stage.name)
        if f.is_file() and json.loads(f.read_text()).get("status") == "done":
            results[stage.name] = json.loads(f.read_text())
            continue
        t0 = time.time()
        res = RUNNERS[stage.kind](study, stage)
        res.update({"status": "done", "kind": stage.kind, "wall_s": time.time() - t0})
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(res, indent=2))
        results[stage.name] = res
    summary = {"plan": plan.name, "budget": plan.budget, "ledger": study.ledger.summary(), "stages": results}
    (study.out / "summary.json").write_text(json.dumps(summary, indent=2))
    from .report import write_report

    write_report(study.out)
    return summary


# ----------------------------------------------------------------------------- helpers

def _load(study: Study):
    from .models import load_model

    return load_model(study.plan.model, seed=study.plan.seed)


def _evaluate(study: Study, name: str, adapter: Path | None, directory: Path) -> dict:
    from .evaluate import evaluate
    from .models import load_adapter

    lm = _load(study)
    model = load_adapter(lm.model, adapter).eval() if adapter else lm.model
    return evaluate(model, lm.tokenizer, study.codec, study.test, study.plan.eval, out_dir=directory,
                    ledger=study.ledger, name=f"{name}/test", model_name=study.plan.model.name, progress=study.progress)


def _settings(study: Study, stage: Stage) -> tuple[TrainConfig, dict]:
    """TrainConfig and LoRA overrides: plan defaults <- base stage's best <- stage's own."""
    tcfg = to_dict(study.plan.train)
    lora = to_dict(study.plan.lora)
    if stage.base:
        best = stage_result(study, stage.base)["best"]
        tcfg.update({k: best[k] for k in ("lr", "seq_len") if k in best})
        if "rank" in best:
            lora["rank"] = best["rank"]
    tcfg.update(stage.train)
    lora.update(stage.lora)
    if stage.steps is not None and stage.steps != "remaining":
        tcfg["steps"] = stage.steps
    tcfg.setdefault("seed", study.plan.seed)
    return from_dict(TrainConfig, tcfg), lora


def _eval_reserve(study: Study, lora: dict) -> int:
    """The FLOPs a test evaluation reserves (kept aside when spending the remaining budget)."""
    from .config import LoraSpec
    from .evaluate import build_windows, eval_flops_bound
    from .flops import lora_shape
    from .models import load_tokenizer, resolve_arch

    name = study.plan.model.name
    arch = resolve_arch(name)
    tok = load_tokenizer(name)
    cfg = study.plan.eval
    series = study.test.series[: cfg.max_series] if cfg.max_series else study.test.series
    shape = lora_shape(from_dict(LoraSpec, lora))
    return sum(eval_flops_bound(arch, len(build_windows(series, study.codec, tok, S, cfg)), S, cfg,
                                study.test.n_vars, study.codec, shape) for S in cfg.contexts)


def _train_run(study: Study, stage: Stage, run_name: str, tcfg: TrainConfig, lora: dict) -> dict:
    from .config import LoraSpec
    from .train import train

    lm = _load(study)
    spec = from_dict(LoraSpec, lora)
    d = study.out / "stages" / stage.name / run_name
    r = train(lm.model, lm.tokenizer, study.codec, study.train.series, study.val.series, spec, tcfg, d,
              ledger=study.ledger, name=f"{stage.name}/{run_name}", model_name=study.plan.model.name,
              progress=study.progress)
    return {"run": run_name, "dir": str(d), "lr": tcfg.lr, "rank": spec.rank, "seq_len": tcfg.seq_len,
            "steps": r.steps, "flops": r.flops, "val_loss": r.best_val_loss, "status": r.status, "wall_s": r.wall_s}


def _finish(study: Study, stage: Stage, runs: list[dict]) -> dict:
    scored = [r for r in runs if r["val_loss"] is not None]
    best = min(scored, key=lambda r: r["val_loss"]) if scored else runs[-1]
    res = {"runs": runs, "best": best}
    if stage.evaluate:
        res["test"] = _evaluate(study, stage.name, Path(best["dir"]) / "adapter_best", study.out / "stages" / stage.name / "eval")
    return res


# ----------------------------------------------------------------------------- stage kinds

def run_eval_stage(study: Study, stage: Stage) -> dict:
    adapter = None
    if stage.adapter_from:
        adapter = Path(stage_result(study, stage.adapter_from)["best"]["dir"]) / "adapter_best"
    return {"test": _evaluate(study, stage.name, adapter, study.out / "stages" / stage.name / "eval")}


def run_train_stage(study: Study, stage: Stage) -> dict:
    from .train import finished_run

    tcfg, lora = _settings(study, stage)
    done = finished_run(study.out / "stages" / stage.name / "run") if stage.steps == "remaining" else None
    if done is not None:  # trained before an interruption: keep the steps it was given
        from .config import load_toml

        saved = load_toml(done.run_dir / "config.toml")["train"]
        tcfg = replace(tcfg, steps=saved["steps"], max_flops=saved.get("max_flops"))
    elif stage.steps == "remaining":
        from . import flops as F
        from .config import LoraSpec
        from .models import resolve_arch

        arch = resolve_arch(study.plan.model.name)
        if tcfg.head == "numeric":  # training computes logits for the series' characters only (heads.py)
            from .grammar import LLMTimeGrammar

            arch = replace(arch, vocab=len(LLMTimeGrammar(study.plan.codec, study.test.n_vars).alphabet))
        per = F.train_step(arch, tcfg.batch_size, tcfg.seq_len, F.lora_shape(from_dict(LoraSpec, lora))).total
        prev = study.ledger.resume(f"{stage.name}/run")
        spendable = study.ledger.left() + (prev.committed if prev else 0) - (_eval_reserve(study, lora) if stage.evaluate else 0)
        steps = int(spendable // per)  # validation passes come out of this too: training stops at max_flops
        if steps < 1:
            raise BudgetExceeded(f"stage {stage.name!r}: no budget left for a training step "
                                 f"({study.ledger.left():.3e} left, {per:.3e} per step)")
        tcfg = replace(tcfg, steps=steps, max_flops=spendable)
    return _finish(study, stage, [_train_run(study, stage, "run", tcfg, lora)])


def run_grid_stage(study: Study, stage: Stage) -> dict:
    tcfg, lora = _settings(study, stage)
    runs = []
    for lr in stage.lr:
        for rank in stage.rank:
            runs.append(_train_run(study, stage, f"lr={lr:g}_r={rank}", replace(tcfg, lr=lr), {**lora, "rank": rank}))
    return _finish(study, stage, runs)


def run_context_stage(study: Study, stage: Stage) -> dict:
    tcfg, lora = _settings(study, stage)
    runs = [_train_run(study, stage, f"S={s}", replace(tcfg, seq_len=s), lora) for s in stage.seq_len]
    return _finish(study, stage, runs)


RUNNERS = {"eval": run_eval_stage, "train": run_train_stage, "grid": run_grid_stage, "context": run_context_stage}
