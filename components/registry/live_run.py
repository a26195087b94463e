"""Whether the local run a step belongs to is still running.

A local run's steps are processes of their own: one the runner failed to stop (or whose
runner was killed outright) would go on to register and promote a model after the user
was told the run stopped. So the runner holds an OS lock on a file named in
`LIVE_RUN_VARIABLE` for as long as the run is live, and promotion, under the registry's
lock, first checks that lock is still held (`require_live`): a lock the kernel released
(the runner died) or a file the runner removed (it was stopped) means the run is over.
Steps started elsewhere (on Vertex, by tests calling a stage) carry no such variable.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import RegistryError

LIVE_RUN_VARIABLE = "CHURN_LIVE_RUN"


@contextmanager
def live_run(path: Path) -> Iterator[None]:
    """Mark the run of this process live for the steps it starts (they inherit the
    variable) until the block ends or `end_run` is called; the file is removed on exit."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by steps
    previous = os.environ.get(LIVE_RUN_VARIABLE)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.environ[LIVE_RUN_VARIABLE] = str(path)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)
        if previous is None:
            os.environ.pop(LIVE_RUN_VARIABLE, None)
        else:
            os.environ[LIVE_RUN_VARIABLE] = previous


def end_run() -> None:
    """The run is stopping: from now on its steps may not promote (called before its
    processes are stopped, so one that outlives the stop is refused too)."""
    path = os.environ.get(LIVE_RUN_VARIABLE)
    if path:
        Path(path).unlink(missing_ok=True)


def require_live(doing: str) -> None:
    """Refuse to `doing` (e.g. "promote model v7") when this process is a step of a local
    run that is no longer running."""
    path = os.environ.get(LIVE_RUN_VARIABLE)
    if not path:
        return
    refusal = RegistryError(
        f"the local run this step belongs to has stopped: refusing to {doing} (run marker "
        f"{path}); re-run training"
    )
    try:
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise refusal from None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # the runner holds it: the run is live
    finally:
        os.close(handle)
    raise refusal
