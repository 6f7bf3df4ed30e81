"""The CLI on a temporary config, a real SQLite file and a real SMTP server: most commands in
this process through click's CliRunner (`digest_here`), and in a real subprocess (`digest`) what
an operator's cron job or shell sees of the process itself: the exit status of a whole run, the
umask on the files `init` makes, `-v` tracebacks, the README's demo command, `$BROWSER`."""

from __future__ import annotations

import email
import email.policy
from datetime import date
from pathlib import Path

from digest.store import Store
from tests.conftest import DEMO_DATA, SmtpServer, digest, digest_here, write_profile


def test_run_twice_sends_once(site: Path, smtp_server: SmtpServer) -> None:
    first = digest("run", cwd=site)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("sent") >= 2
    second = digest("run", cwd=site)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already-sent") == 2
    assert len(smtp_server.received) == 2
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    assert sorted(d.state for d in store.deliveries()) == ["sent", "sent"]
    store.dispose()


def test_a_bad_profile_gets_one_line_naming_file_and_key(
    site: Path, smtp_server: SmtpServer
) -> None:
    write_profile(site / "subscribers", "zed", 'email = "zed@example.org"\nfavourite = "x"\n')
    write_profile(
        site / "subscribers", "yan", 'email = "yan@example.org"\ntimezone = "Mars/Olympus"\n'
    )
    check = digest_here("subscribers", "check", cwd=site)
    assert check.returncode == 1
    lines = [ln for ln in check.stderr.splitlines() if ln.strip()]
    assert any(
        ln.startswith("subscribers/yan.toml: timezone: unknown time zone")
        or "yan.toml: timezone: unknown time zone" in ln
        for ln in lines
    )
    assert any("zed.toml: favourite: unknown key" in ln for ln in lines)
    assert "2 valid, 2 invalid" in check.stdout
    ran = digest_here("run", cwd=site)
    assert ran.returncode == 2  # the operator must notice, but the others were served
    assert "zed.toml: favourite: unknown key" in ran.stderr
    assert "yan.toml: timezone" in ran.stderr
    assert sorted(m.rcpt_tos[0] for m in smtp_server.received) == [
        "ada@example.org",
        "bob@example.org",
    ]


def test_ingest_prints_a_table_per_source(site: Path) -> None:
    out = digest_here("ingest", cwd=site)
    assert out.returncode == 0, out.stderr
    assert "arxiv" in out.stdout and "24" in out.stdout and "1 replace" in out.stdout
    one = digest_here("ingest", "--source", "hf", cwd=site)
    assert one.returncode == 0 and "arxiv-api" not in one.stdout
    bad = digest_here("ingest", "--source", "nope", cwd=site)
    assert bad.returncode == 1
    assert "Error: no source named 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_preview_shows_the_digest_without_sending(site: Path, smtp_server: SmtpServer) -> None:
    empty = digest_here("preview", "ada@example.org", cwd=site)
    assert empty.returncode == 1 and "no papers stored yet" in empty.stderr
    assert digest_here("ingest", cwd=site).returncode == 0
    text = digest_here("preview", "ada@example.org", "--text", cwd=site)
    assert text.returncode == 0, text.stderr
    assert "Hello Ada," in text.stdout and "Why:" in text.stdout
    out = site / "ada.eml"
    digest_here("preview", "ada@example.org", "--out", str(out), cwd=site)
    msg = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "Ada <ada@example.org>"
    assert smtp_server.received == []
    missing = digest_here("preview", "nobody@example.org", cwd=site)
    assert (
        missing.returncode == 1 and "no subscriber with email nobody@example.org" in missing.stderr
    )


