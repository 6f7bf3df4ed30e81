"""What a feed server controls is bounded: decompressed size through stacked encodings, the
whole fetch's time, where redirects may lead, and how often we call (RELIABILITY.md F3, F4).
Every case runs against a real local HTTP server."""

from __future__ import annotations

import gzip
import importlib
import time
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from digest.config import SourceConfig
from digest.ingest import ingest_source
from digest.store import Store
from tests.conftest import DEMO_DATA, FeedServer, Route

LISTING = (DEMO_DATA / "listing.xml").read_bytes()
# The module (digest.ingest re-exports its `fetch` function under the same name).
fetch_module = importlib.import_module("digest.ingest.fetch")


def stacked_bomb(size: int) -> bytes:
    """`size` zero bytes, gzip'd, then gzip'd again: a few KB that expand twice over."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [inner.compress(block) for _ in range(size >> 20)]
    parts.append(inner.flush())
    return gzip.compress(b"".join(parts), 9)


def source(server: FeedServer, path: str, **kw: object) -> SourceConfig:
    return SourceConfig(name="feed", kind="arxiv-rss", url=server.url(path), **kw)  # type: ignore[arg-type]


@pytest.fixture
def private_server() -> Iterator[FeedServer]:
    """The operator's own feed on a loopback address of its own (127.0.0.2): a local mirror."""
    server = FeedServer("127.0.0.2")
    yield server
    server.close()


def test_a_body_gzipped_twice_stops_at_the_cap_as_it_expands(
    store: Store, feed_server: FeedServer
) -> None:
    bomb = stacked_bomb(1 << 30)  # 1 GiB of zeros
    assert len(bomb) < 20_000
    feed_server.routes["/gz"] = Route(bomb, headers={"Content-Encoding": "gzip, gzip"})
    report = ingest_source(store, source(feed_server, "/gz", max_bytes=1_000_000))
    assert report.status == "error"
    assert "larger than 1000000 bytes" in (report.error or "")


def test_three_stacked_encodings_are_undone_and_more_are_refused(
    store: Store, feed_server: FeedServer
) -> None:
    body = zlib.compress(gzip.compress(gzip.compress(LISTING)))
    feed_server.routes["/ok"] = Route(body, headers={"Content-Encoding": "gzip, gzip, deflate"})
    assert ingest_source(store, source(feed_server, "/ok")).added == 24
    feed_server.routes["/four"] = Route(b"x", headers={"Content-Encoding": "gzip, " * 3 + "gzip"})
    four = ingest_source(store, source(feed_server, "/four"))
    assert four.status == "error" and "4 stacked content encodings" in (four.error or "")


def test_a_server_trickling_one_byte_a_second_is_cut_at_the_deadline(
    store: Store, feed_server: FeedServer
) -> None:
    feed_server.routes["/slow"] = Route(LISTING[:100], trickle=1.0)
    started = time.monotonic()
    report = ingest_source(store, source(feed_server, "/slow", timeout=5, deadline=2))
    assert report.status == "error" and "no complete answer within 2 s" in (report.error or "")
    assert time.monotonic() - started < 4  # not 100 s, not even the 5 s per-read timeout


def test_429_is_retried_after_the_servers_retry_after(
    store: Store, feed_server: FeedServer
) -> None:
    feed_server.routes["/busy"] = [
        Route(b"slow down", status=429, headers={"Retry-After": "1"}),
        Route(LISTING),
    ]
    report = ingest_source(store, source(feed_server, "/busy"))
    assert report.status == "ok" and report.added == 24
    assert len(feed_server.times) == 2 and feed_server.times[1] - feed_server.times[0] >= 1.0


def test_a_retry_after_beyond_the_deadline_fails_at_once_and_says_why(
    store: Store, feed_server: FeedServer
) -> None:
    feed_server.routes["/down"] = Route(b"", status=503, headers={"Retry-After": "3600"})
    started = time.monotonic()
    report = ingest_source(store, source(feed_server, "/down", deadline=30))
    assert report.status == "error"
    assert "asks to wait 3600 s, past this fetch's deadline" in (report.error or "")
    assert time.monotonic() - started < 5


