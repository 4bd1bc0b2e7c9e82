"""User-facing errors. The CLI prints these as one line and exits non-zero (no traceback)."""

from __future__ import annotations


class FlopcastError(Exception):
    """An error the user can fix: bad input, missing model, exhausted budget."""


class DataError(FlopcastError):
    """Malformed or invalid time-series data."""


class ModelNotAvailable(FlopcastError):
    """A model that cannot be found or loaded; the message says how to get it."""


class BudgetExceeded(FlopcastError):
    """A planned run would spend more FLOPs than the budget has left."""
