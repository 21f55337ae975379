"""How an Airlock process ends: its exit status, the one line it says, and the way out.

    ExitError                 a mistake or a refusal, said in one line, with its status
     ├── StartupError         the policy, a tool module or a key does not load (USAGE)
     └── TemporalUnreachable  no Temporal server answers at the address (UNREACHABLE)

The CLI's own `CommandError` (airlock/cli.py) is an `ExitError` too. Every entry point (the `airlock`
commands, `airlock worker`, `airlock dev`, `python worker.py`) prints `airlock: <message>` on
stderr for an `ExitError` and leaves with `exit_process`; docs/cli.md has the table.
"""

from __future__ import annotations

import os
import sys
from enum import IntEnum
from typing import NoReturn


class ExitStatus(IntEnum):
    OK = 0
    # The operation ran and said no: a policy check found errors, a vote or a switch was refused,
    # a replay is not deterministic, an undo did not complete.
    REFUSED = 1
    # Bad usage or unknown input: an unknown run, workspace or person, a missing file, a policy
    # or tool module that does not load, a port already taken.
    USAGE = 2
    # No Temporal server (or control plane) answers at the configured address.
    UNREACHABLE = 3
    # Ctrl-C (SIGINT) stopped a command before it finished: 128 + SIGINT, as shells report it.
    INTERRUPTED = 130


class ExitError(Exception):
    """A failure to report in one line, with its exit status."""

    status: ExitStatus = ExitStatus.REFUSED

    def __init__(self, message: str, status: ExitStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class StartupError(ExitError):
    """What a worker needs before it takes a task (its policy, tool modules, keys) does not load."""

    status = ExitStatus.USAGE


class TemporalUnreachable(ExitError):
    """No Temporal server answers at the address."""

    status = ExitStatus.UNREACHABLE


def say(error: ExitError) -> int:
    """Prints the error's one line as a person reads it, and returns its status."""
    # The one place outside the applications that writes to the terminal: what a person reads.
    sys.stderr.write(f"airlock: {error}\n")
    sys.stderr.flush()
    return int(error.status)


def exit_process(status: int) -> NoReturn:
    """Leaves the process with `status`, after flushing telemetry and the standard streams, without
    finalizing the interpreter.

    Temporal's native (Rust) runtime completes its futures on threads of its own, which take the
    GIL to hand each result back, and nothing in the SDK joins them. When the last one (a worker's
    shutdown, a connect given up on) finishes as the interpreter finalizes, CPython aborts with
    "Fatal Python error: PyGILState_Release" and status 134, after the process had done its work:
    `python worker.py` stopped by SIGINT did so in about one run in four here. Nothing is left to
    run at this point (the worker has drained, the event loop is closed), so the finalization is
    skipped rather than raced."""
    from runtime.tracing import flush_telemetry

    try:
        flush_telemetry()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can reach it
                pass
        os._exit(status)
