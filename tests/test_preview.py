"""`digest preview` after a send: it says the digest went out, and `--next` shows the next one
as ranked now, so the effect of feedback can be seen."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_preview_next_ranks_the_unsent_papers_with_the_feedback_given_since(
    site: Path, smtp_server: SmtpServer
) -> None:
    assert digest("run", cwd=site).returncode == 0
    sent = _titles(digest("preview", "ada@example.org", cwd=site).stdout)
    nothing = digest("preview", "ada@example.org", "--next", cwd=site)
    assert nothing.returncode == 1
    assert "nothing for the next digest yet" in nothing.stderr
    # Ada likes a paper outside her interests (from the web page, or the operator for her).
    liked = digest("feedback", "ada@example.org", "2611.10012", "like", cwd=site)
    assert liked.returncode == 0, liked.stderr
    upcoming = digest("preview", "ada@example.org", "--next", cwd=site)
    assert upcoming.returncode == 0, upcoming.stderr
    assert "The next digest" in upcoming.stderr
    titles = _titles(upcoming.stdout)
    assert any(t.startswith("Grid Cells Emerge") for t in titles)
    assert not set(titles) & set(sent)  # what went out is not offered again
    assert "you liked" in upcoming.stdout
