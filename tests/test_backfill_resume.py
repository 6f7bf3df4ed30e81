"""A backfill begun again days after the last one. arXiv's offsets have moved by every paper
listed since, so the old place cannot be asked for as it was; the new run reads the papers
listed since the old one ran (from a week before it began: arXiv lists a paper days after its
submission), then goes on from where that one got to, instead of reading everything again.
Against the fake arXiv of tests/test_backfill_deep.py (30 results a query, a cut at 20 deep,
pages of 10), whose newest days are held back until "later"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from digest.config import load_config
from digest.ingest.backfill_progress import Pass, key_of, load, save
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
        aged(root, BEGAN)
        arxiv.papers[:0] = held

    return submit


def aged(root: Path, began: date) -> None:
    """The saved pass as one begun on ``began``."""
    store = Store(load_config(root / "digest.toml").database_url)
    key = key_of("arxiv", "cs.LG")
    state = load(store, key)
    assert state is not None
    state.began = began.isoformat()
    save(store, key, state)


def asked(made: Calls) -> list[tuple[str | None, int]]:
    return cuts(made)


def progress(root: Path) -> Pass:
    state = load(Store(load_config(root / "digest.toml").database_url), key_of("arxiv", "cs.LG"))
    assert state is not None
    return state


def test_a_stopped_backfill_begun_again_days_later_reads_the_new_papers_then_goes_on_where_it_was(
    root: Path,
    arxiv: FakeArxiv,
    later: Callable[[Path], None],
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resume = ctrl_c_after(7, calls, monkeypatch)  # deep in its second cut search
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    resume()
    before = progress(root)
    assert before.upto is not None and not before.finished
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    assert f"the backfill begun {BEGAN} is too old to go on at its place" in out.stderr
    assert f"are read; going on from {before.reached}, where that one got to" in out.stderr
    # From the old pass's own place in its cut search, once the new papers are read.
    place = (f"{date.fromisoformat(before.upto):%Y%m%d}", before.start)
    assert place in asked(calls)
    assert asked(calls).index(place) <= 5  # the top-up: a week and a half of papers


def test_a_finished_backfill_begun_again_days_later_reads_only_the_papers_since(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    full = len(calls)
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "are read; the rest was fetched then" in out.stderr
    assert len(calls) < full / 2
    assert arxiv.wanted() <= set(backfilled(root))
    calls.clear()
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    assert calls == []  # done: nothing left to fetch


def test_papers_listed_after_the_old_backfill_though_submitted_before_it_began_are_read(
    root: Path, arxiv: FakeArxiv, calls: Calls
) -> None:
    # arXiv lists a paper when it is announced: the old pass, run on BEGAN + 1, saw only the
    # last of BEGAN's papers; two more were listed after it ran (a weekend, a holiday).
    held, arxiv.papers = arxiv.papers[:11], arxiv.papers[11:]
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    aged(root, BEGAN + timedelta(1))
    arxiv.papers[:0] = held

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))


def test_a_shorter_backfill_begun_again_days_later_for_more_days_goes_on_past_its_cutoff(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(15))).returncode == 0
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    # After the new papers: from the day before the shorter one's cutoff (what its last page
    # held past it was left out).
    until = LISTING_DAY - timedelta(1 + 15)
    assert (f"{until - timedelta(1):%Y%m%d}", 0) in asked(calls)


def test_ranges_of_an_old_cut_search_left_out_are_fetched_in_the_same_run(
    root: Path,
    arxiv: FakeArxiv,
    later: Callable[[Path], None],
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Cut at 30: a page read after the skipped one, so the next cut does not read it again.
    monkeypatch.setattr(deep.bf, "MAX_DEPTH", 30)
    cut = deep.day_of(29 + 3 * NEW_DAYS)  # the first cut, the new days held back
    arxiv.unreadable.add((deep.bf.cut_query("cat:cs.LG", cut.isoformat()), 10))
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    assert progress(root).gaps
    later(root)

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "too old to go on" in out.stderr and "still missing" not in out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    state = progress(root)
    assert state.gaps == [] and state.resume is None


def test_a_range_of_the_old_uncut_search_left_out_makes_it_read_everything_again(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    # Its offsets moved by every paper listed since: weeks of them would put the range past
    # the 30,000 results arXiv serves, and it would be asked for, empty, for ever.
    arxiv.unreadable.add(("cat:cs.LG", 0))
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    later(root)
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "too old to go on" not in out.stderr and "still missing" not in out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    assert progress(root).gaps == []


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
    assert progress(root).resume is not None
    aged(root, BEGAN)  # and this one too is days old now

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))


@pytest.mark.parametrize(
    "damage",
    [
        {"began": None},
        {"until": 5},
        {"gaps": [["a"]]},
        {"gaps": [[0, 9, 0, 5]]},  # no such day as a cut
        {"reached": "yesterday"},
        {"x": 1},
        {"added": None},
        {"start": "10"},
        {"finished": "no"},  # a string, and true
    ],
)
def test_a_saved_top_up_whose_old_pass_does_not_read_as_one_is_read_all_again(
    root: Path, arxiv: FakeArxiv, calls: Calls, damage: dict[str, object]
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(5))).returncode == 0
    store = Store(load_config(root / "digest.toml").database_url)
    state = progress(root)
    state.resume = {**asdict(state), **damage}
    state.pages, state.reached, state.finished, state.start = 0, None, False, 0
    save(store, key_of("arxiv", "cs.LG"), state)

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert arxiv.wanted() <= set(backfilled(root))


def test_a_top_up_whose_old_pass_left_out_a_range_of_its_uncut_search_reads_all_again(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    # As the first release of top-ups saved it: the old pass whole, its uncut range with it,
    # measured when arXiv had 60 fewer results.
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    later(root)
    old = progress(root)
    old.gaps = [[10, 19, 60, 0]]
    top_up = Pass(old.source, old.category, old.query, shared.TODAY.isoformat(), old.until)
    top_up.resume = asdict(old)
    save(Store(load_config(root / "digest.toml").database_url), key_of("arxiv", "cs.LG"), top_up)

    for _ in range(2):
        out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))
        assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))


def test_a_top_up_that_read_nothing_before_it_aged_still_goes_on_from_the_old_pass(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 0
    later(root)
    arxiv.unreadable |= {("cat:cs.LG", 0), ("cat:cs.LG", 10)}  # two bad pages: it stops
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    aged(root, BEGAN)

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "too old to go on" in out.stderr  # the old pass, not everything again
    assert arxiv.wanted() <= set(backfilled(root))


def test_a_shorter_top_up_keeps_how_deep_the_unfinished_old_pass_went(
    root: Path,
    arxiv: FakeArxiv,
    later: Callable[[Path], None],
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resume = ctrl_c_after(9, calls, monkeypatch)  # deep, not finished
    assert cli(root, "ingest", "--backfill", str(days_for(DEPTH))).returncode == 2
    resume()
    old = progress(root)
    later(root)
    assert cli(root, "ingest", "--backfill", str(days_for(12))).returncode == 0
    calls.clear()

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
    assert old.upto is not None
    # On from the old pass's own place, not from the shorter run's cutoff down again.
    assert asked(calls)[0] == (f"{date.fromisoformat(old.upto):%Y%m%d}", old.start)


def test_the_join_line_says_when_this_run_already_reads_older_papers_than_the_old_pass(
    root: Path, arxiv: FakeArxiv, later: Callable[[Path], None], calls: Calls
) -> None:
    assert cli(root, "ingest", "--backfill", str(days_for(8))).returncode == 0
    later(root)

    out = cli(root, "ingest", "--backfill", str(days_for(DEPTH)))

    assert out.returncode == 0, out.stdout + out.stderr
    assert "fetched then" not in out.stderr
    assert "are read; this run already reads older papers than that one did" in out.stderr
    assert arxiv.wanted() <= set(backfilled(root))
