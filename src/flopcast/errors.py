"""User-facing errors. The CLI prints these as one line and exits non-zero (no traceback)."""

from __future__ import annotations

import signal


class FlopcastError(Exception):
    """An error the user can fix: bad input, missing model, exhausted budget. Its message is one line, whatever
    it quotes (a value whose repr spans lines is folded into it)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split("\n")).replace("  ", " "))


class BadValue(FlopcastError, ValueError):
    """A value out of its range (a negative horizon, an unknown protocol)."""


class BadType(FlopcastError, TypeError):
    """A value of the wrong type (``horizon=2.5``, a number where a list is expected)."""


class DataError(FlopcastError):
    """Malformed or invalid time-series data."""


class ModelNotAvailable(FlopcastError):
    """A model that cannot be found or loaded; the message says how to get it."""


class BudgetExceeded(FlopcastError):
    """A planned run would spend more FLOPs than the budget has left."""


class SettingsChanged(FlopcastError):
    """A study or run directory holds work done with other settings than those asked for."""


class Interrupted(KeyboardInterrupt):
    """Work stopped by a signal (SIGTERM, or Ctrl-C in training); ``signum`` says which. The CLI prints one
    line and exits 128 + signum (143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

