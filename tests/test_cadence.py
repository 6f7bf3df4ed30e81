"""Cadence: `frequency = "weekly"` with `weekday`, or a daily digest on some `days` only. A
weekly reader gets one digest on their day, ranking everything that arrived since the last one,
and none on the others; days without a new arXiv listing send nothing and say why. Through the
real CLI (on today's real date) and through runs over a simulated fortnight (only the clock
moved), into a real SMTP server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from digest.config import Config, SourceConfig
from digest.profiles import DAYS
from digest.service.pipeline import preview, run
from digest.store import Store
from tests.conftest import SmtpServer, digest_here, lines_by_file, write_profile

MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def listing(day: date) -> str:
    """A day's arXiv RSS listing: two papers a state-space reader wants, one they do not."""
    stamp = f"{day:%a, %d %b %Y} 00:00:00 -0500"
    items = []
    for n, title in enumerate(
        [
            f"State space models for the {day:%A} benchmark",
            f"Long context state space models, {day:%d %B}",
            f"Warehouse robots on {day:%A}",
        ]
    ):
        pid = f"2611.{day:%m%d}{n}"
        items.append(f"""<item><title>{title}</title>
<link>https://arxiv.org/abs/{pid}</link>
<description>arXiv:{pid}v1 Announce Type: new
Abstract: A paper of {day:%d %B}.</description>
<guid isPermaLink="false">oai:arXiv.org:{pid}v1</guid><category>cs.LG</category>
<pubDate>{stamp}</pubDate><arxiv:announce_type>new</arxiv:announce_type>
<dc:creator>A. Author</dc:creator></item>""")
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/"
 version="2.0"><channel><title>cs updates on arXiv.org</title>
<link>http://rss.arxiv.org/rss/cs</link><description>d</description>
<pubDate>{stamp}</pubDate>{"".join(items)}</channel></rss>"""


def readers(subs: Path) -> None:
    interests = '[interests]\nkeywords = ["state space models"]\n'
    write_profile(
        subs,
        "wendy",
        'email = "wendy@example.org"\ntimezone = "UTC"\nsend_at = "07:00"\nmax_papers = 30\n'
        'frequency = "weekly"\nweekday = "Monday"\n' + interests,
    )
    write_profile(
        subs, "dan", 'email = "dan@example.org"\ntimezone = "UTC"\nmax_papers = 30\n' + interests
    )


def fortnight(
    workspace: Config,
    store: Store,
    smtp_server: SmtpServer,
    days: list[datetime],
    quiet: tuple[date, ...] = (),
) -> dict[date, dict[str, tuple[str, str, list[str]]]]:
    """Run on each of these days after writing that day's listing (weekdays only: arXiv
    announces nothing on weekends). Per day: each reader's outcome, detail and papers sent."""
    subs = workspace.subscribers_dir
    for old in subs.glob("*.toml"):
        old.unlink()
    readers(subs)
    feed = subs.parent / "listing.xml"
    cfg = workspace.model_copy(
        update={"sources": [SourceConfig(name="arxiv", kind="arxiv-rss", url=feed.as_uri())]}
    )
    out = {}
    for now in days:
        if now.weekday() < 5:
            text = listing(now.date())
            if now.date() in quiet:  # a listing, but nothing a state-space reader wants
                text = text.replace("State space models", "Crop yields").replace(
                    "Long context state space models", "Soil moisture"
                )
            feed.write_text(text, encoding="utf-8")
        smtp_server.received.clear()
        report = run(cfg, store, now=now)
        sent = {m.rcpt_tos[0]: m.data.decode() for m in smtp_server.received}
        out[now.date()] = {
            r.email.split("@")[0]: (
                str(r.status),
                r.detail,
                [p for p in _ids(sent.get(r.email.lower(), ""))],
            )
            for r in report.results
        }
    return out


def _ids(raw: str) -> list[str]:
    import re

    return sorted(set(re.findall(r"arxiv\.org/abs/(2611\.\d{5})", raw)))