def test_a_first_run_whose_feeds_all_fail_sends_nothing_and_says_why(
    site: Path, smtp_server: SmtpServer
) -> None:
    # Nothing stored and nothing fetched, not even the profiles' example papers: the ranker
    # has no corpus at all to fit on.
    config = site / "digest.toml"
    config.write_text(config.read_text().replace(DEMO_DATA.as_uri(), (site / "gone").as_uri()))
    ran = digest_here("run", cwd=site)
    assert ran.returncode == 2, ran.stderr  # every source failed: the cron job must see it
    assert "Traceback" not in ran.stderr
    assert ran.stdout.count("nothing-new") == 2 and "no papers stored yet" in ran.stdout
    preview = digest_here("preview", "ada@example.org", cwd=site)
    assert preview.returncode == 1 and "no papers stored yet" in preview.stderr
    assert "Traceback" not in preview.stderr
    assert smtp_server.received == []


def test_dry_run_and_stats(site: Path, smtp_server: SmtpServer) -> None:
    dry = digest_here("run", "--dry-run", cwd=site)
    assert dry.returncode == 0 and dry.stdout.count("dry-run") == 2
    assert smtp_server.received == []
    stats = digest_here("stats", cwd=site)
    assert stats.returncode == 0 and "papers stored: 27" in stats.stdout


def test_subscribers_list(site: Path) -> None:
    out = digest_here("subscribers", "list", cwd=site)
    assert out.returncode == 0
    assert "ada@example.org" in out.stdout and "06:30 America/New_York" in out.stdout


def test_a_bad_config_is_one_clear_line_and_verbose_adds_the_traceback(site: Path) -> None:
    (site / "digest.toml").write_text('[smtp]\nsecurity = "ssl"\n')
    out = digest("run", cwd=site)
    assert out.returncode == 1
    assert (
        "Error: digest.toml: smtp.security: Input should be 'starttls', 'tls' or 'none'"
        in out.stderr
    )
    assert "Traceback" not in out.stderr
    verbose = digest("-v", "run", cwd=site)
    assert "Traceback" in verbose.stderr


