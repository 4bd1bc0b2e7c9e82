"""flopcast: FLOP-budgeted LoRA fine-tuning of small LMs for numeric time-series forecasting.

The Python API: ``Forecaster`` (:mod:`flopcast.api.forecaster`), ``run_study`` and ``evaluate``
(:mod:`flopcast.api.study`). They are imported on first use, so ``import flopcast`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Forecaster", "__version__", "evaluate", "run_study"]
_API = {"Forecaster": "flopcast.api.forecaster", "evaluate": "flopcast.api.study", "run_study": "flopcast.api.study"}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'flopcast' has no attribute {name!r}")
