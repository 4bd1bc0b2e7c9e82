"""``torch.compile`` for training and decoding: whether to compile, what, and keeping every compiled variant.

* :func:`compile_on` -- the ``compile`` setting of ``[train]`` and ``[eval]``: "on", "graphs", "off", or
  "auto" (None) = on for CUDA, off on the CPU, where a compiled step is not faster once its compile is counted;
* :func:`compile_body` -- the decoder layers (one compile serves them all, since they share their code), or with
  ``graphs`` the whole body recorded as CUDA graphs; :func:`uncompile_body` gives the model back as it came;
* :func:`allow_recompiles` -- torch keeps 8 compiled variants per function by default, fewer than a study needs;
  :func:`compiled_graphs` counts what has been compiled.
"""

from __future__ import annotations

from typing import Any

import torch
import torch._dynamo

from .load import release_memory
from .parts import body, decoder_layers

RECOMPILE_LIMIT = 64  # compiled variants torch keeps per function (its default, 8, is fewer than one study needs)


def compile_on(setting: str | None, device: Any) -> bool:
    """Whether a ``compile`` setting ("on", "graphs", "off", or "auto"/None) compiles on ``device``."""
    return setting in ("on", "graphs") or (setting in (None, "auto") and torch.device(device).type == "cuda")


def graphs_on(setting: str | None, device: Any) -> bool:
    """Training under CUDA graphs too (``train.compile = "graphs"``, CUDA only): a step replays recorded kernels
    instead of launching each. Decoding on CUDA always uses them when compiled."""
    return setting == "graphs" and torch.device(device).type == "cuda"


def recompile_setting() -> str:
    """The name of torch's limit on compiled variants in ``torch._dynamo.config`` (``cache_size_limit`` before
    torch 2.6)."""
    return "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def allow_recompiles(limit: int = RECOMPILE_LIMIT) -> None:
    """Let torch keep at least ``limit`` compiled variants of one function (never lowers the setting).

    torch compiles a function once per input shape, LoRA shape and grad mode, and keeps them all on the function's
    code -- shared by every model instance of the architecture, for the whole process. After its limit it stops
    compiling and runs every new variant eagerly. A study makes more than 8 in one process: training compiles per
    (sequence length, LoRA rank), twice each (training and validation); decoding per (context, adapter shape)."""
    name = recompile_setting()
    setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))


def compiled_graphs() -> int:
    """Graphs torch has compiled in this process so far (its own count), for benchmarks and checks."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compile_body(model: Any, graphs: bool = False) -> None:
    """``torch.compile`` the transformer in place (the head and the loss stay eager, so the numeric head and
    chunked cross-entropy work unchanged); parameter names and the saved adapter are unaffected.

    By default each decoder layer is compiled, not the whole body: the layers share their code, so one compile
    (about two graphs: the first layer, whose input needs no gradient, and the rest) serves all of them, about 5x
    faster to compile than the whole body. ``graphs``: the whole body, recorded as CUDA graphs
    ("reduce-overhead"); each training step marks its start for them."""
    allow_recompiles()
    blocks = [] if graphs else decoder_layers(model)
    for m in blocks or [body(model)]:
        m.compile(dynamic=False, **({"mode": "reduce-overhead"} if graphs else {}))


def uncompile_body(model: Any) -> None:
    """Undo :func:`compile_body`: the base model goes back to whoever shares it (an evaluation decodes with
    other shapes, and compiles its own step) as it came, and the memory its CUDA graphs held is given back."""
    for m in [body(model), *decoder_layers(model)]:
        m._compiled_call_impl = None
    release_memory()
