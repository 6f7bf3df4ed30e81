"""`digest preview` after a send: it says the digest went out, and `--next` shows the next one
as ranked now, so the effect of feedback can be seen."""

from __future__ import annotations

import re
from pathlib import Path

from digest.record import PaperRecord
from digest.store import Store
from tests.conftest import SmtpServer, digest


def _titles(stdout: str) -> list[str]:
    return re.findall(r"^\s*\d+\. (.+)$", stdout, flags=re.M)


def test_preview_of_a_digest_already_sent_says_so_and_shows_it_as_it_went_out(
    site: Path, smtp_server: SmtpServer
) -> None:
    assert digest("ingest", cwd=site).returncode == 0
    before = digest("preview", "ada@example.org", cwd=site)
    assert "was sent" not in before.stderr
    assert digest("run", cwd=site).returncode == 0
    after = digest("preview", "ada@example.org", cwd=site)
    assert after.returncode == 0, after.stderr
    note = " ".join(after.stderr.split())
    assert re.search(
        r"The digest of \d{4}-\d\d-\d\d was sent at \d{4}-\d\d-\d\d \d\d:\d\d UTC", note
    )
    assert "--next" in note
    assert _titles(after.stdout) == _titles(before.stdout)
    # The message itself stays clean for a pipe: the note is on stderr only.
    text = digest("preview", "ada@example.org", "--text", cwd=site)
    assert "was sent" not in text.stdout


def test_preview_next_shows_the_next_runs_digest_with_the_feedback_given_since(
    site: Path, smtp_server: SmtpServer
) -> None:
    assert digest("run", cwd=site).returncode == 0
    sent = _titles(digest("preview", "ada@example.org", cwd=site).stdout)
    nothing = digest("preview", "ada@example.org", "--next", cwd=site)
    assert nothing.returncode == 1
    assert "nothing for the next digest yet: no new papers since the last digest" in " ".join(
        nothing.stderr.split()
    )
    # The next listing brings the twin of a paper outside Ada's interests ...
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        (grid,) = store.papers(["2611.10012"]).values()
        store.upsert_papers(
            [
                PaperRecord(
                    id="2611.20001",
                    title=grid.title,  # the same work again, as another listing carries it
                    abstract=grid.abstract,
                    source="arxiv",
                    kind="arxiv-rss",
                    announced=grid.announced,
                    categories=list(grid.categories),
                )
            ]
        )
    finally:
        store.dispose()
    unmoved = digest("preview", "ada@example.org", "--next", cwd=site)
    assert "none of 1 new papers matched" in " ".join(unmoved.stderr.split())
    # ... and once she has liked that paper, her next digest holds the twin.
    liked = digest("feedback", "ada@example.org", "2611.10012", "like", cwd=site)
    assert liked.returncode == 0, liked.stderr
    upcoming = digest("preview", "ada@example.org", "--next", cwd=site)
    assert upcoming.returncode == 0, upcoming.stderr
    assert "The next digest" in upcoming.stderr
    titles = _titles(upcoming.stdout)
    assert titles == [grid.title]
    # Only what arrived since: nothing sent, and not the liked paper passed over before.
    assert not set(titles) & set(sent)
    assert "you liked" in upcoming.stdout
