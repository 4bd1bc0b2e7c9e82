"""Command-line interface: a thin typer layer, one library call per command (see :mod:`flopcast.commands`).

Option defaults are the config dataclasses' own. Errors the user can fix (:class:`FlopcastError`) print one
line and exit with 2 (``FLOPCAST_DEBUG=1`` shows the traceback); any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys

from ..errors import FlopcastError
from . import data, evaluation, study  # noqa: F401  (they register their commands)
from .common import app, err


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising for user errors."""
    import os
    import signal
    import threading

    from ..signals import raise_interrupted
    from ..verbosity import ENV

    saved_env = {k: os.environ.get(k) for k in ENV}  # -q/-v set these for this run only
    main_thread = threading.current_thread() is threading.main_thread()
    own_term = main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if own_term:  # SIGTERM unwinds like Ctrl-C: ledger rows settle, training checkpoints (see train.StopRequest)
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
    while e is not None and not isinstance(e, KeyboardInterrupt):
        e = e.__cause__ or e.__context__
    return e


def _interrupted(e: KeyboardInterrupt) -> int:
    """One line and 128 + signal number (train.Interrupted carries SIGTERM: 143; Ctrl-C: 130)."""
    import signal

    signum = getattr(e, "signum", signal.SIGINT)
    err.print(f"interrupted ({signal.Signals(signum).name}); run the same command again to continue")
    return 128 + signum


def run() -> None:
    sys.exit(main())
