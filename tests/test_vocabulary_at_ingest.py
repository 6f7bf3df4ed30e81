"""The vocabulary is fitted when papers arrive, not inside the run or send slot that reads it:
`digest ingest` (a real process) and serve's fetch leave it on disk, and the run after them
uses that file as it is."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from digest.config import load_config
from digest.rank.features import Vocabulary
from digest.service import context
from digest.service.context import prepare, refresh_vocabulary
from digest.service.serve import Service
from digest.store import Store
from tests.conftest import SmtpServer, digest, digest_here


def _vocabulary(site: Path) -> Path:
    return site / "data" / "models" / "vocabulary.npz"


def test_ingest_fits_the_vocabulary_and_the_run_after_it_reads_that_file(
    site: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingested = digest("ingest", cwd=site)
    assert ingested.returncode == 0, ingested.stderr
    path = _vocabulary(site)
    assert path.is_file() and oct(path.stat().st_mode & 0o777) == "0o600"
    fitted = path.stat().st_mtime_ns
    # The run's own window (corpus and the profiles' example papers) is the one fitted: its
    # context takes the file as it is.
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    ctx = prepare(cfg, store, datetime.now(UTC))
    stored = Vocabulary.load(path)
    assert stored is not None and ctx.ranker.vocab.version == stored.version
    assert path.stat().st_mtime_ns == fitted
    store.dispose()
    # An ingest that stores nothing new does not even look. (The fit runs in a forked child:
    # the stand-in leaves a file where the test can see it.)
    looked = site / "looked"
    monkeypatch.setattr(context, "refresh_vocabulary", lambda *a: looked.touch())
    again = digest_here("ingest", cwd=site)
    assert again.returncode == 0 and not looked.exists()
    ran = digest("run", "--no-ingest", cwd=site)
    assert ran.returncode == 0, ran.stderr
    assert len(smtp_server.received) == 2
    assert path.stat().st_mtime_ns == fitted  # read, not fitted again


def test_a_fit_waits_for_one_under_way_in_another_process_and_reads_what_it_stored(
    site: Path,
) -> None:
    assert digest("ingest", cwd=site).returncode == 0
    path = _vocabulary(site)
    fitted = path.stat().st_mtime_ns
    path.unlink()  # as if the window had moved: the next fit must run
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    # Another process (a cron `digest ingest`) holds the fit's lock while it fits.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.readline()\n",
            str(path.with_suffix(".lock")),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "held"
    done: list[None] = []
    waiting = threading.Thread(
        target=lambda: done.append(refresh_vocabulary(cfg, store, datetime.now(UTC).date()))
    )
    waiting.start()
    waiting.join(1.0)
    assert waiting.is_alive() and not path.exists()  # waits; does not fit beside it
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(10)
    waiting.join(60)
    assert done and path.is_file() and path.stat().st_mtime_ns != fitted
    store.dispose()


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        # The fit is the most memory an ingest asks for; a machine out of it (stood in for
        # here: no test can run one out safely).
        (MemoryError("cannot allocate 180 MB"), "MemoryError: cannot allocate 180 MB"),
        # A database another process holds, whose error carries the whole statement.
        (
            OperationalError(
                "SELECT paper.id FROM paper WHERE paper.id IN (" + "?, " * 900 + "?)",
                {},
                sqlite3.OperationalError("database is locked"),
            ),
            "database is locked",
        ),
    ],
)
def test_a_vocabulary_that_cannot_be_fitted_leaves_the_ingest_done_with_one_line(
    site: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception, said: str
) -> None:
    # Nothing of the ingest is lost, and the exit status a cron job sees is the ingest's own.
    def failing(*_: object) -> None:
        raise failure

    monkeypatch.setattr(context, "refresh_vocabulary", failing)
    out = digest_here("ingest", cwd=site)
    assert out.returncode == 0, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("the vocabulary was not fitted now (") and said in line
    assert line.endswith("); the next run fits it") and "SELECT" not in line
    assert "arxiv" in out.stdout and "24" in out.stdout  # the table of what was stored
    assert not _vocabulary(site).exists()


def test_a_fit_killed_for_memory_leaves_the_ingest_done_with_exit_0_and_one_line(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the kernel's OOM killer does to a process that asks for too much: no exception,
    # no clean-up. The fit runs in a child, so the ingest outlives it.
    def oom_killed(*_: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(context, "refresh_vocabulary", oom_killed)
    out = digest_here("ingest", cwd=site)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [
        "the vocabulary was not fitted now (the fit was killed by signal 9, most likely out of "
        "memory); the next run fits it"
    ]
    assert "arxiv" in out.stdout and "24" in out.stdout


def test_a_fit_that_hangs_is_stopped_and_the_ingest_ends(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "FIT_TIMEOUT", 1)
    monkeypatch.setattr(context, "refresh_vocabulary", lambda *_: time.sleep(60))
    started = time.monotonic()
    out = digest_here("ingest", cwd=site)
    assert out.returncode == 0 and time.monotonic() - started < 30
    assert out.stderr.strip().splitlines() == [
        "the vocabulary was not fitted now (the fit took over 1 s and was stopped); "
        "the next run fits it"
    ]


def test_a_vocabulary_that_cannot_be_kept_is_said_once_by_a_real_ingest(site: Path) -> None:
    # data/models is a file: neither the lock nor the vocabulary can be written there. The
    # fit's child says so through the log and the ingest ends as usual.
    (site / "data").mkdir(exist_ok=True)
    (site / "data" / "models").write_text("not a directory\n")
    out = digest("ingest", cwd=site)
    assert out.returncode == 0, out.stderr
    assert "cannot keep the vocabulary" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.fixture
def service(site: Path) -> Iterator[Service]:
    """`digest serve`'s service on the site, not started: its jobs are called directly."""
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    store.upgrade()
    yield Service(cfg, store)
    store.dispose()


