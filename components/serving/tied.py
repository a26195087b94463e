"""Run a Python module as a child process that ends when the process that started it does.

    python -m components.serving.tied PARENT_PID MODULE [ARGS...]

runs `python -m MODULE ARGS...` in this process, and a watcher thread ends it once
PARENT_PID is no longer its parent: `submit.py serve` (or a test) may be stopped by a
signal it cannot catch (SIGKILL), or die, and its model server must not stay behind,
listening on the port. The parent is looked at every `_POLL_SECONDS`; an orphan gets
SIGTERM (the server shuts down as it would on Ctrl-C), then exits outright if it has not
within `_GRACE_SECONDS`. Portable, unlike Linux's PR_SET_PDEATHSIG, which also fires when
the thread that started the child ends, not the process.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

_POLL_SECONDS = 0.2
_GRACE_SECONDS = 3.0


def tied_command(module: str, *args: str) -> list[str]:
    """The command that runs `python -m module args...` tied to this process."""
    return [sys.executable, "-m", __name__, str(os.getpid()), module, *args]


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_GRACE_SECONDS)
    os._exit(1)


def main(argv: list[str]) -> None:
    parent, module, *args = argv
    threading.Thread(target=_watch, args=(int(parent),), daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
