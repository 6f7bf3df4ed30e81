"""A personal digest with a "Trending on Hugging Face" section (`trending_section = N`): the
day's most upvoted papers, apart from the reader's own picks and never repeating them, read
from the real Hugging Face daily file through the real CLI into a real SMTP server."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.config import load_config
from digest.service.pipeline import run
from digest.store import Store
from tests.conftest import SHARED, SmtpServer, bodies, digest_here, write_profile, write_small_site

pytestmark = pytest.mark.shared_data

HF = SHARED / "hf_daily_papers" / "hf_daily_papers_2025-06-10.json"
DAY = "2025-06-10"
PROFILE = """\
email = "ada@example.org"
name = "Ada"
timezone = "UTC"
max_papers = 3
trending_section = 3
[interests]
keywords = ["reinforcement learning", "medical"]
"""


def site(root: Path, smtp: SmtpServer, feed: Path = HF) -> Path:
    return write_small_site(
        root, smtp.port, f'[[sources]]\nname = "hf"\nkind = "hf-daily"\nurl = "{feed.as_uri()}"\n'
    )


def upvotes(path: Path = HF) -> dict[str, int]:
    return {e["paper"]["id"]: e["paper"]["upvotes"] for e in json.loads(path.read_text())}


def sections(text: str) -> dict[str, list[str]]:
    """The plain text's papers (their arXiv ids) under each section heading."""
    out: dict[str, list[str]] = {}
    current = ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1] and set(lines[i + 1]) == {"="}:
            current = line
        m = re.match(r"\s+Abstract: https://arxiv\.org/abs/(\S+)", line)
        if m:
            out.setdefault(current, []).append(m.group(1))
    return out


