"""Our own database and disk failing, told in one line an operator can act on.

The driver's messages ("file is not a database", "database or disk is full") are accurate but
arrive as tracebacks from deep inside SQLAlchemy; here each known kind becomes a StoreError
naming the database and what to do.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from digest.errors import StoreError

# (words in the driver's message, what it means, what to do)
_KNOWN = (
    (
        ("file is not a database", "disk image is malformed", "malformed database schema"),
        "is damaged",
        "restore it from a backup (`sqlite3 FILE .recover` may rescue its rows), or move it "
        "aside and run `digest init` for a new one",
    ),
    (
        ("database or disk is full", "no space left", "diskfull", "disk full"),
        "cannot be written: the disk is full",
        "free space on that disk; nothing was recorded half-way",
    ),
    (
        ("readonly database", "read-only", "permission denied", "unable to open database file"),
        "cannot be opened for writing",
        "check that the directory and file exist and belong to the user running digest",
    ),
    (
        ("no such column", "has no column named", "no such table", "does not exist"),
        "was made by another version of digest",
        "keep the release that made it, or move it aside for a new one; upgrades that migrate "
        "a database come with `digest db upgrade`",
    ),
    (
        ("could not connect", "connection refused", "connection to server"),
        "cannot be reached",
        "check [database] url in digest.toml and that the server is up",
    ),
)


def explain(exc: BaseException, where: str) -> StoreError:
    """A one-line StoreError for a database or disk failure (the original is chained)."""
    text = str(getattr(exc, "orig", None) or exc)
    lowered = text.lower()
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
        "disk i/o error" in lowered and _nearly_full(where)
    ):
        # SQLite reports a full disk as an I/O error when the WAL index cannot grow.
        lowered = "disk full"
    for words, meaning, hint in _KNOWN:
        if any(w in lowered for w in words):
            return StoreError(f"the database {where} {meaning} ({first_line(text)})", hint)
    return StoreError(f"database error in {where}: {first_line(text)}")


def _nearly_full(where: str) -> bool:
    """Whether the filesystem of an SQLite database (``where`` is its URL) has under 1 MB free."""
    if not where.startswith("sqlite:///"):
        return False
    try:
        return shutil.disk_usage(Path(where[len("sqlite:///") :]).parent).free < 1 << 20
    except OSError:
        return False


def first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= 200 else line[:199] + "…"
