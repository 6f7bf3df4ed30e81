"""`digest ingest --backfill DAYS` when arXiv's API or the operator does something unexpected:
empty answers, unreadable and HTML pages, a purge, two backfills at once, two sources sharing a
category. Through the real CLI against the local HTTP server of tests/test_backfill.py, with
its fake clock (nothing sleeps for real) and the same helpers."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from digest.config import load_config
from digest.ingest import backfill as bf
from digest.ingest.backfill_progress import key_of, load
from digest.store import Store
from tests import test_backfill as shared
from tests.conftest import FeedServer, Route
from tests.test_backfill import (
    LISTING_DAY,
    atom,
    backfilled,
    cli,
    day_pages,
    days_for,
    site_at,
    starts,
)

# The fixtures of tests/test_backfill.py, by the names its tests use.
api, calls, clock = shared.api, shared.calls, shared.clock
Calls = list[tuple[float, dict[str, str]]]


def progress(root: Path, category: str = "cs.LG", source: str = "arxiv") -> Any:
    store = Store(load_config(root / "digest.toml").database_url)
    return load(store, key_of(source, category))


def html_page() -> Route:
    return Route(
        b"<!DOCTYPE html><html><head><title>Maintenance</title></head>"
        b"<body><p>arXiv is being updated; back soon.</p></body></html>",
        content_type="text/html; charset=utf-8",
    )


def second_page_unreadable(api: FeedServer) -> list[bytes]:
    """Four pages of ten (40 results) where the second comes back as an HTML page; the four
    real pages, for the runs after."""
    pages = day_pages(4, total=40)
    api.routes["/api/query"] = [Route(pages[0]), html_page(), Route(pages[2]), Route(pages[3])]
    return pages


# -- empty answers -------------------------------------------------------------------------


def test_an_empty_first_answer_twice_stops_the_category_unfinished_and_a_run_again_goes_on(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    # arXiv's known hiccup: a valid query answered with no entries and totalResults 0.
    api.routes["/api/query"] = [Route(atom([], total=0))]
    days = days_for(12)

    out = cli(root, "ingest", "--backfill", str(days))

    assert out.returncode == 2, out.stdout + out.stderr
    assert starts(calls) == [0, 0]
    assert calls[1][0] - calls[0][0] >= 3.0
    assert "arxiv cs.LG: an empty page at result 0; asking again" in out.stderr
    assert (
        "arxiv cs.LG: arXiv returned no papers for cs.LG (asked twice): check its name; "
        "the next run asks again"
    ) in out.stderr
    assert "not finished: arxiv cs.LG;" in out.stderr
    assert progress(root) is None  # nothing recorded as done: the next run starts afresh
    calls.clear()
    api.routes["/api/query"] = [Route(p) for p in day_pages(3)]

    again = cli(root, "ingest", "--backfill", str(days))

    assert again.returncode == 0, again.stdout + again.stderr
    assert "already backfilled" not in again.stderr
    assert starts(calls) == [0, 10, 20]
    assert len(backfilled(root)) == 26  # 13 days of 2


def test_a_mistyped_category_is_named_with_the_closest_real_one_and_never_counts_as_done(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api, categories='["cs.LGG"]')
    api.routes["/api/query"] = [Route(atom([], total=0))]

    for _ in range(2):
        out = cli(root, "ingest", "--backfill", "5")
        assert out.returncode == 2, out.stdout + out.stderr
        assert (
            "arxiv cs.LGG: arXiv returned no papers for cs.LGG (asked twice): check its name "
            "('cs.LGG' is not an arXiv category; did you mean cs.LG?)"
        ) in out.stderr
        assert "None" not in out.stdout + out.stderr
    assert starts(calls) == [0, 0, 0, 0]


def test_an_empty_page_saying_no_results_after_some_papers_is_not_taken_for_their_end(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    pages = day_pages(3)
    api.routes["/api/query"] = [Route(pages[0]), Route(atom([], total=0, start=10))]
    days = days_for(12)

    out = cli(root, "ingest", "--backfill", str(days))

    assert out.returncode == 2
    assert "arXiv sent an empty page at result 10 twice" in out.stderr
    assert not progress(root).finished
    calls.clear()
    api.routes["/api/query"] = [Route(pages[1]), Route(pages[2])]
    assert cli(root, "ingest", "--backfill", str(days)).returncode == 0
    assert starts(calls) == [10, 20]


# -- unreadable pages and the ranges they leave ----------------------------------------------


def test_an_html_page_is_unreadable_not_empty_and_the_next_run_fetches_its_range_first(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    pages = second_page_unreadable(api)
    days = days_for(30)

    first = cli(root, "ingest", "--backfill", str(days))

    assert first.returncode == 2, first.stdout + first.stderr
    assert "empty" not in first.stderr
    unreadable = "arxiv cs.LG: the page at result 10 is unreadable: arXiv sent an HTML page"
    assert unreadable in first.stderr
    assert "results 10 to 19 left out for now" in first.stderr
    assert "arxiv cs.LG: results 10 to 19 still missing; the next run fetches them" in first.stderr
    assert starts(calls) == [0, 10, 20, 30]
    assert len(backfilled(root)) == 30
    assert progress(root).gaps == [[10, 19, 40, 0]]  # 0: of the search not cut by date
    calls.clear()
    api.routes["/api/query"] = [Route(pages[1])]

    second = cli(root, "ingest", "--backfill", str(days))

    assert second.returncode == 0, second.stdout + second.stderr
    assert "arxiv cs.LG: fetching results 10 to 19, left out before" in second.stderr
    assert starts(calls) == [10]  # the range alone: the rest was fetched the first time
    assert calls[0][1]["max_results"] == "10"
    assert len(backfilled(root)) == 40
    assert progress(root).gaps == []
    calls.clear()

    third = cli(root, "ingest", "--backfill", str(days))

    assert third.returncode == 0 and calls == []
    last = (LISTING_DAY - timedelta(20)).isoformat()
    assert (
        f"arxiv cs.LG: already backfilled back to {last}, the end of arXiv's results; nothing to do"
    ) in third.stderr


def test_a_page_that_is_not_xml_is_named_by_its_category_and_result_and_left_out(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    pages = day_pages(4, total=40)
    junk = Route(b'{"error": "rate limited"}', content_type="application/json")
    api.routes["/api/query"] = [Route(pages[0]), junk, Route(pages[2]), Route(pages[3])]

    out = cli(root, "ingest", "--backfill", str(days_for(30)))

    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = [x for x in out.stderr.splitlines() if "unreadable" in x]
    assert line.startswith("arxiv cs.LG: the page at result 10 is unreadable: "), line
    assert "cannot parse" in line and "Traceback" not in out.stderr
    assert "results 10 to 19 left out for now" in out.stderr
    assert len(backfilled(root)) == 30


def test_a_skipped_range_is_sought_further_down_by_the_papers_submitted_since(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    second_page_unreadable(api)
    days = days_for(30)
    assert cli(root, "ingest", "--backfill", str(days)).returncode == 2
    calls.clear()
    # Two papers were submitted since: the results skipped at 10-19 are now at 12-21.
    moved = day_pages(4, total=42)
    api.routes["/api/query"] = [Route(moved[1]), Route(atom([], total=42, start=20))]

    again = cli(root, "ingest", "--backfill", str(days))

    assert [(p["start"], p["max_results"]) for _, p in calls] == [
        ("10", "10"),
        ("20", "2"),
        ("20", "2"),  # an empty answer is asked again once
    ]
    assert progress(root).gaps == [[20, 21, 42, 0]]  # the second answer was empty: kept
    assert again.returncode == 2


def test_a_range_still_unreadable_the_next_time_stays_until_a_run_fetches_it(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    pages = second_page_unreadable(api)
    days = days_for(30)
    assert cli(root, "ingest", "--backfill", str(days)).returncode == 2
    calls.clear()
    api.routes["/api/query"] = [html_page()]

    second = cli(root, "ingest", "--backfill", str(days))

    assert second.returncode == 2
    assert starts(calls) == [10]
    assert "results 10 to 19 kept for the next run" in second.stderr
    assert "already backfilled" not in second.stderr
    assert progress(root).gaps == [[10, 19, 40, 0]]
    calls.clear()
    api.routes["/api/query"] = [Route(pages[1])]
    assert cli(root, "ingest", "--backfill", str(days)).returncode == 0
    assert starts(calls) == [10]
    assert len(backfilled(root)) == 40


# -- purging a source ----------------------------------------------------------------------


def test_purging_a_source_forgets_its_backfill_so_a_backfill_again_fetches_everything(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    pages = day_pages(2, total=20)
    api.routes["/api/query"] = [Route(p) for p in pages]
    days = days_for(30)
    assert cli(root, "ingest", "--backfill", str(days)).returncode == 0
    assert len(backfilled(root)) == 20

    purged = cli(root, "papers", "purge", "--source", "arxiv")

    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert "its backfill progress forgotten (1 category)" in purged.stdout
    assert backfilled(root) == {} and progress(root) is None
    calls.clear()
    api.routes["/api/query"] = [Route(p) for p in pages]
    again = cli(root, "ingest", "--backfill", str(days))
    assert again.returncode == 0, again.stdout + again.stderr
    assert starts(calls) == [0, 10]
    assert len(backfilled(root)) == 20


# -- two backfills at once -----------------------------------------------------------------


def test_a_second_backfill_while_one_runs_exits_at_once_and_a_killed_one_leaves_no_lock(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    # The first backfill's first request hangs here while the second one starts.
    api.routes["/api/query"] = [Route(day_pages(1)[0], delay=60)]
    env = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
    command = [sys.executable, "-m", "digest", "--config", str(root / "digest.toml")]
    first = subprocess.Popen(
        [*command, "ingest", "--backfill", "5"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            if api.requests:
                break
            time.sleep(0.1)
        assert api.requests, "the first backfill never asked"
        lock = root / "data" / "backfill.lock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600

        second = subprocess.run(
            [*command, "ingest", "--backfill", "5"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.strip().splitlines() == [
            f"Error: a backfill is already running (pid {first.pid}) on this site; run this "
            "again once it has ended (it goes on from where that one got to)"
        ]
        assert len(api.requests) == 1  # the second one asked nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    api.routes["/api/query"] = [Route(p) for p in day_pages(2, total=20)]

    after = cli(root, "ingest", "--backfill", str(days_for(30)))

    assert after.returncode == 0, after.stdout + after.stderr
    assert starts(calls) == [0, 10]


# -- sources sharing a category --------------------------------------------------------------


def test_a_category_two_sources_name_is_fetched_once_and_stored_under_the_first(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api, categories='["cs.LG", "stat.ML"]')
    with (root / "digest.toml").open("a") as toml:
        toml.write(
            '[[sources]]\nname = "arxiv-ml"\nkind = "arxiv-rss"\n'
            f'url = "{api.url("/ml.xml")}"\ncategories = ["stat.ML", "math.ST"]\n'
        )
    api.routes["/api/query"] = [Route(day_pages(1, per_page=4, total=4)[0])]

    out = cli(root, "ingest", "--backfill", str(days_for(30)))

    assert out.returncode == 0, out.stdout + out.stderr
    queries = [p["search_query"] for _, p in calls]
    assert queries == ["cat:cs.LG", "cat:stat.ML", "cat:math.ST"]
    assert (
        "arxiv-ml stat.ML: arxiv names it too; fetched once, its papers stored under arxiv"
        in out.stderr
    )
    assert progress(root, "stat.ML") is not None
    assert progress(root, "stat.ML", source="arxiv-ml") is None


# -- what the summary and the lines say ------------------------------------------------------


def test_after_ctrl_c_the_days_covered_count_every_category_not_only_those_reached(
    tmp_path: Path, api: FeedServer, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = site_at(tmp_path, api, categories='["cs.LG", "stat.ML"]')
    api.routes["/api/query"] = [Route(p) for p in day_pages(2, total=20)]
    days = days_for(30)
    counting = bf.fetch

    def fetch(url: str, **kw: Any) -> Any:
        if kw["params"]["search_query"] == "cat:stat.ML":
            raise KeyboardInterrupt  # Ctrl-C as the second category begins
        return counting(url, **kw)

    monkeypatch.setattr(bf, "fetch", fetch)

    out = cli(root, "ingest", "--backfill", str(days))

    assert out.returncode == 2
    assert "interrupted" in out.stderr
    assert f"0 of {days} days covered" in out.stdout  # cs.LG is done, stat.ML has nothing
    monkeypatch.setattr(bf, "fetch", counting)
    api.routes["/api/query"] = [Route(p) for p in day_pages(2, total=20)]
    again = cli(root, "ingest", "--backfill", str(days))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "arxiv cs.LG: already backfilled" in again.stderr
    assert f"{days} of {days} days covered" in again.stdout


def test_one_day_is_said_in_the_singular_and_a_done_category_names_its_day_not_none(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    # Every paper here is older than a day: the first page passes the cutoff.
    api.routes["/api/query"] = [Route(day_pages(1)[0])]

    out = cli(root, "ingest", "--backfill", "1")

    assert out.returncode == 0, out.stdout + out.stderr
    assert "arxiv cs.LG: fetching 1 day through the arXiv API" in out.stdout
    assert "1 of 1 day covered" in out.stdout
    again = cli(root, "ingest", "--backfill", "1")
    oldest = (LISTING_DAY - timedelta(5)).isoformat()
    assert f"arxiv cs.LG: already backfilled back to {oldest}; nothing to do" in again.stderr


def test_the_progress_bar_never_counts_more_days_than_were_asked_for(
    tmp_path: Path, api: FeedServer, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:

    screen = shared.terminal_screen(monkeypatch)
    root = site_at(tmp_path, api)
    api.routes["/api/query"] = [Route(p) for p in day_pages(2)]
    days = days_for(6)  # the second page reaches days older than that

    out = cli(root, "ingest", "--backfill", str(days))

    assert out.returncode == 0, out.stdout + out.stderr
    shown = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) days", screen.getvalue())]
    assert shown and all(done <= total == days for done, total in shown)
    assert (days, days) in shown


def test_backfilling_a_source_that_is_not_arxiv_rss_says_what_backfills(
    site: Path, calls: Calls
) -> None:
    out = cli(site, "ingest", "--source", "hf", "--backfill", "5")
    assert out.returncode == 1
    assert (
        "hf: a hf-daily source, not an arxiv-rss source with categories; only those backfill"
        in out.stderr
    )
    assert calls == []


def test_a_preview_before_the_first_listing_says_the_backfilled_papers_are_corpus_only(
    tmp_path: Path, api: FeedServer, calls: Calls
) -> None:
    root = site_at(tmp_path, api)
    api.routes["/api/query"] = [Route(p) for p in day_pages(2, total=20)]
    assert cli(root, "ingest", "--backfill", str(days_for(30))).returncode == 0

    preview = cli(root, "preview", "ada@example.org", "--text")

    said = preview.stdout + preview.stderr
    assert "no papers stored yet" not in said
    assert "no listing fetched yet (run `digest ingest`); the 20 backfilled papers" in said
    assert "corpus only" in said


@pytest.mark.parametrize(
    "sent",
    [(signal.SIGTERM,), (signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT)],
    ids=["sigterm", "sigterm-twice", "ctrl-c-twice"],
)
def test_sigterm_stops_a_backfill_as_ctrl_c_does_with_a_line_saying_how_to_go_on(
    tmp_path: Path, api: FeedServer, sent: tuple[signal.Signals, ...]
) -> None:
    """A service manager's stop or a job's timeout: it exited 143 without a word. A second
    signal while the first is handled must not cut the closing lines short."""
    root = site_at(tmp_path, api)
    api.routes["/api/query"] = Route(day_pages(1, total=10)[0], delay=10)
    command = [sys.executable, "-m", "digest", "--config", str(root / "digest.toml")]
    child = subprocess.Popen(
        [*command, "ingest", "--backfill", "30"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    deadline = time.monotonic() + 30
    while not api.requests and time.monotonic() < deadline:  # the first page is asked for
        time.sleep(0.05)
    for sig in sent:
        child.send_signal(sig)
        time.sleep(0.05)
    out, err = child.communicate(timeout=60)

    assert child.returncode == 2, out + err
    assert "Traceback" not in err
    assert "interrupted;" in err and "ingest --backfill 30` continues where it stopped" in err
    assert "backfill: 0 papers added" in out
