"""How a training run stops on a signal: SIGTERM (a scheduler's pre-emption, ``kill``, ``docker stop``) or Ctrl-C.

While :class:`StopRequest` is active the first signal asks the loop to stop after the step under way (which it
then checkpoints); a second one raises :class:`~flopcast.errors.Interrupted` at once. With several processes
(``accelerate launch``) :func:`stop_requested` makes them agree, so every process stops at the same step, and
:func:`close_process_group_at_exit` closes their process group before the interpreter does.
"""

from __future__ import annotations

import atexit
import signal
import threading
from types import FrameType
from typing import Any

import torch
from accelerate import PartialState

from ..errors import Interrupted


class StopRequest:
    """Installs handlers for SIGTERM and SIGINT in the main thread only, over any but an ignored one (a background
    job's SIGINT stays ignored), and puts the previous ones back on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._prev: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._prev.items():
            signal.signal(sig, handler)
        self._prev = {}


def stop_requested(stop: StopRequest, acc: Any, collective: bool = True) -> bool:
    """True when a signal arrived in any process. With several processes they agree by an all-reduce (a host
    sync), held only where ``collective`` (every ``sync_every`` steps, the same steps in every process)."""
    if acc.num_processes == 1:
        return stop.signum is not None
    if not collective:
        return False
    flag = acc.reduce(torch.tensor([0.0 if stop.signum is None else float(stop.signum)], device=acc.device),
                      reduction="sum")
    if stop.signum is None and float(flag) > 0:
        stop.signum = signal.SIGTERM  # another process got the signal
    return float(flag) > 0


def _destroy_process_group() -> None:
    PartialState().destroy_process_group()


def close_process_group_at_exit() -> None:
    """Under ``accelerate launch``: destroy the process group at exit, once, before the interpreter would (a gloo
    group left to interpreter shutdown aborts with "terminate called without an active exception")."""
    atexit.unregister(_destroy_process_group)
    atexit.register(_destroy_process_group)
