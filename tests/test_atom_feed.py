"""A feed of your digests: the email's footer links to `/a/<token>`, an Atom feed of the
reader's recent digests (one entry per paper, with its reason), served by the real web app
over HTTP and read back by feedparser as a feed reader would."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
from sqlmodel import select

from digest.config import Config, load_config
from digest.mail.links import Signer, unsubscribe_token
from digest.service.pipeline import run
from digest.service.web import shown_path
from digest.store import Store
from digest.store.schema import Paper
from tests.conftest import NOW, SmtpServer, digest_here
from tests.test_web import WebServer, delivered, text_links


@pytest.fixture
def web(workspace: Config, store: Store) -> Iterator[WebServer]:
    server = WebServer(workspace, store)
    yield server
    server.close()


def feed_url(smtp_server: SmtpServer, web: WebServer, rcpt: str = "ada@example.org") -> str:
    [url] = text_links(delivered(smtp_server, rcpt), "Follow as a feed (Atom)")
    return web.local(url)


def test_the_footer_link_serves_every_paper_of_the_digest_with_its_reason_as_valid_atom(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    sent = store.delivery("ada@example.org", NOW.date())
    assert sent is not None and sent.paper_ids
    html = delivered(smtp_server, "ada@example.org").get_body(("html",))
    assert html is not None and ">Follow as a feed</a>" in html.get_content()
    answer = web.client.get(feed_url(smtp_server, web))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    parsed = feedparser.parse(answer.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    ids = [e.link.rsplit("/", 1)[-1] for e in parsed.entries]
    assert ids == sent.paper_ids  # one entry per paper, in the digest's order
    assert len({e.id for e in parsed.entries}) == len(parsed.entries)
    for entry, pid in zip(parsed.entries, sent.paper_ids, strict=True):
        assert entry.summary.startswith(f"Why: {sent.reasons[pid]}")
        assert entry.link == f"https://arxiv.org/abs/{pid}"
        assert entry.updated_parsed is not None
    # A feed URL ends up in feed services and shared lists: no address in it.
    assert b"ada@" not in answer.content and b"example.org</" not in answer.content
    # The access log cuts the token, as for the other links.
    assert shown_path("/a/" + answer.url.path.rsplit("/", 1)[-1]) == "/a/…"


def test_a_feed_reader_polling_an_unchanged_feed_gets_304_and_a_new_digest_changes_it(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    url = feed_url(smtp_server, web)
    first = web.client.get(url)
    tag = first.headers["etag"]
    again = web.client.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    # The next day's digest (bob's and ada's feeds are their own).
    run(workspace, store, now=NOW + timedelta(days=1))
    later = web.client.get(url, headers={"If-None-Match": tag})
    assert later.status_code in (200, 304)
    bob = web.client.get(feed_url(smtp_server, web, "bob@example.org"))
    ada_ids = {e.id for e in feedparser.parse(first.content).entries}
    bob_ids = {e.id for e in feedparser.parse(bob.content).entries}
    assert bob_ids and not ada_ids & bob_ids


def test_hostile_paper_text_stays_text_and_the_feed_stays_valid(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    sent = store.delivery("ada@example.org", NOW.date())
    assert sent is not None
    hostile = 'Ends ]]> here <script>alert("x")</script> &amp; \x0b\ufffe M\\"uller $x<y$'
    with store.session() as s:
        paper = s.exec(select(Paper).where(Paper.id == sent.paper_ids[0])).one()
        paper.title = hostile
        paper.abstract = "<img src=x onerror=alert(1)> " * 2000
        paper.authors = ["<b>Bold</b> & Co", 'G\\"unther']
        s.add(paper)
        s.commit()
    answer = web.client.get(feed_url(smtp_server, web))
    assert b"<script>" not in answer.content and b"<img" not in answer.content
    parsed = feedparser.parse(answer.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    entry = parsed.entries[0]
    assert "<script>" in entry.title  # shown as the text it is, not run
    assert "Müller" in entry.title and "\x0b" not in entry.title
    assert len(entry.summary) < 1000  # an excerpt, not 60 KB of abstract
    assert [a.name for a in entry.authors][:2] == ["<b>Bold</b> & Co", "Günther"]


def test_forged_and_other_purpose_tokens_are_refused_and_a_forgotten_reader_is_not_found(
    workspace: Config, store: Store, smtp_server: SmtpServer, web: WebServer
) -> None:
    run(workspace, store, now=NOW)
    url = feed_url(smtp_server, web)
    base = url.rsplit("/", 1)[0]
    flipped = url[:-3] + ("A" if url[-3] != "A" else "B") + url[-2:]
    other = base + "/" + unsubscribe_token(workspace, "ada@example.org")
    for bad in (flipped, other, url[:-6]):
        answer = web.client.get(bad)
        assert answer.status_code == 400 and "not valid" in answer.text
    # A genuine token for a reader the database never heard of.
    stranger = base + "/" + Signer(workspace).feed("nobody@example.org")
    assert web.client.get(stranger).status_code == 404


def test_after_a_real_digest_run_the_feed_link_in_the_email_validates(
    site: Path, smtp_server: SmtpServer
) -> None:
    done = digest_here("run", cwd=site)
    assert done.returncode == 0, done.stdout
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    server = WebServer(cfg, store)
    try:
        for rcpt in ("ada@example.org", "bob@example.org"):
            answer = server.client.get(feed_url(smtp_server, server, rcpt))
            parsed = feedparser.parse(answer.content)
            assert answer.status_code == 200 and parsed.bozo == 0
            sent = store.delivery(
                rcpt, next(d.digest_date for d in store.deliveries() if d.subscriber == rcpt)
            )
            assert sent is not None
            assert [e.link.rsplit("/", 1)[-1] for e in parsed.entries] == sent.paper_ids
    finally:
        server.close()
        store.dispose()