def test_init_creates_a_working_instance(tmp_path: Path) -> None:
    out = digest("init", "--dir", "site", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    site = tmp_path / "site"
    for path in ("digest.toml", "subscribers/example.toml", "data/secret_key", "data/digest.db"):
        assert (site / path).exists(), path
    assert oct((site / "data" / "secret_key").stat().st_mode)[-3:] == "600"
    check = digest("--config", str(site / "digest.toml"), "subscribers", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    again = digest("init", "--dir", "site", cwd=tmp_path)
    assert "kept" in again.stdout


def test_demo_leaves_a_complete_message_in_the_maildir(tmp_path: Path) -> None:
    out = digest("demo", "--dir", "d", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # The example profile's personal digest, and the trending-only profile's.
    files = list((tmp_path / "d" / "data" / "maildir" / "new").iterdir())
    assert len(files) == 2
    shown = [f for f in files if str(f) in out.stdout.replace("\n", "")]
    assert len(shown) == 1
    raw = shown[0].read_bytes()
    assert b"To: Ada <ada@example.org>" in raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for header in ("Date", "From", "To", "Subject", "Message-ID", "List-Unsubscribe"):
        assert len(msg.get_all(header) or []) == 1, header
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.count("   Why: ") >= 5
    again = digest("demo", "--dir", "d", cwd=tmp_path)
    assert again.returncode == 0 and "already-sent" in again.stdout
    assert len(list((tmp_path / "d" / "data" / "maildir" / "new").iterdir())) == 2
    trending = next(f for f in files if f != shown[0]).read_bytes()
    assert b"Subject: Trending on Hugging Face: 3 papers" in trending
    # It says how many it stored, and leaves its site's digest.toml (private: the secret key's
    # place is in it) for every other command to look at what it did.
    assert "2 messages stored in the Maildir" in out.stdout
    config = tmp_path / "d" / "digest.toml"
    assert config.stat().st_mode & 0o777 == 0o600
    status = digest("--config", str(config), "status", cwd=tmp_path)
    assert status.returncode == 0 and "2 sent" in status.stdout, status.stdout + status.stderr


def test_pause_status_resume_and_deliveries(site: Path, smtp_server: SmtpServer) -> None:
    paused = digest_here("pause", "--reason", "relay maintenance", cwd=site)
    assert paused.returncode == 0 and "delivery paused: relay maintenance" in paused.stdout
    status = digest_here("status", cwd=site)
    assert status.returncode == 0
    assert "PAUSED" in status.stdout and "relay maintenance" in status.stdout
    assert "next send slot" in status.stdout and "ada@example.org" in status.stdout
    ran = digest_here("run", cwd=site)
    assert ran.returncode == 3  # paused: a monitor must see it
    assert "Delivery paused: relay maintenance" in ran.stderr
    assert smtp_server.received == []  # planned, not sent
    assert (
        digest_here("deliveries", "--state", "pending", cwd=site).stdout.count("@example.org") == 2
    )
    resumed = digest_here("resume", cwd=site)
    assert "was paused: relay maintenance" in resumed.stdout
    again = digest_here("run", "--no-ingest", cwd=site)
    assert again.returncode == 0, again.stderr
    assert len(smtp_server.received) == 2
    listed = digest_here("deliveries", "--state", "sent", cwd=site)
    assert listed.stdout.count("sent") == 2
    status = digest_here("status", cwd=site)
    assert "2 sent" in status.stdout and "PAUSED" not in status.stdout


def test_retry_and_enable_tell_the_operator_what_happened(site: Path) -> None:
    none = digest_here("retry", cwd=site)
    assert none.returncode == 0 and "0 deliveries re-queued" in none.stdout
    bad = digest_here("retry", "--state", "sent", cwd=site)
    assert bad.returncode == 1 and "cannot re-queue sent" in bad.stderr
    enable = digest_here("subscribers", "enable", "ada@example.org", cwd=site)
    assert enable.returncode == 1 and "ada@example.org is not disabled" in enable.stderr
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    store.record_bounce("ada@example.org", True, 1, date(2026, 11, 23))
    store.dispose()
    enable = digest_here("subscribers", "enable", "ada@example.org", cwd=site)
    assert enable.returncode == 0 and "enabled" in enable.stdout


def test_feedback_is_recorded_listed_cleared_and_retrains_the_model(site: Path) -> None:
    assert digest_here("ingest", cwd=site).returncode == 0
    first = digest_here("run", "--dry-run", "--no-ingest", cwd=site)
    assert first.returncode == 0, first.stderr
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    paper = next(p for p in store.papers_between(date(2000, 1, 1), date(2100, 1, 1)))
    trained = store.rank_models()["ada@example.org"].fingerprint
    liked = digest_here("feedback", "ada@example.org", f"arXiv:{paper.id}v2", "like", cwd=site)
    assert liked.returncode == 0 and f"{paper.id}: recorded: like" in liked.stdout
    assert store.feedback("ada@example.org") == {paper.id: "like"}
    listed = digest_here("feedback", "ada@example.org", cwd=site)
    assert paper.id in listed.stdout and "like" in listed.stdout
    assert digest_here("run", "--dry-run", "--no-ingest", cwd=site).returncode == 0
    assert store.rank_models()["ada@example.org"].fingerprint != trained
    cleared = digest_here("feedback", "ada@example.org", paper.id, "clear", cwd=site)
    assert cleared.returncode == 0 and store.feedback("ada@example.org") == {}
    unknown = digest_here("feedback", "nobody@example.org", paper.id, "like", cwd=site)
    assert unknown.returncode == 1 and "no subscriber with email" in unknown.stderr
    missing = digest_here("feedback", "ada@example.org", "2401.99999", "dislike", cwd=site)
    assert missing.returncode == 1 and "no stored paper 2401.99999" in missing.stderr
    store.dispose()


def test_preview_open_hands_the_html_to_a_browser(site: Path) -> None:
    script = site / "browser.sh"
    script.write_text(f'#!/bin/sh\necho "$1" > "{site}/opened.txt"\n')
    script.chmod(0o755)
    assert digest("ingest", cwd=site).returncode == 0
    shown = digest(
        "preview", "ada@example.org", "--open", cwd=site, env={"BROWSER": f"{script} %s"}
    )
    assert shown.returncode == 0, shown.stderr
    url = (site / "opened.txt").read_text().strip()
    assert url.startswith("file://") and url.endswith("preview.html")
    assert "More like this" in Path(url.removeprefix("file://")).read_text()


def test_a_file_named_for_something_else_or_an_unknown_state_is_a_usage_error(
    site: Path,
) -> None:
    """What `--out` and `--report` write depends on the name's ending, and a typo in a
    monitoring script's `--state` would otherwise list nothing and exit 0."""
    for args, says in (
        (("preview", "ada@example.org", "--out", "p.pdf"), "name it .eml or .html"),
        (("run", "--dry-run", "--report", "r.txt"), "name it .json or .csv"),
        (("deliveries", "--state", "sentt"), "'sentt' is not one of"),
    ):
        done = digest(*args, cwd=site)
        assert done.returncode == 1 and says in done.stderr, (args, done.stderr)
    assert not (site / "p.pdf").exists() and not (site / "r.txt").exists()


def test_a_place_the_operator_names_that_cannot_be_written_is_one_line_not_a_traceback(
    site: Path, tmp_path: Path
) -> None:
    assert digest("ingest", cwd=site).returncode == 0
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory\n")
    for args in (
        ("preview", "ada@example.org", "--out", str(tmp_path / "missing" / "x.eml")),
        ("demo", "--dir", str(blocked / "demo")),
        ("init", "--dir", str(blocked / "site")),
    ):
        done = digest(*args, cwd=site)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and "Traceback" not in done.stderr, (args, done.stderr)
        assert lines[0].startswith("Error: cannot write "), (args, lines)


def test_a_source_that_fails_shows_its_status_as_a_word_not_as_markup(site: Path) -> None:
    cfg = site / "digest.toml"
    missing = (site / "nowhere.xml").as_uri()
    cfg.write_text(
        cfg.read_text() + f'\n[[sources]]\nname = "gone"\nkind = "rss"\nurl = "{missing}"\n'
    )
    done = digest("ingest", cwd=site)
    assert done.returncode == 2, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if "gone" in line)
    assert "error" in row and "[red]" not in row and "[/]" not in row


def test_status_lists_a_configured_source_never_fetched_as_never(site: Path) -> None:
    done = digest_here("status", cwd=site)
    assert done.returncode == 0, done.stdout
    rows = [ln for ln in done.stdout.splitlines() if "never" in ln]
    assert {ln.split()[1] for ln in rows} >= {"arxiv", "arxiv-api"}, done.stdout


def test_a_second_pause_without_a_reason_keeps_the_first_ones(site: Path) -> None:
    first = digest_here("pause", "--reason", "relay maintenance", cwd=site)
    assert first.returncode == 0 and "delivery paused: relay maintenance" in first.stdout
    again = digest_here("pause", cwd=site)
    assert again.returncode == 0 and "already paused: relay maintenance" in again.stdout
    assert "relay maintenance" in digest_here("status", cwd=site).stdout
    other = digest_here("pause", "--reason", "new relay", cwd=site)
    assert "delivery paused: new relay (was: relay maintenance)" in other.stdout


def test_deliveries_with_nothing_to_list_say_so_in_a_line(site: Path) -> None:
    none = digest_here("deliveries", "--state", "bounced", cwd=site)
    assert none.returncode == 0 and none.stdout.strip() == "no deliveries in state bounced"


def test_the_demo_run_in_a_sites_directory_keeps_that_sites_digest_toml(tmp_path: Path) -> None:
    assert digest("init", "--dir", "site", cwd=tmp_path).returncode == 0
    config = tmp_path / "site" / "digest.toml"
    mine = "# MY REAL SITE\n" + config.read_text()
    config.write_text(mine)
    digest("demo", "--dir", "site", cwd=tmp_path)
    assert config.read_text() == mine


def test_the_hints_that_name_a_directory_can_be_pasted_into_a_shell(tmp_path: Path) -> None:
    import shlex

    done = digest("init", "--dir", "my site", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    hint = done.stdout.split("`")[-2]
    assert shlex.split(hint)[:2] == ["cd", "my site"], hint
