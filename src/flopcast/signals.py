"""Stopping on signals: SIGTERM (a scheduler's pre-emption, ``kill``, ``docker stop``) and Ctrl-C. No torch."""

from __future__ import annotations

import signal
import threading

from .errors import Interrupted


def raise_interrupted(signum, frame) -> None:
    """A signal handler that turns SIGTERM into :class:`Interrupted`, so clean-up code runs as for Ctrl-C."""
    raise Interrupted(signum)


class StopRequest:
    """While active, SIGTERM and Ctrl-C ask the loop to stop after the step under way; a second one
    raises :class:`Interrupted` at once. Installs handlers in the main thread only, over any but an
    ignored one (a background job's SIGINT stays ignored), and puts the previous ones back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._prev: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._prev.items():
            signal.signal(sig, handler)
        self._prev = {}