def test_a_weekly_reader_gets_one_digest_on_their_day_with_everything_since_the_last(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    days = [MONDAY + timedelta(days=n) for n in range(8)]  # Monday to the next Monday
    seen = fortnight(workspace, store, smtp_server, days)
    wendy = {
        day: outcome for day, by in seen.items() for who, outcome in by.items() if who == "wendy"
    }
    sent_on = [day for day, (status, _, _) in wendy.items() if status == "sent"]
    assert sent_on == [date(2026, 11, 23), date(2026, 11, 30)]
    for day, (status, detail, papers) in wendy.items():
        if day not in sent_on:
            assert status == "not-due" and not papers
            assert detail == "weekly on Monday; next 2026-11-30 07:00 UTC"
    # The second Monday ranks the whole week: Tuesday's papers too, though they are older than
    # `lookback_days` (3) before the newest listing; none of the first Monday's again.
    week = wendy[date(2026, 11, 30)][2]
    wanted = {
        f"2611.{d:%m%d}{n}"
        for d in (date(2026, 11, 24) + timedelta(days=k) for k in range(7))
        if d.weekday() < 5
        for n in (0, 1)
    }
    assert set(week) == wanted
    assert not set(week) & set(wendy[date(2026, 11, 23)][2])
    # A daily reader gets each weekday's papers, and on the weekend nothing, with the reason.
    dan = {day: by["dan"] for day, by in seen.items()}
    assert [d for d, (s, _, _) in dan.items() if s == "sent"] == [
        date(2026, 11, 23) + timedelta(days=k) for k in (0, 1, 2, 3, 4, 7)
    ]
    status, detail, _ = dan[date(2026, 11, 28)]
    assert status == "nothing-new"
    assert detail.endswith("; no new listing since Friday 27 November"), detail


def test_a_weekly_reader_whose_day_was_missed_gets_it_the_next_day_once(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    # No run on the second Monday (the machine was off): Tuesday sends it, Wednesday not again.
    days = [MONDAY + timedelta(days=n) for n in (0, 1, 2, 3, 4, 8, 9)]
    seen = fortnight(workspace, store, smtp_server, days)
    wendy = {day: by["wendy"][0] for day, by in seen.items()}
    assert wendy[date(2026, 12, 1)] == "sent"
    assert wendy[date(2026, 12, 2)] == "not-due"
    assert [d for d, s in wendy.items() if s == "sent"] == [date(2026, 11, 23), date(2026, 12, 1)]


def test_preview_of_a_weekly_reader_on_another_day_says_when_theirs_goes_out(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    fortnight(workspace, store, smtp_server, [MONDAY, MONDAY + timedelta(days=2)])
    shown = preview(workspace, store, "wendy@example.org", MONDAY + timedelta(days=2, hours=1))
    assert shown.note == (
        "wendy@example.org is weekly on Monday: the next digest goes out 2026-11-30 07:00 UTC; "
        "this is what it would hold now"
    )
    assert shown.picks  # Tuesday's and Wednesday's papers so far


def test_through_the_cli_a_weekly_reader_gets_it_on_their_day_and_not_on_another(
    site: Path, smtp_server: SmtpServer
) -> None:
    today = datetime.now(UTC)
    if today.hour == 23 and today.minute >= 55:  # the day could turn during the test
        today += timedelta(minutes=10)
    subs = site / "subscribers"
    base = (
        'timezone = "UTC"\nfrequency = "weekly"\n[interests]\nkeywords = ["state space models"]\n'
    )
    mine, other = DAYS[today.weekday()], DAYS[(today.weekday() + 1) % 7]
    write_profile(subs, "on", f'email = "on@example.org"\nweekday = "{mine}"\n' + base)
    write_profile(subs, "off", f'email = "off@example.org"\nweekday = "{other}"\n' + base)
    done = digest_here("run", cwd=site)
    assert done.returncode == 0, done.stdout
    got = {m.rcpt_tos[0] for m in smtp_server.received}
    assert "on@example.org" in got and "off@example.org" not in got
    line = next(x for x in done.stdout.splitlines() if "off@example.org" in x)
    assert "not-due" in line and "weekly on" in line
    # `digest status` lists the weekly reader at their own next slot, a day from now.
    status = digest_here("status", cwd=site)
    tomorrow = (today + timedelta(days=1)).date().isoformat()
    assert any(tomorrow in x and "off@example.org" in x for x in status.stdout.splitlines())


def test_cadence_mistakes_are_one_line_naming_the_file_and_the_key(site: Path) -> None:
    subs = site / "subscribers"
    write_profile(subs, "a", 'email = "a@example.org"\nfrequency = "weekly"\ndays = ["mon"]\n')
    write_profile(subs, "b", 'email = "b@example.org"\nweekday = "mon"\n')
    write_profile(subs, "c", 'email = "c@example.org"\nfrequency = "weekly"\nweekday = "Funday"\n')
    write_profile(subs, "d", 'email = "d@example.org"\ndays = []\n')
    write_profile(subs, "e", 'email = "e@example.org"\nfrequency = "fortnightly"\n')
    checked = digest_here("subscribers", "check", cwd=site)
    assert checked.returncode == 1
    said = lines_by_file(checked)
    assert 'a.toml: days: with frequency = "weekly" give one `weekday`' in said["a.toml"]
    assert 'b.toml: weekday: only with frequency = "weekly"' in said["b.toml"]
    assert "c.toml: weekday: not a weekday; use mon, tue" in said["c.toml"]
    assert "d.toml: days: must name at least one day" in said["d.toml"]
    assert "e.toml: frequency: " in said["e.toml"] and "weekly" in said["e.toml"]


def test_serve_fires_a_weekly_slot_only_on_its_day_and_catches_up_a_missed_one(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    from apscheduler.triggers.cron import CronTrigger

    from digest.ingest import ingest_all
    from digest.service.serve import Service

    fortnight(workspace, store, smtp_server, [MONDAY])  # wendy's first Monday digest
    cfg = workspace.model_copy(
        update={
            "sources": [
                SourceConfig(
                    name="arxiv",
                    kind="arxiv-rss",
                    url=(workspace.subscribers_dir.parent / "listing.xml").as_uri(),
                )
            ]
        }
    )
    service = Service(cfg, store)
    assert service.reload()
    jobs = {j.id: j for j in service.scheduler.get_jobs() if j.id.startswith("slot:")}
    weekly = jobs["slot:UTC:07:00:0"]
    assert weekly.args[0] == ["wendy@example.org"]
    assert isinstance(weekly.trigger, CronTrigger)
    fires = weekly.trigger.get_next_fire_time(None, MONDAY)
    assert fires == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # not Tuesday: the next Monday
    # Down all of the second Monday: Tuesday's catch-up sends wendy's digest, once.
    tuesday = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    (workspace.subscribers_dir.parent / "listing.xml").write_text(listing(tuesday.date()))
    ingest_all(store, cfg, today=tuesday.date())
    assert "wendy@example.org" in service.catch_up(now=tuesday)
    assert "wendy@example.org" not in service.catch_up(now=tuesday + timedelta(minutes=5))
    wednesday = tuesday + timedelta(days=1)
    assert "wendy@example.org" not in service.catch_up(now=wednesday)
    days = sorted(d.digest_date for d in store.deliveries() if d.subscriber == "wendy@example.org")
    assert days[0] == date(2026, 11, 23) and days[-1] == date(2026, 12, 1)


def test_a_weekly_day_with_nothing_new_is_made_up_the_next_day_at_most(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    # The second Monday and Tuesday bring nothing for wendy; Wednesday does. Wednesday is
    # not her day, and not the day after it: she waits for the next Monday.
    days = [MONDAY + timedelta(days=n) for n in (0, 7, 8, 9)]
    quiet = (date(2026, 11, 30), date(2026, 12, 1))
    seen = fortnight(workspace, store, smtp_server, days, quiet)
    wendy = {day: by["wendy"][0] for day, by in seen.items()}
    assert wendy == {
        date(2026, 11, 23): "sent",
        date(2026, 11, 30): "nothing-new",
        date(2026, 12, 1): "nothing-new",  # the make-up day, with nothing either
        date(2026, 12, 2): "not-due",
    }


def test_preview_next_of_a_weekly_reader_is_dated_their_next_day(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    fortnight(workspace, store, smtp_server, [MONDAY, MONDAY + timedelta(days=1)])
    for when in (MONDAY + timedelta(hours=2), MONDAY + timedelta(days=1, hours=2)):
        shown = preview(workspace, store, "wendy@example.org", when, next_digest=True)
        assert shown.day == date(2026, 11, 30)  # not the day after today's, nor today
        assert "the next digest goes out 2026-11-30 07:00 UTC" in shown.note