def test_a_personal_digest_ends_with_three_trending_papers_none_of_them_its_own_picks(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    write_profile(root / "subscribers", "ada", PROFILE)
    done = digest_here("run", cwd=root)
    assert done.returncode == 0, done.stdout
    [message] = smtp_server.received
    text, html = bodies(message.data)
    found = sections(text)
    assert list(found) == ["Picked for you", "Trending on Hugging Face"], text
    mine, trending = found["Picked for you"], found["Trending on Hugging Face"]
    assert len(trending) == 3 and not set(mine) & set(trending)
    # The three most upvoted of the day that are not Ada's own picks, most upvoted first
    # (equal upvotes: the newer paper first).
    votes = upvotes()
    rest = sorted((p for p in votes if p not in mine), key=lambda p: (votes[p], p), reverse=True)
    assert trending == rest[:3]
    assert "2506.08007" in mine  # the day's top paper is hers, so the section goes on past it
    # What the reader sees in the HTML: both headings, each paper once, an upvote count as the
    # reason of a trending paper.
    assert html.count(">Picked for you</td>") == 1
    assert html.count(">Trending on Hugging Face</td>") == 1
    for pid in mine + trending:
        assert html.count(f'href="https://arxiv.org/abs/{pid}"') == 2  # title and Abstract link
    assert f"{votes[trending[0]]} upvotes on Hugging Face" in text
    subject = re.search(rb"^Subject: (.*)$", message.data, re.M)
    assert subject is not None
    assert subject.group(1).decode().startswith(f"{len(mine)} new papers for you and 3 trending")


def test_the_section_honours_the_readers_excludes_and_the_digest_is_repeatable(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    write_profile(root / "subscribers", "ada", PROFILE + 'exclude = ["MiniCPM4"]\n')
    digest_here("run", cwd=root)
    [message] = smtp_server.received
    text, _ = bodies(message.data)
    assert "2506.07900" not in text  # MiniCPM4, the most upvoted paper not among Ada's picks
    assert len(sections(text)["Trending on Hugging Face"]) == 3
    # The preview of the digest sent shows the same sections, from the stored delivery.
    shown = digest_here("preview", "ada@example.org", "--text", cwd=root)
    assert sections(shown.stdout) == sections(text)


def test_the_section_alone_sends_nothing_on_a_day_with_no_new_papers(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    write_profile(root / "subscribers", "ada", PROFILE)
    cfg, noon = load_config(root / "digest.toml"), datetime(2025, 6, 10, 12, tzinfo=UTC)
    cfg.data_dir.mkdir()
    store = Store(cfg.database_url)
    store.upgrade()
    try:
        run(cfg, store, now=noon)
        # The next day the same file: nothing new, so no email of yesterday's runners-up.
        nxt = run(cfg, store, now=noon + timedelta(days=1))
    finally:
        store.dispose()
    assert len(smtp_server.received) == 1
    assert [r.status for r in nxt.results] == ["nothing-new"]
    assert nxt.results[0].detail.startswith("no new papers since the last digest")


def test_a_day_with_no_personal_match_sends_the_trending_section_alone_and_says_so(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    profile = PROFILE.replace('"reinforcement learning", "medical"', '"quantum chromodynamics"')
    write_profile(
        root / "subscribers", "ada", profile.replace("[interests]", "min_score = 1.0\n[interests]")
    )
    digest_here("run", cwd=root)
    [message] = smtp_server.received
    text, html = bodies(message.data)
    assert "Nothing new matched your profile" in text
    assert list(sections(text)) == ["Trending on Hugging Face"]
    assert "here is what is trending on Hugging Face" in html


def test_a_trending_section_out_of_range_is_one_line_naming_the_file_and_key(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    write_profile(root / "subscribers", "ada", PROFILE.replace("= 3\n[", "= 99\n["))
    checked = digest_here("subscribers", "check", cwd=root)
    assert checked.returncode == 1
    [line] = [x for x in checked.stdout.splitlines() + checked.stderr.splitlines() if "ada" in x]
    assert "ada.toml" in line and "trending_section" in line and "20" in line


def test_check_warns_when_no_hugging_face_source_can_fill_the_section(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    write_profile(
        root / "subscribers", "ada", PROFILE.replace("timezone", "sources = []\ntimezone")
    )
    checked = digest_here("subscribers", "check", cwd=root)
    assert checked.returncode == 0
    assert "ada.toml: trending_section: no hf-daily source among its sources" in checked.stderr


def test_a_hugging_face_source_that_brings_nothing_new_stops_feeding_trending_after_the_lookback(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    write_profile(
        root / "subscribers", "t", 'email = "t@example.org"\nmode = "trending"\nmax_papers = 3\n'
    )
    write_profile(root / "subscribers", "ada", PROFILE)
    cfg = load_config(root / "digest.toml")
    cfg.data_dir.mkdir()
    store = Store(cfg.database_url)
    store.upgrade()
    start = datetime.now(UTC)  # the papers' records are stamped with the real time at ingest
    try:
        first = run(cfg, store, now=start)
        # The same file every day (the source is dead): the next day's runners-up still count...
        second = run(cfg, store, now=start + timedelta(days=1))
        # ...but not once its records are older than lookback_days (3).
        later = run(cfg, store, now=start + timedelta(days=5))
    finally:
        store.dispose()
    by = lambda report: {r.email: (r.status, r.detail) for r in report.results}  # noqa: E731
    assert by(first)["t@example.org"][0] == "sent"
    assert by(second)["t@example.org"][0] == "sent"
    status, detail = by(later)["t@example.org"]
    assert status == "nothing-new" and detail.startswith("no new Hugging Face papers")
    assert len([m for m in smtp_server.received if m.rcpt_tos == ["t@example.org"]]) == 2


def test_a_trending_section_in_a_trending_digest_is_refused(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    root = site(tmp_path, smtp_server)
    write_profile(
        root / "subscribers",
        "t",
        'email = "t@example.org"\nmode = "trending"\ntrending_section = 3\n',
    )
    checked = digest_here("subscribers", "check", cwd=root)
    assert checked.returncode == 1
    assert 't.toml: trending_section: not with mode = "trending"' in checked.stderr