def test_calls_to_a_host_with_a_minimum_interval_are_spaced(
    store: Store, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # arXiv's API asks for 3 s; the same rule, keyed on this server's host, at 1 s.
    monkeypatch.setitem(fetch_module.MIN_INTERVAL, "127.0.0.1", 1.0)
    feed_server.routes["/api"] = Route((DEMO_DATA / "examples.xml").read_bytes())
    # With a search: one without is only asked for look-ups and backfills, never as a feed.
    api = SourceConfig(name="api", kind="arxiv-api", url=feed_server.url("/api"), query="cat:cs.LG")
    for _ in range(3):
        assert ingest_source(store, api).status == "ok"
    gaps = [b - a for a, b in zip(feed_server.times, feed_server.times[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.95, gaps


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/internal",
        "http://localhost:{port}/internal",
        "http://[::1]:{port}/internal",
        "http://0.0.0.0:{port}/internal",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/admin",
    ],
)
def test_a_redirect_into_an_internal_address_is_refused_naming_the_hop(
    store: Store, private_server: FeedServer, feed_server: FeedServer, target: str
) -> None:
    # feed_server on 127.0.0.1 plays an internal service that must never be reached.
    location = target.format(port=feed_server.port)
    private_server.routes["/feed"] = Route(b"", status=302, headers={"Location": location})
    feed_server.routes["/internal"] = Route(LISTING)
    report = ingest_source(store, source(private_server, "/feed"))
    assert report.status == "error"
    assert "refused to follow a redirect to" in (report.error or ""), report.error
    assert feed_server.requests == []


def test_a_redirect_within_the_operators_own_mirror_is_followed(
    store: Store, private_server: FeedServer
) -> None:
    private_server.routes["/old"] = Route(b"", status=301, headers={"Location": "/new"})
    private_server.routes["/new"] = Route(LISTING)
    report = ingest_source(store, source(private_server, "/old"))
    assert report.status == "ok" and report.added == 24
    # The Host header names the host as configured, though the socket went to the checked address.
    assert private_server.requests[-1]["Host"] == f"127.0.0.2:{private_server.port}"


def test_redirect_loops_stop(store: Store, feed_server: FeedServer) -> None:
    feed_server.routes["/loop"] = Route(b"", status=302, headers={"Location": "/loop"})
    report = ingest_source(store, source(feed_server, "/loop"))
    assert report.status == "error" and "more than 5 redirects" in (report.error or "")


def test_fetch_reads_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(LISTING)
    got = fetch_module.fetch(path.as_uri(), timeout=1, max_bytes=10_000_000)
    assert got.content == LISTING


@pytest.mark.parametrize(("cert_for", "ok"), [("feeds.test", True), ("other.test", False)])
def test_https_goes_to_the_checked_address_and_still_verifies_the_hosts_certificate(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cert_for: str, ok: bool
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    # The network boundary: feeds.test is this machine's 127.0.0.2, as DNS would say.
    monkeypatch.setattr(
        fetch_module, "resolve", lambda host, port: ["127.0.0.2"] if host == "feeds.test" else []
    )
    server = FeedServer("127.0.0.2")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_for).configure_cert(context)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.routes["/feed"] = Route(LISTING)
    try:
        src = SourceConfig(
            name="feed", kind="arxiv-rss", url=f"https://feeds.test:{server.port}/feed"
        )
        report = ingest_source(store, src)
    finally:
        server.close()
    if ok:
        assert report.status == "ok" and report.added == 24, report.error
        assert server.requests[0]["Host"] == f"feeds.test:{server.port}"
    else:
        assert report.status == "error" and "CERTIFICATE_VERIFY_FAILED" in (report.error or "")


def test_entity_bombs_are_not_expanded_and_external_entities_not_fetched(
    store: Store, feed_server: FeedServer
) -> None:
    """RELIABILITY.md F2, through the real fetch and parse of an RSS source."""
    levels = "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)
    )
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "xxxxxxxxxx">' + levels + "]>"
        '<rss version="2.0"><channel><title>t</title>'
        "<item><title>&j;</title><link>https://lab.example.org/1</link></item>"
        "<item><title>A fine paper</title><link>https://lab.example.org/2</link></item>"
        "</channel></rss>"
    ).encode()
    secret = feed_server.url("/secret")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "{secret}">]>'
        '<rss version="2.0"><channel><title>t</title>'
        "<item><title>Leak &x; here</title><link>https://lab.example.org/3</link></item>"
        "</channel></rss>"
    ).encode()
    feed_server.routes["/bomb"] = Route(bomb)
    feed_server.routes["/xxe"] = Route(xxe)
    feed_server.routes["/secret"] = Route(b"TOP-SECRET")
    started = time.monotonic()
    for path in ("/bomb", "/xxe"):
        src = SourceConfig(name=path.strip("/"), kind="rss", url=feed_server.url(path))
        assert ingest_source(store, src).status == "ok"
    assert time.monotonic() - started < 10
    titles = [p.title for p in store.papers_between(date(2000, 1, 1), date(2100, 1, 1))]
    assert "A fine paper" in titles and all(len(t) < 200 for t in titles)  # nothing expanded
    assert not any("TOP-SECRET" in t for t in titles)
    assert [r["path"] for r in feed_server.requests] == ["/bomb", "/xxe"]  # /secret never asked