def test_serve_fits_the_vocabulary_after_a_fetch_that_stored_papers(
    site: Path, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = context.refresh_vocabulary
    calls: list[object] = []
    monkeypatch.setattr(context, "refresh_vocabulary", lambda *a: calls.append(a) or real(*a))
    service.ingest("arxiv")
    assert len(calls) == 1 and _vocabulary(site).is_file()
    service.ingest("arxiv")  # the same listing again: nothing new, no fit
    assert len(calls) == 1


def test_fetches_that_finish_during_a_fit_share_one_more_fit_after_it(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[object] = []

    def slow_fit(*args: object) -> None:
        calls.append(args)
        started.set()
        release.wait(10)

    monkeypatch.setattr(context, "refresh_vocabulary", slow_fit)
    first = threading.Thread(target=service.refit)
    first.start()
    assert started.wait(5)
    # Three more fetches store papers while it fits: each returns at once.
    others = [threading.Thread(target=service.refit) for _ in range(3)]
    for t in others:
        t.start()
    for t in others:
        t.join(5)
        assert not t.is_alive()
    release.set()
    first.join(10)
    assert len(calls) == 2  # the one under way, then one for all three


FIT_STOPPED = """
import signal, sys, time
from datetime import date
from pathlib import Path
from digest.config import load_config
from digest.service import context
from digest.store import Store

def interrupt(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, interrupt)  # as a backfill has it during its fit
context.refresh_vocabulary = lambda *_: time.sleep(60)
cfg = load_config(Path("digest.toml"))
print("fitting", flush=True)
try:
    context.refresh_apart(cfg, Store(cfg.database_url), date.today())
except KeyboardInterrupt:
    print("interrupted while fitting", file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_fit_stopped_by_ctrl_c_or_sigterm_to_the_whole_group_prints_no_traceback(
    site: Path, sent: signal.Signals
) -> None:
    # Ctrl-C reaches every process of the group: the forked fit printed a traceback of its
    # own under the parent's one line.
    run = subprocess.Popen(
        [sys.executable, "-c", FIT_STOPPED],
        cwd=site,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert run.stdout is not None and run.stdout.readline() == "fitting\n"
    time.sleep(1.0)  # the child is in its fit
    os.killpg(run.pid, sent)
    _, err = run.communicate(timeout=60)

    assert run.returncode == 2, err
    assert err.strip().splitlines() == ["interrupted while fitting"]
