"""A backfill deeper than arXiv serves one query: its API gives at most 30,000 results of a
search (90 days of cs.LG is about 45,000), so a sweep cuts its search at the day it reached and
starts again from offset 0. And backfills of different depths one after the other, which must
leave no paper of the longer one out; an answer cut short; a purge or a fit stopped while a
backfill is about. Against a local HTTP server that answers as arXiv does,
dates and all, scaled down: 30 results a query, a cut at 20 deep, pages of 10."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from digest.config import load_config
from digest.ingest import backfill as bf
from digest.ingest.backfill_lock import backfill_lock
from digest.ingest.backfill_progress import key_of, load
from digest.store import Store
from tests import test_backfill as shared
from tests.conftest import FeedServer, Route
from tests.test_backfill import (
    LISTING_DAY,
    atom,
    backfilled,
    cli,
    ctrl_c_after,
    days_for,
    site_at,
)

# The fixtures of tests/test_backfill.py, by the names its tests use.
clock, calls, api = shared.clock, shared.calls, shared.api
Calls = list[tuple[float, dict[str, str]]]  # each request: its fake time and parameters

LIMIT = 30  # results arXiv serves of one query (30,000, scaled down)
PER_DAY = 3
DEPTH = 30  # days the backfills below reach back, before the day before the listing
CUT = re.compile(r"^\(cat:cs\.LG\) AND submittedDate:\[199108010000 TO (\d{8})2359\]$")


def day_of(n: int) -> date:
    """The submission day of the search's n-th newest paper."""
    return LISTING_DAY - timedelta(1 + n // PER_DAY)


class FakeArxiv:
    """cs.LG's papers, PER_DAY a day back from the day before the listing, newest first;
    answered a page at a time, a search cut by submission date, never past LIMIT results."""

    def __init__(self, days: int = 40) -> None:
        self.papers = [
            (
                f"2611.{30000 + n:05d}",
                f"Paper {n} on graphs",
                LISTING_DAY - timedelta(1 + n // PER_DAY),
            )
            for n in range(days * PER_DAY)
        ]
        self.unreadable: set[tuple[str, int]] = set()  # (search_query, start): an HTML page once
        self.empty: set[tuple[str, int]] = set()  # answered with no entries, every time
        self.cut_short: set[tuple[str, int]] = set()  # cut inside its last abstract, once
        self.limit = LIMIT

    def answer(self, params: dict[str, str]) -> Route:
        query, start = params["search_query"], int(params["start"])
        if (query, start) in self.unreadable:
            self.unreadable.discard((query, start))
            return Route(b"<html><body>Service temporarily unavailable", content_type="text/html")
        if (query, start) in self.empty:  # one of arXiv's spurious empty answers
            return Route(atom([], total=0, start=start))
        found = self.papers
        if cut := CUT.match(query):
            upto = date(int(cut[1][:4]), int(cut[1][4:6]), int(cut[1][6:]))
            found = [p for p in found if p[2] <= upto]
        else:
            assert query == "cat:cs.LG", query
        end = min(start + int(params["max_results"]), self.limit)
        body = atom(found[start:end], total=len(found), start=start)
        if (query, start) in self.cut_short:  # a connection dropped mid-answer
            self.cut_short.discard((query, start))
            body = body[: body.rindex(b"<summary>") + 12]
        return Route(body)

    def wanted(self, depth: int = DEPTH) -> set[str]:
        cutoff = LISTING_DAY - timedelta(1 + depth)
        return {pid for pid, _, day in self.papers if day >= cutoff}


def cuts(made: list[tuple[float, dict[str, str]]]) -> list[tuple[str | None, int]]:
    """Each request's cut day (None: not cut) and start."""
    out = []
    for _, params in made:
        cut = CUT.match(params["search_query"])
        out.append((cut[1] if cut else None, int(params["start"])))
    return out


@pytest.fixture
def root(tmp_path: Path, api: FeedServer) -> Path:
    """A site whose arxiv-rss source follows cs.LG, its API at the local server."""
    return site_at(tmp_path, api)


@pytest.fixture
def arxiv(api: FeedServer, monkeypatch: pytest.MonkeyPatch) -> FakeArxiv:
    fake = FakeArxiv()
    api.answers["/api/query"] = fake.answer
    monkeypatch.setattr(bf, "MAX_DEPTH", 20)
    return fake


def test_a_backfill_deeper_than_arxiv_serves_one_search_cuts_it_by_date_and_misses_nothing(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))  # 93 papers: three times what one search gives
    made = cuts(calls)
    assert all(start + 10 <= 20 for _, start in made)
    # Each cut at the oldest day reached: its papers are asked for again, none skipped.
    day = day_of(19)
    assert made[:4] == [(None, 0), (None, 10), (f"{day:%Y%m%d}", 0), (f"{day:%Y%m%d}", 10)]
    assert len({cut for cut, _ in made}) >= 4
    assert "empty page" not in out.stderr


def test_without_the_cut_the_same_backfill_stops_at_arxivs_limit_so_the_fake_holds_to_it(
    root: Path,
    arxiv: FakeArxiv,
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bf, "MAX_DEPTH", 10_000)

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 2
    assert "arXiv sent an empty page at result 30 of 120 twice" in out.stderr
    assert len(backfilled(root)) == LIMIT


def test_a_page_of_a_cut_search_that_cannot_be_read_is_fetched_with_the_same_cut_next_time(
    root: Path,
    arxiv: FakeArxiv,
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Cut at 30: a page read after the skipped one, so the next cut does not read it again.
    monkeypatch.setattr(bf, "MAX_DEPTH", 30)
    day = day_of(29)
    cut_query = bf.cut_query("cat:cs.LG", day.isoformat())
    arxiv.unreadable.add((cut_query, 10))
    days = days_for(DEPTH)

    first = cli(root, "ingest", "--backfill", str(days))

    assert first.returncode == 2
    assert f"results 10 to 19 (papers up to {day.isoformat()}) left out" in first.stderr
    state = progress(root)
    assert state.gaps == [[10, 19, 120 - 3 * (29 // PER_DAY), int(f"{day:%Y%m%d}")]]
    calls.clear()

    again = cli(root, "ingest", "--backfill", str(days))

    assert again.returncode == 0, again.stdout + again.stderr
    assert cuts(calls) == [(f"{day:%Y%m%d}", 10)]
    assert arxiv.wanted() <= set(backfilled(root))
    assert progress(root).gaps == []


def test_a_longer_backfill_after_a_shorter_one_fetches_the_older_papers_its_last_page_left_out(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(10))).returncode == 0
    assert set(backfilled(root)) == arxiv.wanted(10)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(12)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "already backfilled" not in out.stderr
    assert set(backfilled(root)) == arxiv.wanted(12)
    # From the day before the first backfill's cutoff, not from where its offsets ended.
    assert cuts(calls)[0] == (f"{day_of(3 * 10) - timedelta(1):%Y%m%d}", 0)


def test_a_range_filled_by_a_shorter_backfill_keeps_its_older_papers_for_the_longer_one(
    root: Path,
    arxiv: FakeArxiv,
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not cut: no later page of the sweep reads the range again.
    monkeypatch.setattr(bf, "MAX_DEPTH", 10_000)
    arxiv.limit = 1000
    arxiv.unreadable.add(("cat:cs.LG", 60))  # papers 60-69, 21 to 24 days back
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2

    shorter = cli(root, "ingest", "--backfill", str(days_for(5)))

    assert shorter.returncode == 0, shorter.stdout + shorter.stderr
    assert progress(root).gaps == []
    calls.clear()
    longer = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))
    assert longer.returncode == 0 and calls == []
    assert arxiv.wanted() <= set(backfilled(root))


def test_an_empty_first_page_of_a_cut_search_is_not_taken_for_a_mistyped_category(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    day = day_of(19)
    arxiv.empty.add((bf.cut_query("cat:cs.LG", day.isoformat()), 0))

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 2
    assert "check its name" not in out.stderr
    assert f"an empty page at result 0 (papers up to {day.isoformat()}) twice" in out.stderr


def test_an_answer_cut_short_inside_an_entry_is_asked_for_again_from_that_entry(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    arxiv.cut_short.add(("cat:cs.LG", 0))

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert cuts(calls)[:2] == [(None, 0), (None, 9)]  # the cut entry was not counted
    # Named by category and result, as an unreadable page is: the parser knows neither.
    assert "arxiv cs.LG: the page at result 0: feed is malformed (" in out.stderr
    stored = backfilled(root)
    assert arxiv.wanted() <= set(stored)
    assert stored["2611.30009"].abstract == "About paper 9 on graphs."


def test_a_shorter_backfill_after_a_longer_one_was_stopped_keeps_where_the_longer_one_got(
    root: Path,
    arxiv: FakeArxiv,
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resume = ctrl_c_after(4, calls, monkeypatch)
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    resume()
    calls.clear()

    shorter = cli(root, "ingest", "--backfill", str(days_for(5)))

    assert shorter.returncode == 0, shorter.stdout + shorter.stderr
    assert calls == [] and "already backfilled" in shorter.stderr
    longer = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))
    assert longer.returncode == 0, longer.stdout + longer.stderr
    # On from the oldest day the longer one reached (paper 37), not from the newest papers.
    assert cuts(calls)[0] == (f"{day_of(37):%Y%m%d}", 0)
    assert arxiv.wanted() <= set(backfilled(root))


def test_a_purge_while_a_backfill_runs_purges_nothing_and_says_why(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(5))).returncode == 0
    before = set(backfilled(root))

    with backfill_lock(load_config(root / "digest.toml").data_dir):
        out = cli(root, "papers", "purge", "--source", "arxiv")

    assert out.returncode == 1
    assert "a backfill is running on this site" in out.stderr and "nothing was purged" in out.stderr
    assert set(backfilled(root)) == before and progress(root).finished


def test_a_backfill_with_nothing_new_still_fits_a_vocabulary_that_is_missing(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(5))).returncode == 0
    fitted = load_config(root / "digest.toml").data_dir / "models" / "vocabulary.npz"
    assert fitted.exists()
    fitted.unlink()  # as a fit stopped by Ctrl-C leaves it

    again = cli(root, "ingest", "--backfill", str(days_for(5)))

    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert fitted.exists()


def test_a_page_skipped_just_before_a_cut_is_read_by_the_cut_search_not_left_missing(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    arxiv.unreadable.add(("cat:cs.LG", 10))  # the last page before the first cut

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr  # nothing is missing
    assert "1 failed (their papers read later in this run: nothing missing)" in out.stdout
    day = day_of(9).isoformat()  # the oldest of the one page read before the cut
    assert f"results 10 to 19, left out, are read by the search cut at {day} instead" in out.stderr
    assert "still missing" not in out.stderr
    assert arxiv.wanted() <= set(backfilled(root)) and progress(root).gaps == []
    calls.clear()
    again = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))
    assert again.returncode == 0 and calls == []


def test_a_gap_saved_before_searches_were_cut_is_read_as_one_of_the_uncut_search(
    root: Path,
) -> None:
    store = Store(load_config(root / "digest.toml").database_url)
    store.upgrade()
    old: dict[str, Any] = {
        "source": "arxiv",
        "category": "cs.LG",
        "query": "cat:cs.LG",
        "began": "2026-11-30",
        "until": "2026-10-31",
        "gaps": [[10, 19, 500]],
    }
    store.set_control(key_of("arxiv", "cs.LG"), json.dumps(old))

    state = load(store, key_of("arxiv", "cs.LG"))

    assert state is not None and state.gaps == [[10, 19, 500, 0]] and state.upto is None


def progress(root: Path) -> Any:
    state = load(Store(load_config(root / "digest.toml").database_url), key_of("arxiv", "cs.LG"))
    assert state is not None
    return state


def test_a_single_day_with_more_results_than_the_cut_depth_is_read_to_its_end(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    # A day of 25 submissions (25,000 at arXiv's scale), deeper than a cut search goes
    # (20) but within what arXiv serves of one search (30): cut at that day, the search
    # cannot be cut any further, so it reads on past the depth instead of looping on it.
    busy = LISTING_DAY - timedelta(8)
    arxiv.papers = [p for p in arxiv.papers if p[2] != busy]
    crowd = [(f"2611.{40000 + n:05d}", f"Paper {n} of a busy day", busy) for n in range(25)]
    at = next(i for i, p in enumerate(arxiv.papers) if p[2] < busy)
    arxiv.papers[at:at] = crowd

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    assert {pid for pid, _, _ in crowd} <= set(backfilled(root))
    deep = [(cut, start) for cut, start in cuts(calls) if cut == f"{busy:%Y%m%d}"]
    assert (f"{busy:%Y%m%d}", 20) in deep  # past the depth, within arXiv's limit
    assert len(calls) == len(set(cuts(calls)))  # no page asked twice
