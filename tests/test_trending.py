"""The Hugging Face daily email this service began from: a profile that asks only for trending
papers, on a real Hugging Face daily file, through a real run into a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.config import Config, SmtpConfig, SourceConfig, WebConfig
from digest.errors import ProfileError
from digest.profiles import load_profile
from digest.service.pipeline import run
from digest.store import Store
from tests.conftest import SHARED, SmtpServer, write_profile

pytestmark = pytest.mark.shared_data

HF = SHARED / "hf_daily_papers" / "hf_daily_papers_2025-06-10.json"
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


def by_upvotes(path: Path) -> list[tuple[int, str]]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    return sorted(((-e["paper"]["upvotes"], e["paper"]["id"]) for e in entries), key=lambda x: x[0])


def config(tmp_path: Path, smtp: SmtpServer, feed: Path = HF) -> Config:
    key = tmp_path / "key"
    key.write_text("k" * 40)
    return Config(
        data_dir=tmp_path / "data",
        subscribers_dir=tmp_path / "subscribers",
        smtp=SmtpConfig(host="127.0.0.1", port=smtp.port, from_address="d@papers.example.org"),
        web=WebConfig(base_url="https://papers.example.org", secret_key_file=key),
        sources=[SourceConfig(name="hf", kind="hf-daily", url=feed.as_uri())],
    )


def text_part(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return str(msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "profile",
    ['mode = "trending"\nmax_papers = 5\n', "trending_weight = 1.0\nmax_papers = 5\n"],
)
def test_a_trending_only_profile_gets_the_most_upvoted_papers_best_first(
    tmp_path: Path, smtp_server: SmtpServer, store: Store, profile: str
) -> None:
    write_profile(tmp_path / "subscribers", "t", 'email = "t@example.org"\n' + profile)
    report = run(config(tmp_path, smtp_server), store, now=NOW)
    assert report.count("sent") == 1, report.results
    sent = store.delivery("t@example.org", NOW.date())
    assert sent is not None
    expected = by_upvotes(HF)[:5]
    assert set(sent.paper_ids) == {pid for _, pid in expected}  # 6th has 20: no tie at the cut
    text = text_part(smtp_server.received[0].data)
    shown = [int(n) for n in re.findall(r"\((\d+) upvotes?\)", text)]
    assert shown == [-n for n, _ in expected]  # each with its count, best first
    assert text.count("https://huggingface.co/papers/") == 5
    assert "most upvoted" in text
    # Not ranked for the reader: no "more / less like this" that would change nothing.
    raw = smtp_server.received[0].data
    assert b"/f/" not in raw and "Less like this" not in text


def test_min_upvotes_skips_a_quiet_day_and_says_why(
    tmp_path: Path, smtp_server: SmtpServer, store: Store
) -> None:
    write_profile(
        tmp_path / "subscribers",
        "t",
        'email = "t@example.org"\nmode = "trending"\nmin_upvotes = 1000\n',
    )
    report = run(config(tmp_path, smtp_server), store, now=NOW)
    assert [(r.status, r.detail) for r in report.results] == [
        ("nothing-new", "none of 28 Hugging Face papers has 1000 upvotes")
    ]
    assert smtp_server.received == []


def test_a_trending_reader_whose_configured_source_failed_is_pointed_at_its_last_fetch(
    tmp_path: Path, smtp_server: SmtpServer, store: Store
) -> None:
    profile = 'email = "t@example.org"\nmode = "trending"\nmax_papers = 50\n'
    write_profile(tmp_path / "subscribers", "t", profile)
    run(config(tmp_path, smtp_server), store, now=NOW)  # every paper of the day sent
    # The next day the configured source's fetch fails: nothing new, and not because no
    # source is configured (what the reader's row used to ask).
    gone = config(tmp_path, smtp_server, tmp_path / "gone.json")
    report = run(gone, store, now=NOW + timedelta(days=1))
    said = "no new Hugging Face papers (`digest status` shows the source's last fetch)"
    assert [(r.status, r.detail) for r in report.results] == [("nothing-new", said)]
    assert len(smtp_server.received) == 1


def test_a_paper_that_trends_again_the_next_day_is_not_sent_again_and_upvotes_refresh(
    tmp_path: Path, smtp_server: SmtpServer, store: Store
) -> None:
    write_profile(
        tmp_path / "subscribers",
        "t",
        'email = "t@example.org"\nmode = "trending"\nmax_papers = 3\n',
    )
    run(config(tmp_path, smtp_server), store, now=NOW)
    first = store.delivery("t@example.org", NOW.date())
    assert first is not None
    # The next day the same papers are still listed, with more upvotes than ever.
    entries = json.loads(HF.read_text(encoding="utf-8"))
    for e in entries:
        e["paper"]["upvotes"] += 500 if e["paper"]["id"] in first.paper_ids else 1
    later = tmp_path / "hf-next.json"
    later.write_text(json.dumps(entries), encoding="utf-8")
    report = run(config(tmp_path, smtp_server, later), store, now=NOW + timedelta(days=1))
    assert report.count("sent") == 1, report.results
    second = store.delivery("t@example.org", (NOW + timedelta(days=1)).date())
    assert second is not None and not set(second.paper_ids) & set(first.paper_ids)
    top = store.papers(first.paper_ids)
    assert all((p.upvotes or 0) >= 500 for p in top.values())  # refreshed at the fetch


def test_an_unknown_mode_names_the_file_and_key(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "t", 'email = "t@example.org"\nmode = "popular"\n')
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert "t.toml: mode:" in str(err.value)
