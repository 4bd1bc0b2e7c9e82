"""flopcast's Python API, on the conventions of the tools forecasting users know: PEFT's and litgpt's
``from_pretrained``/``load``, Chronos-2's ``predict_df`` on long DataFrames.

    from flopcast import Forecaster, run_study, evaluate

    fc = Forecaster.from_pretrained("runs/quickstart/stages/train/run/adapter_best")  # the adapter names its base
    df = fc.predict(long_df, horizon=5, samples=20, id_column="id", timestamp_column="timestamp")
    study = run_study("plans/quickstart.toml", "runs/quickstart")      # flopcast run, as a function
    scores = evaluate("smollm2-135m", data="lv.h5", contexts=(128,))   # flopcast eval, as a function

Forecasts use the CLI's batched, grammar-constrained decoder; with a ledger, their FLOPs are reserved before and
charged batch by batch, as the CLI does (``flopcast forecast`` is a thin layer over :class:`Forecaster`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .adapters import ADAPTER_META, read_adapter_meta
from .codec import LLMTimeCodec
from .config import CodecConfig, EvalConfig, ForecastConfig, ModelSpec, check_ints, from_dict, to_dict
from .errors import FlopcastError
from .frames import series_from, to_frame
from .ledger import Ledger
from .models import EMBEDDED
from .results import EvalResult, StudyResult


class Forecaster:
    """A base model (plus an optional LoRA adapter) and the codec it reads and writes numbers with."""

    def __init__(self, model, tokenizer, model_name: str, codec: LLMTimeCodec | None = None,
                 adapter: str | Path | None = None, ledger: Ledger | None = None):
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.codec = codec or LLMTimeCodec(CodecConfig(scale_mode="per_series"))
        self.adapter = Path(adapter) if adapter else None
        self.ledger = ledger

    @classmethod
    def from_pretrained(cls, model_or_adapter: str | Path = EMBEDDED, adapter: str | Path | None = None,
                        device: str = "auto", dtype: str = "auto", ledger: str | Path | Ledger | None = None,
                        budget: float | None = None) -> "Forecaster":
        """A model name (built-in, local directory, Hub id), optionally with ``adapter``; or an adapter directory
        alone, whose metadata names the base model and the codec it was trained with. With ``ledger`` (a path or
        a :class:`Ledger`; ``budget`` creates one) every forecast's FLOPs are charged to it."""
        from .models import load_for_inference

        name = str(model_or_adapter)
        if adapter is None and (Path(name) / ADAPTER_META).is_file():
            adapter, name = Path(name), read_adapter_meta(name).get("base_model") or ""
            if not name:
                raise FlopcastError(f"{adapter}: its metadata names no base model; pass it: "
                                    f"Forecaster.from_pretrained(BASE_MODEL, adapter={str(adapter)!r})")
        lm = load_for_inference(ModelSpec(name=name, device=device, dtype=dtype), adapter)
        state = read_adapter_meta(adapter).get("codec") if adapter else None
        if isinstance(ledger, (str, Path)):
            ledger = Ledger(ledger, budget)
        return cls(lm.model, lm.tokenizer, name, LLMTimeCodec.from_state(state) if state else None, adapter, ledger)

    def forecast(self, series: list[np.ndarray], horizon: int = 5, samples: int = 1,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), context_tokens: int | None = None, seed: int = 0,
                 batch_size: int = 16, temperature: float = 1.0, name: str = "forecast", progress: bool = False):
        """Forecast ``horizon`` steps after each ``(T_i, V)`` array; a :class:`~flopcast.forecast.ForecastResult`
        (original units; ``contexts`` holds what each series was cut to by ``context_tokens``)."""
        from .costs import charge_batches
        from .evaluation import forecast_reservation
        from .forecast import forecast_prompts
        from .grammar import LLMTimeGrammar, int_digits_for

        fcfg = ForecastConfig(horizon=horizon, batch_size=batch_size, n_samples=samples, temperature=temperature,
                              quantiles=tuple(quantiles), seed=seed)  # bad numbers stop here, before any work
        if context_tokens is not None:
            check_ints("context_tokens", [context_tokens])
        contexts = [fit_context(np.asarray(s, float), self.codec, self.tokenizer, context_tokens) for s in series]
        alphas = np.array([self.codec.series_alpha(c) for c in contexts])
        texts = [self.codec.encode(c, a) for c, a in zip(contexts, alphas)]
        prompts = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        n_vars = contexts[0].shape[1]
        grammar = LLMTimeGrammar(self.codec.config, n_vars, int_digits_for(texts, self.codec.config))
        fcfg = replace(fcfg, max_int_digits=grammar.max_int)
        longest = max(map(len, prompts))
        with forecast_reservation(self.ledger, self.model, name, "forecast", len(prompts) * samples, longest, horizon,
                                  grammar, model=self.model_name) as charge:
            res = forecast_prompts(self.model, self.tokenizer, self.codec, prompts, alphas, n_vars, fcfg,
                                   [""] * len(prompts), progress=progress, on_batch=charge_batches(charge, self.model))
        res.contexts = contexts
        return res

    def predict(self, data, horizon: int = 5, samples: int = 1, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
                context_tokens: int | None = None, *, id_column: str = "id", timestamp_column: str = "timestamp",
                target_columns: list[str] | None = None, seed: int = 0, batch_size: int = 16):
        """Forecast ``data`` -- an array (T, V), a list of arrays, or a long DataFrame (``id_column``,
        ``timestamp_column``, one column per variable) -- and return a DataFrame: id, timestamp, the point forecast
        per variable (greedy; the median of ``samples`` > 1) and, when sampled, ``<variable>_q<level>`` per quantile."""
        batch = series_from(data, id_column, timestamp_column, target_columns)
        res = self.forecast(batch.values, horizon, samples, quantiles, context_tokens, seed, batch_size)
        return to_frame(batch, res.point, res.quantiles)

    def __repr__(self) -> str:
        return f"Forecaster({self.model_name!r}, adapter={str(self.adapter) if self.adapter else None!r})"


