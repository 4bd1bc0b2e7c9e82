"""Typed, validated configuration dataclasses and their TOML (de)serialisation.

Every config validates itself in ``__post_init__`` and raises :class:`FlopcastError` with a one-line message.
``to_dict``/``from_dict`` round-trip through plain TOML-able data."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from .checks import check_types, finite, require, shown, type_problems
from .errors import BadType, FlopcastError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

SCALE_MODES = ("global", "per_series", "none")


@dataclass(frozen=True)
class CodecConfig:
    """LLMTime text encoding.

    ``x_text = round((x - beta) / alpha, decimals)``, a ``-`` before negative values. ``alpha`` is chosen so the
    ``percentile``-th percentile of ``|x - beta|`` maps to ``target`` (reference study: 99.7 -> 10), for each
    variable on its own (``per_variable``; the reference pooled them); ``beta`` is 0, or with ``offset`` LLMTime's
    ``min - 0.3 (max - min)``. Fitted on the training split (``global``), on each context (``per_series``), or
    the identity (``none``); see :mod:`flopcast.encoding.scaling`.
    """

    decimals: int = 2
    scale_mode: str = "global"
    percentile: float = 99.7
    target: float = 10.0
    per_variable: bool = True
    offset: bool = False
    drop_decimal_point: bool = False
    var_sep: str = ","
    step_sep: str = ";"

    def __post_init__(self) -> None:
        check_types(self)
        require(0 <= self.decimals <= 8, f"decimals must be in [0, 8], got {self.decimals}")
        require(self.scale_mode in SCALE_MODES, f"scale_mode must be one of {SCALE_MODES}, got {self.scale_mode!r}")
        require(finite(self.percentile) and 0 < self.percentile <= 100,
               f"percentile must be in (0, 100], got {self.percentile}")
        require(finite(self.target) and self.target > 0, f"target must be a finite number > 0, got {self.target}")
        for name in ("var_sep", "step_sep"):
            sep = getattr(self, name)
            require(len(sep) == 1 and not sep.isdigit() and sep not in ".-",
                   f"{name} must be one non-digit character other than '.' and '-', got {sep!r}")
        require(self.var_sep != self.step_sep, "var_sep and step_sep must differ")


# How series are written without an adapter (``flopcast forecast``, ``Forecaster``); chosen by measurement, see
# benchmarks/RESULTS.md (zero-shot MASE relative to seasonal naive 2.02 with the offset, 2.28 without)
ZERO_SHOT_CODEC = CodecConfig(scale_mode="per_series", offset=True)


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapter settings (PEFT). ``train_lm_head_bias`` adds a trainable bias to the LM head
    as in the reference study."""

    rank: int = 8
    alpha: float | str = 16.0          # or "rank": alpha = rank, LoRA scaling 1 (as the reference's code)
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    train_lm_head_bias: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        object.__setattr__(self, "targets", tuple(self.targets))
        require(self.rank >= 1, f"LoRA rank must be >= 1, got {self.rank}")
        require(self.alpha == "rank" or (not isinstance(self.alpha, str) and finite(self.alpha) and self.alpha > 0),
               f"LoRA alpha must be a finite number > 0 or \"rank\" (alpha = rank), got {self.alpha!r}")
        require(finite(self.dropout) and 0 <= self.dropout < 1, f"LoRA dropout must be in [0, 1), got {self.dropout}")
        require(len(self.targets) > 0, "LoRA needs at least one target module")

    @property
    def lora_alpha(self) -> float:
        """The alpha PEFT gets."""
        return float(self.rank if self.alpha == "rank" else self.alpha)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: a Hugging Face id, a local directory, ``smollm2-135m`` (embedded,
    offline) or ``tiny-qwen2`` / ``tiny-llama`` (random init, for tests)."""

    name: str = "smollm2-135m"
    dtype: str = "auto"  # auto -> float32 on CPU, bfloat16 on CUDA
    device: str = "auto"
    revision: str | None = None

    def __post_init__(self) -> None:
        check_types(self)
        require(bool(self.name), "model name must not be empty")
        require(self.dtype in ("auto", "float32", "bfloat16", "float16"),
               f"dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
                f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")


FILLS = ("linear", "ffill")


@dataclass(frozen=True)
class DataSpec:
    """A data file. For a CSV, ``id_column`` splits rows into series, ``time_column`` gives their time and
    ``value_columns`` are the variables; ``None`` recognises them by name (see :mod:`flopcast.data.frames`),
    ``""`` means none. ``fill`` (``linear`` or ``ffill``) fills missing values, which are refused without it."""

    path: str
    id_column: str | None = None
    time_column: str | None = None
    value_columns: tuple[str, ...] | None = None
    fill: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if isinstance(self.value_columns, list):
            object.__setattr__(self, "value_columns", tuple(self.value_columns))
        check_types(self)
        require(bool(self.path), "data path must not be empty")
        require(self.fill is None or self.fill in FILLS, f"fill must be one of {FILLS}, got {self.fill!r}")
        require(self.value_columns is None or len(self.value_columns) > 0, "value_columns must name a column")


MAX_T_END, MAX_SIM_VALUES = 1e4, 10**8


@dataclass(frozen=True)
class SimConfig:
    """Damped Lotka-Volterra simulation (prey with logistic growth)."""

    n_systems: int = 1000
    n_steps: int = 100
    t_end: float = 200.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        require(self.n_systems >= 1, f"n_systems must be >= 1, got {self.n_systems}")
        require(self.n_steps >= 2, f"n_steps must be >= 2, got {self.n_steps}")
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        require(finite(self.t_end) and 0 < self.t_end <= MAX_T_END,
                f"t_end must be in (0, {MAX_T_END:g}], got {self.t_end}")  # the damped systems are at rest long before
        require(self.n_systems * self.n_steps <= MAX_SIM_VALUES,
                f"n_systems x n_steps must be <= {MAX_SIM_VALUES:.0e} (simulated in memory), got "
                f"{self.n_systems} x {self.n_steps}")


@dataclass(frozen=True)
class SplitConfig:
    """``by = "series"``: a seeded split of whole series by the shares ``train``/``val``/``test``. ``by = "time"``:
    every series in every part, cut in time: its last ``test_windows`` horizons are tested (one origin every horizon
    steps), the horizon before them validates, training sees what comes before (works with one series)."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    by: str = "series"
    test_windows: int = 1

    def __post_init__(self) -> None:
        check_types(self)
        require(self.by in ("series", "time"), f"split by must be 'series' or 'time', got {self.by!r}")
        require(self.test_windows >= 1, f"test_windows must be >= 1, got {self.test_windows}")
        parts = (self.train, self.val, self.test)
        require(all(finite(p) and p >= 0 for p in parts), f"split fractions must be finite and >= 0, got {parts}")
        require(abs(sum(parts) - 1.0) < 1e-6, f"split fractions must sum to 1, got {sum(parts):.6g}")
        require(self.seed >= 0, f"split seed must be >= 0, got {self.seed}")


