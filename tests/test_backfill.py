"""`digest ingest --backfill DAYS` (and `digest init --backfill`) through the real CLI, against a
local HTTP server answering as arXiv's API does: pages built from the real responses in
../shared/data/arxiv_api (their dates moved into the last weeks) or written here. The clock
the pause between requests is measured on is a fake one, so nothing sleeps for real."""

from __future__ import annotations

import io
import itertools
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from digest.config import load_config
from digest.ingest import backfill as bf
from digest.record import PaperRecord
from digest.service.context import corpus_of
from digest.store import Store
from tests.conftest import (
    ADA,
    DEMO_DATA,
    SHARED,
    FeedServer,
    Route,
    SmtpServer,
    bodies,
    digest_here,
    write_profile,
)

REAL = SHARED / "arxiv_api"
# Real answers of export.arxiv.org to one search, ten results a page, in page order.
REAL_PAGES = [f"q_testing_s{s}_m10_{h}.xml" for s, h in (
    ("0", "bc5a6c384fe9"), ("10", "34e56e15aaac"), ("20", "348a237fecab"),
    ("30", "f2e39f0143dc"), ("40", "96dd32eb854c"), ("50", "7f488ab8598c"),
)]  # fmt: skip
TODAY = datetime.now(UTC).date()
# The demo listing's day: backfilled papers dated around it are inside its listing window.
LISTING_DAY = date(2026, 11, 20)
PER_DAY = 4  # backfilled papers a day in the pages made from the real ones


class FakeClock:
    """Monotonic time that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(bf, "monotonic", fake.monotonic)
    monkeypatch.setattr(bf, "sleep", fake.sleep)
    monkeypatch.setattr(bf, "PAGE_SIZE", 10)
    return fake


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> list[tuple[float, dict[str, str]]]:
    """Each request the backfill makes: the fake time it was made at, and its parameters."""
    made: list[tuple[float, dict[str, str]]] = []
    real = bf.fetch

    def fetch(url: str, **kw: Any) -> Any:
        made.append((clock.now, dict(kw["params"])))
        return real(url, **kw)

    monkeypatch.setattr(bf, "fetch", fetch)
    return made


@pytest.fixture
def api(feed_server: FeedServer) -> Iterator[FeedServer]:
    yield feed_server


def terminal_screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The backfill's console drawn as on a terminal, into the returned buffer."""
    from rich.console import Console

    from digest.cli import backfill as cli_backfill

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120, soft_wrap=True, markup=False)
    monkeypatch.setattr(cli_backfill, "console", terminal)
    return screen


def site_at(
    root: Path, api: FeedServer, categories: str = '["cs.LG"]', extra: str = "", smtp: int = 1
) -> Path:
    (root / "key").write_text("k" * 40)
    (root / "digest.toml").write_text(f"""{extra}
[smtp]
host = "127.0.0.1"
port = {smtp}
from_address = "digest@papers.example.org"
[web]
base_url = "https://papers.example.org"
secret_key_file = "key"
[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "{(DEMO_DATA / "listing.xml").as_uri()}"
categories = {categories}
[[sources]]
name = "arxiv-api"
kind = "arxiv-api"
url = "{api.url("/api/query")}"
""")
    write_profile(root / "subscribers", "ada", ADA)
    return root


