"""How much the CLI says: ``-q`` (results and errors only), normal, ``-v`` (library warnings and logs too).

Library noise that is not ours -- FutureWarnings and deprecation notes from transformers, PEFT, accelerate and
torch, transformers' info logs and weight-loading bars -- is filtered in normal and quiet runs; flopcast's own
progress bars (with ETA) stay, except with ``-q``; warnings are one line each. Set before the libraries are
imported (the CLI imports them lazily), through their own switches. No torch.
"""

from __future__ import annotations

import os
import sys
import warnings

QUIET, NORMAL, VERBOSE = -1, 0, 1
LIBRARIES = r"(transformers|peft|accelerate|torch|huggingface_hub|gguf)(\.|$)"
ENV = ("TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")


def set_verbosity(level: int) -> None:
    """Apply ``level`` (QUIET, NORMAL or VERBOSE) to this process and to the libraries it will import."""
    if level >= VERBOSE:
        os.environ["TRANSFORMERS_VERBOSITY"] = "info"
        return
    warnings.formatwarning = _one_line
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
    warnings.filterwarnings("ignore", category=UserWarning, module=LIBRARIES)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bars read it too
    _transformers_bars_off()
    if level <= QUIET:
        os.environ["TQDM_DISABLE"] = "1"  # every tqdm bar, ours included (tqdm >= 4.66 reads it)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"flopcast(\.|$)")


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              line: str | None = None) -> str:
    """A warning as one line, ``warning: ...``, without the source line Python shows (``-v`` keeps that)."""
    return f"warning: {message}\n"


def _transformers_bars_off() -> None:
    """transformers reads HF_HUB_DISABLE_PROGRESS_BARS when imported; if it already is, use its switch."""
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
