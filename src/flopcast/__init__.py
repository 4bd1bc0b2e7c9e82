"""flopcast: FLOP-budgeted LoRA fine-tuning of small LMs for numeric time-series forecasting.

The Python API (see :mod:`flopcast.api`): ``Forecaster``, ``run_study`` and ``evaluate``. They load on first
use, so ``import flopcast`` stays light (no torch).
"""

__version__ = "0.1.0"
__all__ = ["Forecaster", "__version__", "evaluate", "run_study"]
_API = ("Forecaster", "evaluate", "run_study")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'flopcast' has no attribute {name!r}")
