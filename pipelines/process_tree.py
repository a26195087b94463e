"""The processes a local run started, however deep, found and stopped together.

kfp.local runs every step as a child process, and steps start their own (worker pools, a
model server). A run that is stopped (SIGINT, SIGTERM) must leave none of them running:
they would hold the registry's or a DuckDB file's lock, publish, or promote a model after
the user was told the run stopped. On Linux the runner makes itself a child subreaper
(`adopt_orphans`), so the children of a step that died are re-parented to it, not to init,
and `stop_tree` still finds them by walking `/proc`. Elsewhere only the living tree is
found.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_PROC = Path("/proc")


def interrupt(signum: int) -> KeyboardInterrupt:
    """What a stop signal raises where the program is, as Ctrl-C does, so every `with` and
    `finally` on the way out cleans up: a KeyboardInterrupt carrying `signum`, and `detail`,
    what was stopped, filled in on the way out for the one line the CLI prints. Exactly a
    KeyboardInterrupt, not a subclass: `subprocess.Popen` stops waiting for its child (a
    kfp.local step) only on that type, and waits for the step to end on any other."""
    stop = KeyboardInterrupt(signal.Signals(signum).name)
    stop.signum = signum  # type: ignore[attr-defined]
    stop.detail = ""  # type: ignore[attr-defined]
    return stop


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (Linux), so a stopped run
    still finds the children of a step that died first."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("cannot adopt orphaned step processes: errno %d", ctypes.get_errno())


def descendants(root: int | None = None) -> set[int]:
    """The running (not zombie) processes below `root` (default: this process)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    zombies = set()
    for pid, parent, state in _processes():
        children.setdefault(parent, []).append(pid)
        if state == "Z":
            zombies.add(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found - zombies


def stop_tree(root: int | None = None, *, grace: float = 3.0) -> set[int]:
    """Stop every process below `root` (default: this process): SIGTERM first, SIGKILL for
    those still running after `grace` seconds (new ones a dying pool starts included), and
    reap those that were this process's children. Returns the processes stopped."""
    root = os.getpid() if root is None else root
    stopped: set[int] = set()
    deadline = time.monotonic() + grace
    while alive := descendants(root):
        late = time.monotonic() >= deadline
        for pid in alive if late else alive - stopped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
        stopped |= alive
        _reap(stopped)
        if late and time.monotonic() > deadline + 5.0:
            log.warning("processes %s did not stop", sorted(alive))
            break
        time.sleep(0.05)
    # A worker that ended just after the step that started it becomes ours a moment later:
    # reap for a little while, so no ended process is left for init to collect.
    settled = time.monotonic() + 1.0
    while True:
        _reap(stopped)
        if time.monotonic() > settled or not stopped & {pid for pid, _, _ in _processes()}:
            return stopped
        time.sleep(0.02)


def _reap(pids: set[int]) -> None:
    """Collect the exit status of those of `pids` that are finished children of ours."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, state) of every process, from /proc (none where there is none)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(_PROC):
            if not entry.name.isdigit():
                continue
            try:
                stat = (_PROC / entry.name / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            # "pid (command) state ppid ...": the command may itself hold ") ".
            state, parent = stat.rpartition(")")[2].split()[:2]
            found.append((int(entry.name), int(parent), state))
    return found
