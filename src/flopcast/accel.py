"""What the training engine does differently on an accelerator, and with several processes.

* ``train.compile``: the decoder layers under ``torch.compile`` (on for CUDA by default; :func:`compile_on`
  decides for decoding too); :func:`allow_recompiles` lets torch keep every compiled variant a study needs;
* ``train.sync_every``: how often the loop reads the loss from the device (each read waits for it);
* out of memory: the largest batch that fits, probed by halving;
* several processes: one stop decision for all of them, and the process group closed at exit.
"""

from __future__ import annotations

import gc
import signal

import torch

from .adapters import base_model
from .config import TrainConfig
from .signals import StopRequest

SYNC_EVERY_ACCELERATOR = 16
RECOMPILE_LIMIT = 64  # compiled variants torch keeps per function (its default, 8, is fewer than one study needs)


def compile_on(setting: str | None, device) -> bool:
    """A ``compile`` setting (``train.compile``, ``eval.compile``): "on", "graphs", "off", or "auto"/None = on for
    CUDA (on CPU a compiled step was not measured faster; see benchmarks/study_speed.py)."""
    return setting in ("on", "graphs") or (setting in (None, "auto") and torch.device(device).type == "cuda")


def graphs_on(setting: str | None, device) -> bool:
    """Training under CUDA graphs too (``train.compile = "graphs"``, CUDA only): a step replays recorded kernels
    instead of launching each. Decoding on CUDA always uses them when compiled."""
    return setting == "graphs" and torch.device(device).type == "cuda"


def sync_every(cfg: TrainConfig, device) -> int:
    """``train.sync_every``, or (None) 1 on the CPU, where reading a loss costs nothing, and
    :data:`SYNC_EVERY_ACCELERATOR` on an accelerator, where a read each step would stall its queue."""
    return cfg.sync_every or (1 if torch.device(device).type == "cpu" else SYNC_EVERY_ACCELERATOR)


def _body(model):
    causal = base_model(model)
    return getattr(causal, causal.base_model_prefix)


def _blocks(model) -> list:
    """The transformer's repeated blocks (its decoder layers: the classes transformers keeps whole on one device)."""
    names = set(getattr(base_model(model), "_no_split_modules", None) or ())
    return [m for m in _body(model).modules() if type(m).__name__ in names]


def allow_recompiles(limit: int = RECOMPILE_LIMIT) -> None:
    """Let torch keep at least ``limit`` compiled variants of one function (never lowers the setting).

    torch compiles a function once per input shape, LoRA shape and grad mode, and keeps them all on the function's
    code -- shared by every model instance of the architecture, for the whole process. After its default of 8 it
    stops compiling and runs every new variant eagerly (one warning). A study makes more than 8 in one process: the
    training body compiles per (sequence length, LoRA rank), twice each (training and validation), so the reference
    plan's context sweep and final run would train eagerly; decoding compiles per (context, adapter shape)."""
    import torch._dynamo

    name = recompile_setting()
    setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))


def recompile_setting() -> str:
    """The name of that limit in ``torch._dynamo.config`` (``cache_size_limit`` before torch 2.6)."""
    import torch._dynamo

    return "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def compile_body(model, graphs: bool = False) -> None:
    """``torch.compile`` the transformer in place (the head and the loss stay eager, so the numeric head and
    chunked cross-entropy work unchanged); parameter names and the saved adapter are unaffected.

    By default each decoder layer is compiled, not the whole body: the layers share their code, so one compile
    (about two graphs: the first layer, whose input needs no gradient, and the rest) serves all of them. A
    study compiles once per (sequence length, LoRA rank, grad mode); a layer compiles about 5x faster than the
    body (Qwen2.5-0.5B architecture on a CPU: 13-15 s against 64-74 s; benchmarks/RESULTS.md). ``graphs``: the
    whole body, recorded as CUDA graphs ("reduce-overhead"); each training step marks its start for them."""
    allow_recompiles()
    blocks = [] if graphs else _blocks(model)
    for m in blocks or [_body(model)]:
        m.compile(dynamic=False, **({"mode": "reduce-overhead"} if graphs else {}))


def uncompile_body(model) -> None:
    """Undo :func:`compile_body`: the base model goes back to whoever shares it (an evaluation decodes with
    other shapes, and compiles its own step) as it came."""
    for m in [_body(model), *_blocks(model)]:
        m._compiled_call_impl = None


def largest_batch(loss_fn, batch: dict, zero_grad) -> tuple[int, list[int]]:
    """The largest leading slice of ``batch`` (halving from half of it) whose forward and backward fit in memory,
    0 if none, and every size probed (each is work done). ``zero_grad`` clears gradients before each probe."""
    probed, b = [], batch["input_ids"].shape[0] // 2
    while b >= 1:
        zero_grad()
        free_device_memory()
        probed.append(b)
        try:
            loss_fn({k: v[:b] for k, v in batch.items()}).backward()
            return b, probed
        except torch.OutOfMemoryError:
            b //= 2
    return 0, probed


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def stop_requested(stop: StopRequest, acc, collective: bool = True) -> bool:
    """True when a signal arrived in any process. With several processes they agree by an all-reduce, held only
    where ``collective`` (every ``sync_every`` steps, the same steps in every process)."""
    if acc.num_processes == 1:
        return stop.signum is not None
    if not collective:
        return False
    flag = acc.reduce(torch.tensor([0.0 if stop.signum is None else float(stop.signum)], device=acc.device),
                      reduction="sum")
    if stop.signum is None and float(flag) > 0:
        stop.signum = signal.SIGTERM  # another process got the signal
    return float(flag) > 0


def destroy_process_group() -> None:
    """At exit under ``accelerate launch``: destroy the process group before the interpreter does
    ("terminate called without an active exception" otherwise). Later ``train`` calls in the same
    process keep the group until then."""
    from accelerate import PartialState

    PartialState().destroy_process_group()
