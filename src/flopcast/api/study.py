"""Studies and evaluations as functions: :func:`run_study` is ``flopcast run``, :func:`evaluate` is
``flopcast eval`` and :func:`score_baselines` is ``flopcast baselines``; each returns typed results
(:mod:`flopcast.results`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..budget.ledger import Ledger
from ..checks import check_arg, stage_names
from ..config import CodecConfig, DataSpec, EvalConfig, SplitConfig, from_dict, to_dict
from ..data.dataset import Dataset, split, split_dataset
from ..encoding.codec import LLMTimeCodec
from ..errors import DataError, FlopcastError
from ..evaluation.evaluate import EvalRun
from ..evaluation.evaluate import evaluate as evaluate_model
from ..model.adapter_files import adapter_base, read_adapter_meta
from ..model.load import EMBEDDED, load_tokenizer
from ..model.lora import load_for_inference
from ..results import EvalResult, StudyResult
from ..study.plan import Plan, load_plan, plan_from_dict
from ..study.runner import run_plan
from ..study.scale_out import check_ray_address
from ..study.state import recorded_budget as _recorded_budget
from .outputs import ensure_writable
from .tools import dataset_or_simulated, fitted_codec


def run_study(plan: Plan | dict[str, Any] | str | Path, out_dir: str | Path, progress: bool = True,
              restart: tuple[str, ...] | str = (), only: list[str] | str | None = None, executor: str = "local",
              address: str | None = None) -> StudyResult:
    """Run a study plan (a TOML path, a dict, or a :class:`~flopcast.study.plan.Plan`) in ``out_dir``, resuming
    what is there: what ``flopcast run PLAN --out DIR`` does. ``restart`` and ``only`` name stages (a list, or
    one string of comma-separated names). ``executor="ray"`` trains each stage's runs in parallel on the Ray
    cluster at ``address`` ("auto": a running one; None: a local instance), under the study's one ledger
    (``flopcast run --ray``). Returns every stage's typed results."""
    check_arg("plan", plan, Plan, dict, str, os.PathLike, optional=False)
    check_arg("out_dir", out_dir, str, os.PathLike, optional=False)
    if executor not in ("local", "ray"):
        raise FlopcastError(f"executor must be 'local' or 'ray', got {executor!r}")
    check_ray_address(address)
    again, chosen = stage_names("restart", restart), stage_names("only", only) or None
    if isinstance(plan, dict):
        plan = plan_from_dict(plan)
    elif not isinstance(plan, Plan):
        plan = load_plan(plan)
    ensure_writable(out_dir, directory=True)
    return run_plan(plan, Path(out_dir), progress=progress, restart=tuple(again), only=chosen, executor=executor,
                    address=address)


def evaluate(model: str | None = None, data: DataSpec | str | Path | None = None, adapter: str | Path | None = None,
             config: EvalConfig | None = None, out_dir: str | Path | None = None,
             ledger: str | Path | None = None, budget: float | None = None, codec: CodecConfig | None = None,
             split: SplitConfig | None = None, **settings: Any) -> EvalResult:
    """Score a model (default: the adapter's base, else the embedded model; an adapter goes on its own base only)
    and the baselines on a split of ``data`` (an HDF5/CSV path or
    a :class:`~flopcast.config.DataSpec`; None simulates): what ``flopcast eval`` does. ``settings`` override
    fields of ``config`` (``contexts=(128, 512)``, ``max_series=20``, ...); ``split`` says how ``data`` is split
    (``SplitConfig(by="time", test_windows=3)``: each series' last three horizons). With ``ledger`` (``budget``
    creates it) the forecasts' FLOPs are charged to it."""
    _check_eval_args(model, data, adapter, config, out_dir, ledger)
    check_arg("split", split, SplitConfig)
    cfg = from_dict(EvalConfig, {**to_dict(config or EvalConfig()), **settings})
    ensure_writable(out_dir, directory=True)
    model = adapter_base(adapter, model) if adapter is not None else (model or EMBEDDED)
    led = Ledger(ledger, budget) if ledger else None
    ds = dataset_or_simulated(_spec(data))
    state = read_adapter_meta(adapter).get("codec") if adapter is not None else None
    enc = LLMTimeCodec.from_state(state) if state else fitted_codec(ds, codec or CodecConfig(), split, cfg.horizon)
    subset = _split(ds, cfg, split)
    lm = load_for_inference(model, adapter)
    run = EvalRun(name="eval", model_name=model if not adapter else f"{model}+{adapter}",
                  out_dir=Path(out_dir) if out_dir is not None else None, ledger=led)
    return evaluate_model(lm.model, lm.tokenizer, enc, subset, cfg, run)


def score_baselines(data: DataSpec | str | Path | None = None, config: EvalConfig | None = None,
                    out_dir: str | Path | None = None, tokenizer: str = EMBEDDED, codec: CodecConfig | None = None,
                    split: SplitConfig | None = None, **settings: Any) -> EvalResult:
    """Score only the baselines on the windows ``flopcast eval`` would use (``tokenizer``'s token counts define
    them): what ``flopcast baselines`` does. No model is loaded and no FLOP is charged."""
    _check_eval_args(tokenizer, data, None, config, out_dir, None)
    check_arg("split", split, SplitConfig)
    cfg = from_dict(EvalConfig, {**to_dict(config or EvalConfig()), **settings})
    ensure_writable(out_dir, directory=True)
    ds = dataset_or_simulated(_spec(data))
    enc, subset = fitted_codec(ds, codec or CodecConfig(), split, cfg.horizon), _split(ds, cfg, split)
    run = EvalRun(name="eval", model_name=tokenizer, out_dir=Path(out_dir) if out_dir is not None else None)
    return evaluate_model(None, load_tokenizer(tokenizer), enc, subset, cfg, run)


def _check_eval_args(model: Any, data: Any, adapter: Any, config: Any, out_dir: Any, ledger: Any) -> None:
    """The arguments' types, before anything is read or loaded (``evaluate(model=123)``: one line)."""
    check_arg("model", model, str)
    check_arg("data", data, str, os.PathLike, DataSpec)
    for name, value in (("adapter", adapter), ("out_dir", out_dir), ("ledger", ledger)):
        check_arg(name, value, str, os.PathLike)
    check_arg("config", config, EvalConfig)


def _spec(data: DataSpec | str | Path | None) -> DataSpec | None:
    return DataSpec(str(data)) if isinstance(data, (str, Path)) else data


def _split(ds: Dataset, cfg: EvalConfig, split_cfg: SplitConfig | None = None) -> Dataset:
    """The part of ``ds`` the evaluation scores (``cfg.split``); by series, an empty part is one line."""
    sc = split_cfg or SplitConfig()
    if sc.by == "time":
        if cfg.protocol == "seed":
            raise DataError("a time split scores each series' tail; it needs protocol 'aligned'")
        return split_dataset(ds, sc, cfg.horizon)[1][cfg.split]
    idx = split(ds.n_series, sc).indices(cfg.split)
    if len(idx) == 0:
        raise DataError(f"split {cfg.split!r} is empty for {ds.n_series} series: split by time to hold out each "
                        "series' tail (--split-by time)")
    return ds.subset(idx)


def recorded_budget(out_dir: str | Path) -> float | None:
    """The FLOP budget the study in ``out_dir`` last ran with (None where none has run)."""
    return _recorded_budget(Path(out_dir))
