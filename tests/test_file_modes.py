"""Files the service makes are private: the database holds every reader's address, message and
token, the key signs every link (issue 12, item 9). Checked on the files as an operator sees
them, made by the real commands."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.conftest import digest


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_and_a_run_leave_the_data_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual login umask; the command must not rely on it
    try:
        inst = tmp_path / "inst"
        assert digest("init", "--dir", str(inst), cwd=tmp_path).returncode == 0
    finally:
        os.umask(old)
    data = inst / "data"
    assert mode(data) == 0o700
    assert mode(data / "digest.db") == 0o600
    for key in inst.rglob("*key*"):
        assert mode(key) & 0o077 == 0, key
    for path in data.rglob("*"):
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def test_a_run_writes_nothing_readable_by_others(site: Path) -> None:
    assert digest("run", cwd=site).returncode == 0
    data = site / "data"
    assert mode(data) == 0o700
    made = list(data.rglob("*"))
    assert any(p.name == "digest.db-wal" for p in made) or any(p.name == "digest.db" for p in made)
    for path in made:
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def test_a_database_an_older_release_left_world_readable_is_tightened(site: Path) -> None:
    assert digest("run", cwd=site).returncode == 0
    db = site / "data" / "digest.db"
    db.chmod(0o644)
    assert digest("status", cwd=site).returncode == 0
    assert mode(db) == 0o600
