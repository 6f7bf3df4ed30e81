"""One backfill at a time per site: two would each keep 3 s between their own requests, and so
ask arXiv about twice as often as its terms allow (and fetch the same pages).

The lock is an flock on a file in data_dir: the kernel drops it when its process ends, however
it ends (kill -9, a crash), so a stale lock cannot block the next backfill. The file holds the
holder's pid, for the line the second backfill prints; it is never deleted (deleting a file
another process is about to lock would let two processes hold "the" lock at once).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "backfill.lock"


class Busy(Exception):
    """Another process holds the lock; ``pid`` is the one it wrote (None if unreadable)."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"held by pid {pid}")
        self.pid = pid


@contextmanager
def backfill_lock(data_dir: Path) -> Iterator[None]:
    """Hold the site's backfill lock for the block; `Busy` at once if another process has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(_pid(os.pread(fd, 32, 0))) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _pid(raw: bytes) -> int | None:
    try:
        return int(raw.decode().strip())
    except ValueError:  # written at this moment, or not by us
        return None
