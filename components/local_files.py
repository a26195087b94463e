"""Files on this machine that several runs share: written whole, and locked while one run
changes what they guard (the registry, an export directory)."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


class LockTimeout(Exception):
    """Another run held the lock for longer than the wait allowed; `holder` says who."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextmanager
def exclusive_lock(
    path: Path,
    *,
    timeout: float,
    on_wait: Callable[[str], None] | None = None,
    announce: bool = False,
) -> Iterator[None]:
    """Hold an OS lock on the file `path` (created when missing), released when the block
    ends or this process does, however it ends. Waits up to `timeout` seconds for a run
    that holds it, calling `on_wait(holder)` once when it has to wait; then raises
    `LockTimeout`. With `announce`, the holder writes its pid into the file, so a waiting
    run can say who it waits for. OSError when the file cannot be opened."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(handle, 64, 0).decode(errors="replace") or "another run"
                if time.monotonic() >= deadline:
                    raise LockTimeout(holder) from None
                if not waited and on_wait is not None:
                    on_wait(holder)
                waited = True
                time.sleep(0.05)
        if announce:
            with suppress(OSError):  # for a waiting run's message only
                os.ftruncate(handle, 0)
                os.pwrite(handle, f"another run (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(handle)


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never part
    of one, and the new one survives a crash: a temporary file beside it, flushed to disk,
    renamed over it. On a failed write (a full disk) the old file stays and no temporary
    file is left."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
