"""A reader's recent digests as an Atom feed (RFC 4287), for `/a/<token>` (digest.service.web).

One entry per paper of each digest that went out, newest digest first, with the reason it was
picked. Built from the delivery rows (their papers and reasons, kept after the message itself
is pruned) and the stored papers, written by ElementTree so that every value is escaped. The
feed names no address: feed readers and the services behind them keep and share URLs.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree as ET

from digest.config import Config
from digest.mail.links import Signer
from digest.mail.render import excerpt, keep_links, link_hosts, safe_link
from digest.store.papers import Store
from digest.store.schema import Delivery, Paper
from digest.text import plain_latex, plain_name

ATOM = "http://www.w3.org/2005/Atom"
# The digests a feed holds: a month of daily ones, at most 50 papers each.
FEED_DIGESTS = 30
MAX_AUTHORS = 10
# Characters XML 1.0 cannot carry at all, not even as references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("", value)


def _stamp(when: datetime | None) -> str:
    when = when or datetime(1970, 1, 1, tzinfo=UTC)
    if when.tzinfo is None:  # SQLite hands datetimes back without their zone; all are UTC
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
    if text is not None:
        child.text = _text(text)
    return child


def atom_feed(cfg: Config, store: Store, address: str, ref: str, self_url: str) -> bytes:
    """The Atom document of the reader's last `FEED_DIGESTS` digests. ``ref`` is the opaque id
    their links carry: entry ids are made from it, never from the address."""
    sent = store.sent_to(address, FEED_DIGESTS)
    ids = list(dict.fromkeys(pid for d in sent for pid in d.paper_ids))
    papers = store.papers(ids) if ids else {}
    host = urlsplit(cfg.web.base_url).hostname or "localhost"
    feed = ET.Element(f"{{{ATOM}}}feed")
    _add(feed, "id", f"tag:{host},2026:digest-feed/{ref}")
    _add(feed, "title", f"{cfg.smtp.from_name}: your digests")
    _add(feed, "updated", _stamp(sent[0].sent_at if sent else None))
    _add(_add(feed, "author"), "name", cfg.smtp.from_name)
    _add(feed, "link", rel="self", type="application/atom+xml", href=self_url)
    _add(feed, "generator", "digest")
    hosts = link_hosts(cfg)
    signer = Signer(cfg)
    for delivery in sent:
        # Where an entry with no page of its own points: the digest it came in, on the web.
        web = f"{cfg.web.base_url}/d/{signer.digest(address, delivery.digest_date)}"
        for pid in delivery.paper_ids:
            paper = papers.get(pid)
            if paper is not None:
                _entry(feed, host, ref, delivery, paper, hosts, web)
    ET.register_namespace("", ATOM)
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body


def _entry(
    feed: ET.Element,
    host: str,
    ref: str,
    delivery: Delivery,
    paper: Paper,
    hosts: tuple[str, ...],
    web: str,
) -> None:
    entry = _add(feed, "entry")
    day = delivery.digest_date.isoformat()
    # Stable and unique per reader and paper (a paper is sent to a reader once), and opaque.
    _add(entry, "id", f"tag:{host},{day}:{ref}/{quote(paper.id, safe='')}")
    _add(entry, "title", plain_latex(paper.title))
    _add(entry, "updated", _stamp(delivery.sent_at))
    bibtex, doi = keep_links(paper)
    # The links the email gives (the configured feeds' hosts too), and always one.
    page = safe_link(paper.abs_url, hosts) or doi or safe_link(paper.hf_url, hosts) or web
    _add(entry, "link", rel="alternate", type="text/html", href=page)
    if pdf := safe_link(paper.pdf_url, hosts):
        _add(entry, "link", rel="related", type="application/pdf", href=pdf, title="PDF")
    if bibtex:
        _add(entry, "link", rel="related", href=bibtex, title="BibTeX")
    for name in paper.authors[:MAX_AUTHORS]:
        _add(_add(entry, "author"), "name", plain_name(name))
    for category in paper.categories[:8]:
        _add(entry, "category", term=_text(category))
    reason = str(delivery.reasons.get(paper.id, "")).strip()
    why = f"Why: {reason}" if reason else ""
    summary = "\n\n".join(x for x in (why, excerpt(plain_latex(paper.abstract), 600)) if x)
    if summary:
        _add(entry, "summary", summary, type="text")


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