def dated(body: bytes, first: int) -> bytes:
    """A real page with its entries' submission dates moved: entry n of the whole search
    (``first`` the page's first) is dated PER_DAY to a day back from the day before the demo
    listing, so the backfill lies inside that listing's window."""
    n = iter(range(first, first + 1000))

    def day(_m: re.Match[bytes]) -> bytes:
        d = LISTING_DAY - timedelta(days=1 + next(n) // PER_DAY)
        return f"<published>{d.isoformat()}T12:00:00Z</published>".encode()

    return re.sub(rb"<published>[^<]*</published>", day, body)


def real_pages() -> list[bytes]:
    return [dated((REAL / name).read_bytes(), 10 * i) for i, name in enumerate(REAL_PAGES)]


def entry_xml(pid: str, title: str, day: date) -> bytes:
    return f"""<entry><id>http://arxiv.org/abs/{pid}v1</id><title>{title}</title>
<summary>About {title.lower()}.</summary><published>{day.isoformat()}T10:00:00Z</published>
<author><name>Ann Author</name></author><category term="cs.LG"/>
<arxiv:primary_category term="cs.LG"/></entry>""".encode()


def atom(entries: list[tuple[str, str, date]], total: int = 1000, start: int = 0) -> bytes:
    """An arXiv API answer written here: (id, title, submitted) per entry."""
    body = b"".join(entry_xml(*e) for e in entries).decode()
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"
 xmlns:arxiv="http://arxiv.org/schemas/atom"><title>arXiv Query</title>
<opensearch:totalResults>{total}</opensearch:totalResults>
<opensearch:startIndex>{start}</opensearch:startIndex>{body}</feed>""".encode()


def days_for(depth: int) -> int:
    """--backfill DAYS reaching ``depth`` days before the day before the demo listing."""
    return (TODAY - LISTING_DAY).days + 1 + depth


def ids_in(pages: list[bytes]) -> list[str]:
    return [m.decode() for p in pages for m in re.findall(rb"<id>http://arxiv.org/abs/([^v<]+)", p)]


def backfilled(root: Path) -> dict[str, Any]:
    store = Store(load_config(root / "digest.toml").database_url)
    with store.session() as s:
        from sqlmodel import select

        from digest.store.schema import Paper

        return {p.id: p for p in s.exec(select(Paper)) if p.announce_type == "backfill"}


def starts(made: list[tuple[float, dict[str, str]]]) -> list[int]:
    return [int(params["start"]) for _, params in made]


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return digest_here("--config", str(root / "digest.toml"), *args, cwd=root)


# -- the whole backfill -------------------------------------------------------------------


@pytest.mark.shared_data
def test_a_backfill_fetches_pages_in_order_3_s_apart_and_stores_them_as_corpus_never_listed(
    tmp_path: Path,
    api: FeedServer,
    calls: list[tuple[float, dict[str, str]]],
    smtp_server: SmtpServer,
) -> None:
    root = site_at(tmp_path, api, smtp=smtp_server.port)
    assert cli(root, "ingest", "--source", "arxiv").returncode == 0  # the demo listing
    # A paper on exactly Ada's interests, submitted the day before the listing: were it listed,
    # it would head her digest.
    lure = entry_xml("2611.99999", "Long context state space models", LISTING_DAY - timedelta(1))
    pages = real_pages()
    pages[0] = pages[0].replace(b"<entry>", lure + b"<entry>", 1)
    api.routes["/api/query"] = [Route(p) for p in pages]
    # Back 11 days from the listing day: entries 0-43 of the search (4 a day), and the lure.
    days = days_for(10)

    out = cli(root, "ingest", "--backfill", str(days))

    assert out.returncode == 0, out.stdout + out.stderr
    assert starts(calls) == [0, 11, 21, 31, 41]  # the first page held the lure too
    params = calls[0][1]
    assert params["search_query"] == "cat:cs.LG"
    assert (params["sortBy"], params["sortOrder"]) == ("submittedDate", "descending")
    times = [t for t, _ in calls]
    assert all(b - a >= 3.0 for a, b in itertools.pairwise(times))
    stored = backfilled(root)
    wanted = set(ids_in(pages)[: 1 + 4 * 11])  # the lure and 11 days of 4 papers
    assert set(stored) == wanted
    assert all(p.sources == ["arxiv-api:arxiv"] for p in stored.values())
    assert f"backfill: {len(wanted)} papers added, 5 pages" in out.stdout
    # Counted in the corpus the vocabulary is fitted on, listed nowhere.
    cfg = load_config(root / "digest.toml")
    corpus = {e.id for e in corpus_of(cfg, Store(cfg.database_url), TODAY)}
    assert wanted <= corpus
    preview = cli(root, "preview", "ada@example.org", "--text")
    assert preview.returncode == 0, preview.stderr
    assert "Long context state space models" not in preview.stdout
    assert not any(pid in preview.stdout for pid in wanted)
    sent = cli(root, "run", "--no-ingest")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert len(smtp_server.received) == 1  # Ada's digest, of the demo listing alone
    text, _html = bodies(smtp_server.received[0].data)
    assert "Long context state space models" not in text
    assert not any(pid in text for pid in wanted)


@pytest.mark.shared_data
def test_a_backfill_stopped_by_a_network_error_continues_at_that_page_when_run_again(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api)
    pages = real_pages()
    api.routes["/api/query"] = [Route(pages[0]), Route(pages[1]), Route(b"down", status=500)]
    days = days_for(10)

    first = cli(root, "ingest", "--backfill", str(days))

    assert first.returncode == 2
    assert "the page at result 20 failed" in first.stderr
    assert f"digest --config {root / 'digest.toml'} ingest --backfill {days}" in first.stderr
    assert len(backfilled(root)) == 20
    calls.clear()
    api.routes["/api/query"] = [Route(p) for p in pages[2:]]

    again = cli(root, "ingest", "--backfill", str(days))

    assert again.returncode == 0, again.stdout + again.stderr
    assert starts(calls) == [20, 30, 40]  # not a page of the first run again
    assert "continuing at result 20" in again.stderr
    assert set(backfilled(root)) == set(ids_in(pages)[:44])
    calls.clear()
    done = cli(root, "ingest", "--backfill", str(days))
    assert done.returncode == 0 and calls == []
    assert "already backfilled" in done.stderr


@pytest.mark.shared_data
def test_a_backfill_interrupted_by_ctrl_c_keeps_its_pages_and_resumes_after_them(
    tmp_path: Path,
    api: FeedServer,
    calls: list[tuple[float, dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = site_at(tmp_path, api)
    pages = real_pages()
    api.routes["/api/query"] = [Route(p) for p in pages]
    resume = ctrl_c_after(3, calls, monkeypatch)
    days = days_for(10)

    out = cli(root, "ingest", "--backfill", str(days))

    assert out.returncode == 2
    assert "interrupted" in out.stderr and "continues where it stopped" in out.stderr
    assert len(backfilled(root)) == 30
    resume()
    calls.clear()
    api.routes["/api/query"] = [Route(p) for p in pages[3:]]
    assert cli(root, "ingest", "--backfill", str(days)).returncode == 0
    assert starts(calls) == [30, 40]


def ctrl_c_after(
    n: int, calls: list[tuple[float, dict[str, str]]], mp: pytest.MonkeyPatch
) -> Callable[[], None]:
    """Ctrl-C at the backfill's request after the ``n``th (those made are in ``calls``).
    Returns what puts back the fetch that counts them."""
    counting = bf.fetch

    def fetch(url: str, **kw: Any) -> Any:
        if len(calls) == n:
            raise KeyboardInterrupt
        return counting(url, **kw)

    mp.setattr(bf, "fetch", fetch)
    return lambda: mp.setattr(bf, "fetch", counting)


# -- pages that go wrong ------------------------------------------------------------------


def day_pages(n_pages: int, per_page: int = 10, total: int = 1000) -> list[bytes]:
    """Written pages of papers 2 a day back from the day before the listing."""
    out = []
    for p in range(n_pages):
        n0 = p * per_page
        entries = [
            (f"2611.{20000 + n:05d}", f"Paper {n} on graphs", LISTING_DAY - timedelta(1 + n // 2))
            for n in range(n0, n0 + per_page)
        ]
        out.append(atom(entries, total=total, start=n0))
    return out


def test_an_unreadable_page_gets_one_line_and_the_pages_after_it_are_still_fetched(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api)
    pages = day_pages(4, total=40)
    api.routes["/api/query"] = [
        Route(pages[0]),
        Route(b"<html><body>Service temporarily unavailable"),
        Route(pages[2]),
        Route(pages[3]),
    ]

    out = cli(root, "ingest", "--backfill", str(days_for(30)))

    assert out.returncode == 2
    unreadable = [x for x in out.stderr.splitlines() if "is unreadable" in x]
    assert unreadable == [
        "arxiv cs.LG: the page at result 10 is unreadable: arXiv sent an HTML page, not Atom"
    ]
    assert "results 10 to 19 left out" in out.stderr
    assert starts(calls) == [0, 10, 20, 30]
    assert len(backfilled(root)) == 30
    assert "1 failed" in out.stdout


def test_a_bad_entry_is_named_in_one_line_and_the_rest_of_its_page_is_stored(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api)
    page = day_pages(1, total=10)[0]
    # The third entry loses its id: arXiv's API never sends that, a broken proxy might.
    broken = re.sub(rb"<id>http://arxiv.org/abs/2611.20002v1</id>", b"<id>nonsense</id>", page)
    api.routes["/api/query"] = [Route(broken)]

    out = cli(root, "ingest", "--backfill", str(days_for(12)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert [x for x in out.stderr.splitlines() if "entry 3" in x] == [
        "arxiv cs.LG: the page at result 0: entry 3: no arXiv id in 'nonsense'"
    ]
    assert len(backfilled(root)) == 9


def test_an_empty_page_mid_way_is_asked_for_once_more_then_the_search_stops_saying_why(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api)
    pages = day_pages(3)
    empty = atom([], total=1000, start=10)
    api.routes["/api/query"] = [Route(pages[0]), Route(empty), Route(empty), Route(pages[1])]
    days = days_for(12)

    out = cli(root, "ingest", "--backfill", str(days))

    assert out.returncode == 2
    assert "an empty page at result 10; asking again" in out.stderr
    assert "arXiv sent an empty page at result 10 of 1000 twice" in out.stderr
    assert starts(calls) == [0, 10, 10]
    assert calls[2][0] - calls[1][0] >= 3.0
    calls.clear()
    api.routes["/api/query"] = [Route(pages[1]), Route(pages[2])]
    assert cli(root, "ingest", "--backfill", str(days)).returncode == 0
    assert starts(calls) == [10, 20]


def test_an_empty_page_that_comes_right_the_second_time_costs_nothing(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api)
    pages = day_pages(3)
    api.routes["/api/query"] = [Route(pages[0]), Route(atom([], start=10)), *map(Route, pages[1:])]

    out = cli(root, "ingest", "--backfill", str(days_for(12)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert starts(calls) == [0, 10, 10, 20]
    assert len(backfilled(root)) == 26  # 13 days of 2: the 27th is older than the cutoff


def test_the_end_of_the_results_ends_a_search_that_has_not_reached_the_cutoff(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api, categories='["cs.LG", "astro-ph"]')
    page = day_pages(1, per_page=6, total=6)[0]
    api.routes["/api/query"] = [Route(page)]

    out = cli(root, "ingest", "--backfill", str(days_for(30)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert [p["search_query"] for _, p in calls] == [
        "cat:cs.LG",
        "cat:astro-ph.CO OR cat:astro-ph.EP OR cat:astro-ph.GA OR cat:astro-ph.HE "
        "OR cat:astro-ph.IM OR cat:astro-ph.SR",
    ]


# -- what is stored, and how it counts ------------------------------------------------------


def record(pid: str, day: date, kind: str, kind_type: str, source: str = "arxiv") -> PaperRecord:
    return PaperRecord(
        id=pid, title=f"Paper {pid}", source=source, kind=kind, announced=day,
        announce_type=kind_type, version=1,
    )  # fmt: skip


def test_a_listed_paper_fetched_again_by_a_backfill_stays_listed_on_its_listing_day(
    store: Store,
) -> None:
    store.upsert_papers([record("2611.00001", LISTING_DAY, "arxiv-rss", "new")])
    store.upsert_papers([record("2611.00001", LISTING_DAY - timedelta(2), "arxiv-api", "backfill")])
    paper = store.papers(["2611.00001"])["2611.00001"]
    assert (paper.announce_type, paper.announced) == ("new", LISTING_DAY)


def test_a_backfilled_paper_that_a_listing_brings_later_is_listed_as_if_the_listing_came_first(
    store: Store,
) -> None:
    day = LISTING_DAY - timedelta(2)
    store.upsert_papers([record("2611.00002", day, "arxiv-api", "backfill")])
    store.upsert_papers([record("2611.00003", day, "arxiv-api", "backfill")])
    store.upsert_papers([record("2611.00002", LISTING_DAY, "arxiv-rss", "new")])
    store.upsert_papers([record("2611.00003", LISTING_DAY, "hf-daily", "hf", source="hf")])
    papers = store.papers(["2611.00002", "2611.00003"])
    assert (papers["2611.00002"].announce_type, papers["2611.00002"].announced) == (
        "new",
        LISTING_DAY,
    )
    assert papers["2611.00003"].announce_type == "hf"


def test_before_the_first_listing_the_backfill_is_the_corpus_counted_from_its_newest_day(
    tmp_path: Path, api: FeedServer
) -> None:
    root = site_at(tmp_path, api, extra="[digest]\ncorpus_days = 7\n")
    cfg = load_config(root / "digest.toml")
    store = Store(cfg.database_url)
    store.upgrade()
    store.upsert_papers(
        [record(f"2611.{n:05d}", LISTING_DAY - timedelta(n), "arxiv-api", "backfill")
         for n in range(10)]
    )  # fmt: skip
    assert len(corpus_of(cfg, store, TODAY)) == 8  # 7 days back from the newest, both ends in
    store.upsert_papers([record("2611.10000", LISTING_DAY + timedelta(1), "arxiv-rss", "new")])
    assert len(corpus_of(cfg, store, TODAY)) == 8  # now counted from the listing day


# -- the command's edges --------------------------------------------------------------------


def test_a_source_without_categories_is_named_in_one_line_and_skipped(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api, categories="[]")
    out = cli(root, "ingest", "--backfill", "5")
    assert out.returncode == 1
    assert "arxiv: no categories configured; skipped" in out.stderr
    assert "nothing to backfill" in out.stderr
    assert calls == []


def test_more_days_than_the_corpus_window_is_warned_about(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    root = site_at(tmp_path, api, extra="[digest]\ncorpus_days = 7\n")
    api.routes["/api/query"] = [Route(day_pages(1, per_page=2, total=2)[0])]
    out = cli(root, "ingest", "--backfill", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--backfill 30 is more than [digest] corpus_days (7)" in out.stderr
    assert "backfill: 2 papers added, 1 page," in out.stdout


def test_init_says_how_to_backfill_and_with_backfill_runs_it_after_making_the_site(
    tmp_path: Path, api: FeedServer, calls: list[tuple[float, dict[str, str]]]
) -> None:
    plain = tmp_path / "plain"
    out = digest_here("init", "--dir", str(plain), cwd=tmp_path)
    assert out.returncode == 0
    assert f"`cd {plain} && digest ingest --backfill 90`" in out.stdout
    assert calls == []
    # init keeps a digest.toml that exists: this one asks the local server.
    (tmp_path / "site").mkdir()
    root = site_at(tmp_path / "site", api)
    api.routes["/api/query"] = [Route(p) for p in day_pages(2)]
    made = digest_here("init", "--dir", str(root), "--backfill", str(days_for(6)), cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "database ready" in made.stdout
    assert "backfill: 14 papers added, 2 pages" in made.stdout
    assert len(backfilled(root)) == 14


def test_on_a_terminal_a_backfill_draws_a_progress_bar_per_category(
    tmp_path: Path,
    api: FeedServer,
    calls: list[tuple[float, dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = terminal_screen(monkeypatch)
    root = site_at(tmp_path, api)
    api.routes["/api/query"] = [Route(p) for p in day_pages(2)]

    out = cli(root, "ingest", "--backfill", str(days_for(6)))

    assert out.returncode == 0, out.stdout + out.stderr
    shown = screen.getvalue()
    assert "arxiv cs.LG" in shown and "━" in shown  # the bar
    assert "new" in shown and "backfill: 14 papers added, 2 pages" in shown
