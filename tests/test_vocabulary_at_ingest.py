"""The vocabulary is fitted when papers arrive, not inside the run or send slot that reads it:
`digest ingest` (a real process) and serve's fetch leave it on disk, and the run after them
uses that file as it is."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.config import load_config
from digest.rank.features import Vocabulary, corpus_version
from digest.service import context
from digest.service.context import corpus_of, refresh_vocabulary
from digest.service.serve import Service
from digest.store import Store
from tests.conftest import SmtpServer, digest, digest_here


def _vocabulary(site: Path) -> Path:
    return site / "data" / "models" / "vocabulary.npz"


def test_ingest_fits_the_vocabulary_and_the_run_after_it_reads_that_file(
    site: Path, smtp_server: SmtpServer
) -> None:
    ingested = digest("ingest", cwd=site)
    assert ingested.returncode == 0, ingested.stderr
    path = _vocabulary(site)
    assert path.is_file() and oct(path.stat().st_mode & 0o777) == "0o600"
    fitted = path.stat().st_mtime_ns
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    vocab = Vocabulary.load(path)
    assert vocab is not None
    # The window the run will rank against, and the demo profiles' example papers with it.
    window = [e.id for e in corpus_of(cfg, store, datetime.now(UTC).date())]
    assert set(window) <= set(vocab.ids) and vocab.version == corpus_version(vocab.ids)
    store.dispose()
    again = digest("ingest", cwd=site)  # nothing new: nothing fitted
    assert again.returncode == 0 and path.stat().st_mtime_ns == fitted
    ran = digest("run", "--no-ingest", cwd=site)
    assert ran.returncode == 0, ran.stderr
    assert len(smtp_server.received) == 2
    assert path.stat().st_mtime_ns == fitted  # read, not fitted again


def test_a_vocabulary_that_cannot_be_fitted_leaves_the_ingest_done_with_one_line(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fit is the most memory an ingest asks for; a machine out of it (stood in for here:
    # no test can run one out safely) loses none of the stored papers, and the exit status a
    # cron job sees is the ingest's own.
    def out_of_memory(*_: object) -> None:
        raise MemoryError("cannot allocate 180 MB")

    monkeypatch.setattr(context, "refresh_vocabulary", out_of_memory)
    out = digest_here("ingest", cwd=site)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines() == [
        "the vocabulary was not fitted now (MemoryError: cannot allocate 180 MB); "
        "the next run fits it"
    ]
    assert "arxiv" in out.stdout and "24" in out.stdout  # the table of what was stored
    assert not _vocabulary(site).exists()


def test_serve_fits_the_vocabulary_after_a_fetch_that_stored_papers(site: Path) -> None:
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    store.upgrade()
    service = Service(cfg, store)
    service.ingest("arxiv")
    path = _vocabulary(site)
    assert path.is_file()
    fitted = path.stat().st_mtime_ns
    service.ingest("arxiv")  # the same listing again: nothing new, nothing fitted
    assert path.stat().st_mtime_ns == fitted
    today = datetime.now(UTC).date()
    assert refresh_vocabulary(cfg, store, today).version == Vocabulary.load(path).version  # type: ignore[union-attr]
    store.dispose()