COMPILE = ("auto", "on", "off", "graphs")  # "graphs": compiled, with CUDA graphs on CUDA


def _check_batch(batch_size: object, what: str = "batch_size") -> None:
    ok = batch_size == "auto" or (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1)
    require(ok, f"{what} must be >= 1 or \"auto\" (from free GPU memory), got {batch_size!r}")


def _check_compile(setting: object) -> None:
    require(setting is None or setting in COMPILE, f"compile must be one of {COMPILE}, got {setting!r}")


@dataclass(frozen=True)
class ForecastConfig:
    """Forecasting: ``horizon`` steps, greedy unless ``n_samples > 1`` (then median + quantiles). Samples are drawn
    from the softmax at ``temperature`` over the characters the grammar allows, restricted to the smallest set whose
    probability reaches ``top_p`` (nucleus sampling; 1: all of them)."""

    horizon: int = 5
    batch_size: int | str = 16         # or "auto": as many rows as fit in a GPU's free memory (16 on CPU)
    n_samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    max_int_digits: int | None = None  # None: derived from the prompts (see grammar.int_digits_for)
    seed: int = 0
    compile: str | None = None         # compiled decode step: "on", "off", "auto" (= None: on for CUDA)

    def __post_init__(self) -> None:
        check_types(self)
        object.__setattr__(self, "quantiles", tuple(self.quantiles))
        require(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        _check_batch(self.batch_size)
        _check_compile(self.compile)
        require(self.n_samples >= 1, f"n_samples must be >= 1, got {self.n_samples}")
        require(finite(self.temperature) and self.temperature > 0,
               f"temperature must be a finite number > 0, got {self.temperature}")
        require(finite(self.top_p) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        require(all(finite(q) and 0 < q < 1 for q in self.quantiles),
               f"quantiles must be in (0, 1), got {self.quantiles}")
        require(self.max_int_digits is None or self.max_int_digits >= 1, "max_int_digits must be >= 1")
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.n_samples == 1


PROTOCOLS = ("aligned", "seed")
BASELINES = ("persistence", "linear", "lv_ode")  # the default; statsforecast's classical methods on request
CLASSICAL_BASELINES = ("seasonal_naive", "auto_ets", "auto_arima", "theta")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation windows and scoring.

    ``seed`` reproduces the reference study: windows of exactly ``S`` tokens of each whole tokenized series every
    ``window_stride_tokens`` tokens, the next ``horizon`` steps scored. ``aligned`` (default): contexts of whole
    steps (as many as fit in ``S`` tokens) before cut points every ``stride`` steps from ``min_context_steps``, or a
    time split's origins. Forecasts are greedy, or the median of ``samples`` at ``temperature`` within ``top_p``.
    """

    protocol: str = "aligned"
    contexts: tuple[int, ...] = (128, 512, 768)
    horizon: int = 5
    stride: int = 10
    min_context_steps: int = 10
    window_stride_tokens: int = 256
    split: str = "test"
    max_series: int | None = None
    baselines: tuple[str, ...] = BASELINES
    batch_size: int | str = 16         # windows decoded together; "auto": from a GPU's free memory (16 on CPU)
    season: int | None = None          # MASE's seasonal period (None: from the timestamps' frequency, else 1)
    samples: int = 1                   # > 1: sampled forecasts at temperature / top_p, scored by their median
    temperature: float = 1.0
    top_p: float = 1.0
    n_boot: int = 1000
    seed: int = 0
    compile: str | None = None         # compiled decode step: "on", "off", "auto" (= None: on for CUDA)

    def __post_init__(self) -> None:
        check_types(self)
        object.__setattr__(self, "contexts", tuple(int(c) for c in self.contexts))
        object.__setattr__(self, "baselines", tuple(self.baselines))
        require(self.protocol in PROTOCOLS, f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        require(len(self.contexts) > 0 and all(c >= 8 for c in self.contexts),
               f"context lengths must be >= 8 tokens, got {self.contexts}")
        require(self.horizon >= 1 and self.stride >= 1 and self.min_context_steps >= 1,
               "horizon, stride and min_context_steps must be >= 1")
        require(self.window_stride_tokens >= 1, "window_stride_tokens must be >= 1")
        require(self.split in ("train", "val", "test"), f"split must be train, val or test, got {self.split!r}")
        require(self.max_series is None or self.max_series >= 1, f"max_series must be >= 1, got {self.max_series}")
        _check_batch(self.batch_size, "eval batch_size")
        _check_compile(self.compile)
        ForecastConfig(horizon=self.horizon, n_samples=self.samples, temperature=self.temperature, top_p=self.top_p)
        require(self.season is None or self.season >= 1, f"season must be >= 1, got {self.season}")
        require(self.n_boot >= 0 and self.seed >= 0, f"n_boot and seed must be >= 0, got {self.n_boot}, {self.seed}")
        unknown = set(self.baselines) - set(BASELINES + CLASSICAL_BASELINES)
        require(not unknown, f"unknown baseline(s) {sorted(unknown)} ({', '.join(BASELINES + CLASSICAL_BASELINES)})")


SCHEDULES = ("constant", "cosine", "linear")
HEADS = ("full", "numeric")
NOT_FINGERPRINTED = ("wandb", "checkpoint_every", "compile", "sync_every", "processes")  # change no result


@dataclass(frozen=True)
class TrainConfig:
    """One LoRA training run. ``max_flops`` caps the run's own FLOPs (training + validation)."""

    steps: int = 100
    batch_size: int = 4
    seq_len: int = 512
    stride: int | None = None          # chunk stride in tokens (default: seq_len - 1)
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: float = 1.0
    eval_every: int = 50
    val_batches: int = 4
    checkpoint_every: int = 50
    max_flops: float | None = None
    seed: int = 0
    head: str = "full"                 # "numeric": train the LM head's softmax over the series' tokens only
    wandb: bool = True                 # log to wandb when installed (offline unless logged in)
    compile: str | None = None         # torch.compile: "on", "off", "auto" (None: on CUDA), "graphs" (CUDA graphs)
    sync_every: int | None = None      # steps between reads of the loss from the device (None: 1 on CPU, 16 on GPU)
    processes: int = 1                 # > 1: the run on that many processes/devices (accelerate launch)

    def __post_init__(self) -> None:
        check_types(self)
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.seq_len >= 8, f"seq_len must be >= 8, got {self.seq_len}")
        require(self.stride is None or 1 <= self.stride <= self.seq_len,
               f"stride must be in [1, seq_len], got {self.stride}")
        require(finite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr}")
        require(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        require(self.warmup_steps >= 0 and finite(self.grad_clip) and self.grad_clip >= 0
               and finite(self.weight_decay) and self.weight_decay >= 0,
               f"warmup_steps, grad_clip and weight_decay must be finite and >= 0, got {self.warmup_steps}, "
               f"{self.grad_clip}, {self.weight_decay}")
        require(self.eval_every >= 1 and self.checkpoint_every >= 1 and self.val_batches >= 0,
               "eval_every and checkpoint_every must be >= 1")
        require(self.max_flops is None or (finite(self.max_flops) and self.max_flops > 0),
               f"max_flops must be a finite number > 0, got {self.max_flops}")
        require(self.head in HEADS, f"head must be one of {HEADS}, got {self.head!r}")
        _check_compile(self.compile)
        require((self.sync_every is None or self.sync_every >= 1) and self.processes >= 1,
                f"sync_every and processes must be >= 1, got {self.sync_every}, {self.processes}")
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")


# ----------------------------------------------------------------------------- serialisation

def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as TOML-able data (tuples become lists, None values are dropped)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is None:
            continue
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def result_settings(cfg: Any) -> dict[str, Any]:
    """:func:`to_dict` without the settings that change no result (:data:`NOT_FINGERPRINTED`): what a
    fingerprint or a cache key of a training or evaluation config holds."""
    return {k: v for k, v in to_dict(cfg).items() if k not in NOT_FINGERPRINTED}


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys and mistyped values with a clear message."""
    if not isinstance(data, dict):
        raise BadType(f"{cls.__name__} must be a table of settings, got {shown(data)}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    require(not unknown, f"unknown key(s) for {cls.__name__}: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    required = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    require(not missing, f"{cls.__name__} needs {', '.join(missing)}")
    bad = type_problems(cls, data)
    require(not bad, f"{cls.__name__}: {'; '.join(bad)}")
    try:
        return cls(**data)
    except TypeError as e:
        raise FlopcastError(f"bad {cls.__name__}: {e}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FlopcastError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FlopcastError(f"{p}: not a text file (a plan or config is TOML text, UTF-8)") from None
    except tomllib.TOMLDecodeError as e:
        raise FlopcastError(f"{p}: invalid TOML: {e}") from None


def save_toml(data: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(tomli_w.dumps(data))