def fit_context(s: np.ndarray, codec: LLMTimeCodec, tokenizer, max_tokens: int | None) -> np.ndarray:
    """The longest suffix of whole steps whose encoding fits in ``max_tokens`` tokens (all of ``s`` for None)."""
    if max_tokens is None:
        return s
    lo, hi = 1, len(s)
    while lo < hi:  # binary search on the number of steps
        mid = (lo + hi + 1) // 2
        if len(tokenizer(codec.encode(s[-mid:]), add_special_tokens=False).input_ids) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return s[-lo:]


def run_study(plan, out_dir: str | Path, progress: bool = True, restart: tuple[str, ...] = (),
              only: list[str] | None = None) -> StudyResult:
    """Run a study plan (a TOML path, a dict, or a :class:`~flopcast.plan.Plan`) in ``out_dir``, resuming what is
    there: what ``flopcast run PLAN --out DIR`` does. Returns every stage's typed results."""
    from .pipeline import run_plan
    from .plan import Plan, load_plan, plan_from_dict

    if isinstance(plan, dict):
        plan = plan_from_dict(plan)
    elif not isinstance(plan, Plan):
        plan = load_plan(plan)
    return run_plan(plan, Path(out_dir), progress=progress, restart=tuple(restart), only=only)


def evaluate(model: str = EMBEDDED, data=None, adapter: str | Path | None = None, config: EvalConfig | None = None,
             out_dir: str | Path | None = None, ledger: str | Path | None = None, budget: float | None = None,
             codec: CodecConfig | None = None, **settings) -> EvalResult:
    """Score a model (optionally with an adapter) and the baselines on a split of ``data`` (an HDF5/CSV path or
    a :class:`~flopcast.config.DataSpec`; None simulates): what ``flopcast eval`` does. ``settings`` override
    fields of ``config`` (``contexts=(128, 512)``, ``max_series=20``, ...). Returns the typed scores."""
    from .commands import run_eval
    from .config import DataSpec

    cfg = from_dict(EvalConfig, {**to_dict(config or EvalConfig()), **settings})
    spec = DataSpec(str(data)) if isinstance(data, (str, Path)) else data
    return run_eval(model, spec, cfg, out_dir, adapter, codec, ledger, budget)
