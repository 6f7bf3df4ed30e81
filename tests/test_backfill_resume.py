"""A backfill begun again days after the last one. arXiv's offsets have moved by every paper
submitted since, so the old place cannot be asked for as it was; the new run reads the papers
submitted since the old one began, then goes on from where that one got to, instead of reading
everything it holds again. Against the fake arXiv of tests/test_backfill_deep.py (30 results a
query, a cut at 20 deep, pages of 10), whose newest days are held back until "later"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from digest.config import load_config
from digest.ingest.backfill_progress import key_of, load, save
from digest.store import Store
from tests import test_backfill as shared
from tests import test_backfill_deep as deep
from tests.test_backfill import LISTING_DAY, backfilled, cli, ctrl_c_after, days_for
from tests.test_backfill_deep import DEPTH, FakeArxiv, cuts

clock, calls, api = shared.clock, shared.calls, shared.api
root, arxiv = deep.root, deep.arxiv
Calls = list[tuple[float, dict[str, str]]]

NEW_DAYS = 3  # days of papers submitted after the first backfill
BEGAN = LISTING_DAY - timedelta(1 + NEW_DAYS)  # the newest day the first backfill saw


@pytest.fixture
def later(arxiv: FakeArxiv) -> Callable[[Path], None]:
    """The fake without its newest NEW_DAYS days; the returned function makes the saved pass
    one begun on BEGAN (too old to go on at its offsets) and submits those days."""
    held = [p for p in arxiv.papers if p[2] > BEGAN]
    arxiv.papers = [p for p in arxiv.papers if p[2] <= BEGAN]

    def submit(root: Path) -> None:
        store = Store(load_config(root / "digest.toml").database_url)
        key = key_of("arxiv", "cs.LG")
        state = load(store, key)
        assert state is not None
        state.began = BEGAN.isoformat()
        save(store, key, state)
        arxiv.papers[:0] = held

    return submit


def asked(made: Calls) -> list[tuple[str | None, int]]:
    return cuts(made)


def test_a_stopped_backfill_begun_again_days_later_reads_the_new_papers_then_goes_on_where_it_was(
    root: Path,
    arxiv: FakeArxiv,
    later: Callable[[Path], None],
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resume = ctrl_c_after(3, calls, monkeypatch)  # in its first cut search, 10 deep
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    resume()
    first = asked(calls)
    before = load(Store(load_config(root / "digest.toml").database_url), key_of("arxiv", "cs.LG"))
    assert before is not None and before.upto is not None and not before.finished
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    again = asked(calls)
    # The new papers from the top, then the old pass's own cut search at its own offset.
    assert again[:3] == [
        (None, 0),
        (None, 10),
        (f"{date.fromisoformat(before.upto):%Y%m%d}", before.start),
    ]
    assert not (set(again) - {(None, 0), (None, 10)}) & set(first)  # nothing read twice
    assert f"the backfill begun {BEGAN} is too old to go on at its place" in out.stderr
    assert f"the papers since {BEGAN} are read; the backfill begun then held back to" in out.stderr


def test_a_finished_backfill_begun_again_days_later_reads_only_the_papers_since(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert asked(calls) == [(None, 0), (None, 10)]
    assert arxiv.wanted() <= set(backfilled(root))
    calls.clear()
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    assert calls == []  # done: nothing left to fetch


def test_a_shorter_backfill_begun_again_days_later_for_more_days_goes_on_past_its_cutoff(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(10))).returncode == 0
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    # After the new papers: from the day before the shorter one's cutoff (what its last page
    # held past it was left out).
    until = LISTING_DAY - timedelta(1 + 10)
    assert asked(calls)[2] == (f"{until - timedelta(1):%Y%m%d}", 0)


def test_ranges_the_old_backfill_left_out_are_fetched_in_the_same_run_once_it_is_reached(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    arxiv.unreadable.add(("cat:cs.LG", 0))
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "left out before" in out.stderr and "still missing" not in out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    state = load(Store(load_config(root / "digest.toml").database_url), key_of("arxiv", "cs.LG"))
    assert state is not None and state.gaps == [] and state.resume is None


def test_a_top_up_itself_left_for_days_loses_nothing(
    root: Path,
    arxiv: FakeArxiv,
    later: Callable[[Path], None],
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    later(root)
    resume = ctrl_c_after(len(calls) + 1, calls, monkeypatch)  # stopped after its first page
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    resume()
    store = Store(load_config(root / "digest.toml").database_url)
    state = load(store, key_of("arxiv", "cs.LG"))
    assert state is not None and state.resume is not None
    state.began = BEGAN.isoformat()  # and this one too is days old now
    save(store, key_of("arxiv", "cs.LG"), state)

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
