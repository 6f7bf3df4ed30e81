"""Our own database and disk failing is one clear line and exit 1, never a traceback
(issue 12, item 8): a file that is not a database, a damaged one, one from another release,
a full disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import digest_here

DB = Path("data") / "digest.db"


def one_line(ran: object) -> str:
    stderr = ran.stderr  # type: ignore[attr-defined]
    assert ran.returncode == 1, (ran.returncode, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    return stderr.splitlines()[0]


def test_a_file_that_is_not_a_database_is_named_as_damaged(site: Path) -> None:
    (site / DB).parent.mkdir(parents=True)
    (site / DB).write_bytes(b"this is not sqlite at all " * 100)
    for command in (["status"], ["run"], ["subscribers", "list"]):
        line = one_line(digest_here(*command, cwd=site))
        assert "digest.db is damaged (file is not a database)" in line, line


def test_a_database_damaged_inside_is_named_as_damaged(site: Path) -> None:
    assert digest_here("run", cwd=site).returncode == 0
    path = site / DB
    with sqlite3.connect(path) as conn:  # fold the WAL in, so the file holds everything
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(path.read_bytes())
    page = 4096
    raw[page * 2 : page * 6] = b"\xff" * (page * 4)  # scribble over table pages
    path.write_bytes(bytes(raw))
    line = one_line(digest_here("status", cwd=site))
    assert "is damaged" in line and ("malformed" in line or "not a database" in line), line


def test_a_database_from_another_release_is_refused_in_one_line(site: Path) -> None:
    assert digest_here("run", cwd=site).returncode == 0
    with sqlite3.connect(site / DB) as conn:  # as a release older than any revision left it
        conn.execute("DROP TABLE alembic_version")
        conn.execute("ALTER TABLE delivery DROP COLUMN claim_token")
    line = one_line(digest_here("run", cwd=site))
    assert "digest.db matches no known schema" in line, line


def test_a_database_from_a_newer_release_is_refused_in_one_line(site: Path) -> None:
    assert digest_here("run", cwd=site).returncode == 0
    with sqlite3.connect(site / DB) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for command in (["status"], ["db", "upgrade"]):
        line = one_line(digest_here(*command, cwd=site))
        assert "schema revision 9999, made by a newer release of digest" in line, line


def test_a_full_disk_is_one_line_and_the_run_exits_1(site: Path) -> None:
    """The data directory on a 2 MB filesystem of its own (a mount namespace, so no root is
    needed), filled up after the ingest: the run cannot record anything."""
    (site / "data").mkdir()
    script = (
        "mount -t tmpfs -o size=2m tmpfs data && "
        f"{sys.executable} -m digest ingest >/dev/null && "
        "(dd if=/dev/zero of=data/filler bs=4k 2>/dev/null || true) && "
        f"{sys.executable} -m digest run; echo exit=$?"
    )
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("DIGEST_CONFIG", None)
    ran = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "exit=1" in ran.stdout, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    errors = [ln for ln in ran.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "the disk is full" in errors[0], ran.stderr
