"""What a study checks before it spends a FLOP: settings fingerprints, data, and whether the plan is affordable.

* Every stage's resolved settings (model, data hash, split, codec, LoRA, training, evaluation, seed,
  and the stages it builds on) are fingerprinted. A stage already started with other settings stops
  the study with one line naming the keys that differ; ``--restart STAGE`` archives its files instead.
* The evaluation windows exist at some context length, and there is training data.
* The minimum cost of every unfinished stage (its planned runs, or one step for ``steps = "remaining"``,
  plus the bound of its evaluation) fits in what the budget has left.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import fingerprint
from .chunks import make_chunks
from .config import LoraSpec, TrainConfig, result_settings, to_dict
from .costs import eval_bound, run_cost, stage_cost, val_chunks_used
from .errors import BudgetExceeded, DataError, FlopcastError, SettingsChanged
from .flops import lora_shape
from .plan import Plan, Stage

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import Study


def data_settings(plan: Plan) -> dict:
    """What identifies a study's data: the file's hash (and CSV columns), or the simulation settings."""
    if plan.data is None:
        return {"simulate": to_dict(plan.simulate)}
    p = Path(plan.data.path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    return {"sha256": fingerprint.file_sha256(p), **{k: v for k, v in to_dict(plan.data).items() if k != "path"}}


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
                s[f"after_{dep}"] = fingerprint.digest(out[dep])
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
        old = fingerprint.load(fingerprint_file(out, name))
        if name not in restart and old is not None and (diff := fingerprint.differences(old, new)):
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


# ----------------------------------------------------------------------------- costs of stages

def eval_cost(study: "Study", lora=None) -> int:
    """Bound of one stage's evaluation over every context length (what it reserves before it starts)."""
    cfg = study.plan.eval
    return sum(eval_bound(study.arch, len(wins), S, cfg.horizon, grammar, lora)
               for S, (wins, grammar) in study.eval_windows.items() if wins)


def _val_chunks(study: "Study", t: TrainConfig) -> int:
    if not study.val_token_ids:
        return 0
    tok = study.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return val_chunks_used(len(make_chunks(study.val_token_ids, t.seq_len, pad, t.stride)), t)


def stage_candidates(study: "Study", stage: Stage) -> list[tuple[TrainConfig, LoraSpec]]:
    """The runs a stage can make; a stage built on ``base`` gets each of the base's candidate settings."""
    plan = study.plan
    starts = [(plan.train, plan.lora)]
    if stage.base:
        starts = [(replace(plan.train, lr=t.lr, seq_len=t.seq_len), replace(plan.lora, rank=lo.rank))
                  for t, lo in stage_candidates(study, plan.stage(stage.base))]
    return [c for t, lo in starts for c in stage.candidates(t, lo)]


def stage_min_cost(study: "Study", stage: Stage) -> int:
    """The least a stage can cost: its runs as planned (one step for ``remaining``) and its evaluation's bound."""
    ev = eval_cost(study) if stage.kind == "eval" or stage.evaluate else 0
    runs = [run_cost(study.arch, t, lora_shape(lo), _val_chunks(study, t), study.head_tokens(t))
            for t, lo in stage_candidates(study, stage)]
    return stage_cost(runs, ev, remaining=stage.steps == "remaining", one_of=stage.base is not None)


def check_affordable(study: "Study", stages: list[Stage], budget: float) -> None:
    """Refuse, with the numbers, a plan whose unfinished stages cannot all fit in what ``budget`` leaves."""
    ledger = study.ledger
    left = int(budget) - (ledger.budget - ledger.left())
    needs = {st.name: max(0, stage_min_cost(study, st) - ledger.committed_under(st.name + "/")) for st in stages}
    total = sum(needs.values())
    if total > left:
        parts = ", ".join(f"{n} {v:.3e}" for n, v in needs.items() if v)
        raise BudgetExceeded(f"plan {study.plan.name!r} needs at least {total:.3e} FLOPs to finish ({parts}) but only "
                             f"{max(left, 0):.3e} of its {budget:.3e} budget are left; raise the plan's budget")


def check_data(study: "Study", stages: list[Stage]) -> None:
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
