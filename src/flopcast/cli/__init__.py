"""Command-line interface: a thin typer layer, one library call per command (:mod:`flopcast.api`).

Option defaults are the config dataclasses' own. Errors the user can fix (:class:`FlopcastError`) print one
line and exit with 2 (``FLOPCAST_DEBUG=1`` shows the traceback); any other exception is a bug and keeps its
traceback. Each command imports the library inside its function, so ``flopcast --help`` and a command's own start
stay free of torch and the other heavy libraries the rest of flopcast needs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from ..errors import FlopcastError, Interrupted
from . import budget, data, forecasting, study  # noqa: F401  (they register their commands)
from .common import app, err
from .verbosity import ENV


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """A signal handler that turns SIGTERM into :class:`Interrupted`, so clean-up code runs as for Ctrl-C."""
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising for user errors."""
    saved_env = {k: os.environ.get(k) for k in ENV}  # -q/-v set these for this run only
    main_thread = threading.current_thread() is threading.main_thread()
    own_term = main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if own_term:  # SIGTERM unwinds like Ctrl-C: ledger rows settle, training checkpoints (training.signals.StopRequest)
        signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        app(args=argv, prog_name="flopcast")  # standalone: usage errors print and raise SystemExit
        return 0
    except SystemExit as e:
        stop = _interrupt_behind(e)  # typer turns Ctrl-C/SIGTERM (KeyboardInterrupt) into exit 130
        if stop is not None:
            return _interrupted(stop)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except FlopcastError as e:  # a user error: one line; anything else is a bug and shows its traceback
        if os.environ.get("FLOPCAST_DEBUG"):
            raise
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e)
    finally:
        if own_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one) behind ``e``, if any."""
    cur: BaseException | None = e
    while cur is not None and not isinstance(cur, KeyboardInterrupt):
        cur = cur.__cause__ or cur.__context__
    return cur


def _interrupted(e: KeyboardInterrupt) -> int:
    """One line and 128 + signal number (:class:`Interrupted` carries SIGTERM: 143; Ctrl-C: 130)."""
    signum = getattr(e, "signum", signal.SIGINT)
    err.print(f"interrupted ({signal.Signals(signum).name}); run the same command again to continue")
    return 128 + signum


def run() -> None:
    sys.exit(main())
