"""Command-line interface: a thin typer layer, one library call per command (:mod:`flopcast.api`).

Option defaults are the config dataclasses' own. Errors the user can fix (:class:`FlopcastError`) print one
line and exit with 2 (``FLOPCAST_DEBUG=1`` shows the traceback); any other exception is a bug and keeps its
traceback. Each command imports the library inside its function, so ``flopcast --help`` and a command's own start
stay free of torch and the other heavy libraries the rest of flopcast needs.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import warnings
from types import FrameType

from ..errors import FlopcastError, Interrupted
from . import budget, data, forecasting, study  # noqa: F401  (they register their commands)
from .common import Stopped, app, err
from .verbosity import ENV

# a full disk, a read-only or forbidden place, a path that cannot exist: the user's to fix, one line naming the file
PLACE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOENT,
                errno.ENOTDIR, errno.EISDIR)


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """A signal handler that turns SIGTERM into :class:`Interrupted`, so clean-up code runs as for Ctrl-C."""
    raise Interrupted(signum)


def optional_value(args: list[str], option: str, default: str) -> list[str]:
    """``args`` with ``default`` after ``option`` where it has no value of its own (``--ray`` alone, at the end or
    before another option): ``--ray [ADDRESS]``."""
    out = [str(a) for a in args]
    for i, a in enumerate(out):
        if a == option and (i + 1 == len(out) or out[i + 1].startswith("-")):
            return out[:i + 1] + [default] + out[i + 1:]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising for user errors."""
    saved_env = {k: os.environ.get(k) for k in ENV}  # -q/-v set these for this run only
    saved_format = warnings.formatwarning
    main_thread = threading.current_thread() is threading.main_thread()
    own_term = main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if own_term:  # SIGTERM unwinds like Ctrl-C: ledger rows settle, training checkpoints (training.signals.StopRequest)
        signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        rc = app(args=optional_value(sys.argv[1:] if argv is None else argv, "--ray", "local"), prog_name="flopcast",
                 standalone_mode=False)  # usage errors come here, raised
        return rc if isinstance(rc, int) else 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Stopped as e:
        return _interrupted(e.interrupt)
    except FlopcastError as e:  # a user error: one line; anything else is a bug and shows its traceback
        if os.environ.get("FLOPCAST_DEBUG"):
            raise
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except OSError as e:  # where a file cannot be written or found (PLACE_ERRORS); any other OSError is a bug
        if e.errno not in PLACE_ERRORS or os.environ.get("FLOPCAST_DEBUG"):
            raise
        name = str(e.filename or "a file")
        err.print(f"error: {name[:80] + '...' if len(name) > 80 else name}: {e.strerror}; free disk space or use "
                  "another path, then run the same command again (finished work is kept)", markup=False,
                  highlight=False, soft_wrap=True)
        return 2
    except Exception as e:  # typer's and click's own: a usage error, or Abort (Ctrl-C/SIGTERM)
        if not type(e).__module__.startswith(("click", "typer")):
            raise
        stop = _interrupt_behind(e)
        if stop is not None:
            return _interrupted(stop)
        return _usage_error(e)
    except KeyboardInterrupt as e:
        return _interrupted(e)
    finally:
        warnings.formatwarning = saved_format
        if own_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _usage_error(e: Exception) -> int:
    """A mistyped command, option or value: one line naming the command's help, like every user error (the bare
    ``flopcast`` or ``flopcast data``: their help). Returns the exit code (2)."""
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    if type(e).__name__ == "NoArgsIsHelpError":  # typer has printed the help already
        return 2
    ctx = getattr(e, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    err.print(f"error: {message}{where}", markup=False, highlight=False, soft_wrap=True)
    return int(getattr(e, "exit_code", 2))


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
