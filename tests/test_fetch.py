from __future__ import annotations

import gzip
from pathlib import Path

from digest.config import Config, SourceConfig, load_config
from digest.ingest import ingest_all, ingest_source
from digest.ingest.fetch import USER_AGENT
from digest.store import Store
from digest.store.schema import FeedState
from tests.conftest import DEMO_DATA, FeedServer, Route, digest

LISTING = (DEMO_DATA / "listing.xml").read_bytes()


def source(server: FeedServer, path: str = "/rss", **kw: object) -> SourceConfig:
    return SourceConfig(name="arxiv", kind="arxiv-rss", url=server.url(path), **kw)  # type: ignore[arg-type]


def test_it_fetches_over_http_and_names_itself(store: Store, feed_server: FeedServer) -> None:
    feed_server.routes["/rss"] = Route(LISTING)
    report = ingest_source(store, source(feed_server))
    assert (report.status, report.added) == ("ok", 24)
    assert feed_server.requests[0]["User-Agent"] == USER_AGENT


def test_conditional_get_uses_the_stored_etag(store: Store, feed_server: FeedServer) -> None:
    feed_server.routes["/rss"] = Route(LISTING, etag='"v1"')
    ingest_source(store, source(feed_server))
    second = ingest_source(store, source(feed_server))
    assert second.status == "not-modified"
    assert feed_server.requests[1]["If-None-Match"] == '"v1"'
    state = store.feed_state("arxiv")
    assert state is not None and state.etag == '"v1"' and state.last_status == "not-modified"


def test_a_response_over_the_size_cap_is_refused(store: Store, feed_server: FeedServer) -> None:
    feed_server.routes["/rss"] = Route(LISTING)
    report = ingest_source(store, source(feed_server, max_bytes=4096))
    assert report.status == "error" and "larger than 4096 bytes" in (report.error or "")
    assert store.count_papers() == 0


def test_the_size_cap_also_bounds_decompressed_output(
    store: Store, feed_server: FeedServer
) -> None:
    bomb = gzip.compress(b"<rss>" + b" " * 5_000_000)
    assert len(bomb) < 10_000
    feed_server.routes["/gz"] = Route(bomb, headers={"Content-Encoding": "gzip"})
    report = ingest_source(store, source(feed_server, "/gz", max_bytes=1_000_000))
    assert report.status == "error" and "larger than 1000000 bytes" in (report.error or "")


def test_a_slow_server_times_out_with_a_clear_error(store: Store, feed_server: FeedServer) -> None:
    feed_server.routes["/rss"] = Route(LISTING, delay=2.0)
    report = ingest_source(store, source(feed_server, timeout=0.3))
    assert report.status == "error" and "timed out" in (report.error or "")


def test_a_broken_source_does_not_stop_the_others(store: Store, feed_server: FeedServer) -> None:
    feed_server.routes["/rss"] = Route(LISTING)
    feed_server.routes["/broken"] = Route(b"oops", status=500)
    cfg = Config(
        sources=[
            SourceConfig(name="broken", kind="rss", url=feed_server.url("/broken")),
            SourceConfig(name="missing", kind="rss", url=feed_server.url("/nothing-here")),
            SourceConfig(name="garbage", kind="hf-daily", url=(DEMO_DATA / "listing.xml").as_uri()),
            source(feed_server),
        ]
    )
    reports = {r.source: r for r in ingest_all(store, cfg)}
    assert "HTTP 500" in (reports["broken"].error or "")
    assert "HTTP 404" in (reports["missing"].error or "")
    assert "not JSON" in (reports["garbage"].error or "")
    assert reports["arxiv"].added == 24


def test_an_arxiv_api_source_without_a_query_is_never_fetched_as_a_feed(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    # The source `digest init` writes: it looks up example papers and backfills. Asked as a
    # feed it had no search to send, and cost a request (3 s of arXiv's spacing) every ingest.
    (tmp_path / "key").write_text("k" * 40)
    (tmp_path / "digest.toml").write_text(f"""
[smtp]
host = "127.0.0.1"
port = 1
from_address = "digest@papers.example.org"
[web]
secret_key_file = "key"
[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "{feed_server.url("/rss")}"
[[sources]]
name = "lookups"
kind = "arxiv-api"
url = "{feed_server.url("/api/query")}"
[[sources]]
name = "searched"
kind = "arxiv-api"
url = "{feed_server.url("/api/query")}"
query = "cat:cs.LG"
""")
    feed_server.routes["/rss"] = Route(LISTING)
    feed_server.routes["/api/query"] = Route(b"<feed xmlns='http://www.w3.org/2005/Atom'/>")
    # The previous release fetched it on every ingest, and `status` showed that fetch for ever.
    store = Store(load_config(tmp_path / "digest.toml").database_url)
    store.upgrade()
    store.save_feed_state(FeedState(source="lookups", url="-", last_status="error"))
    store.dispose()

    ran = digest("ingest", cwd=tmp_path)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    asked = [r["path"] for r in feed_server.requests if r["path"].startswith("/api/query")]
    assert len(asked) == 1 and "search_query=cat%3ACS.LG".lower() in asked[0].lower()
    row = next(line for line in ran.stdout.splitlines() if "lookups" in line)
    assert "look-ups only" in row and "error" not in row
    status = digest("status", cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    row = next(line for line in status.stdout.splitlines() if "lookups" in line)
    assert "look-ups only" in row and "never" not in row and "error" not in row
