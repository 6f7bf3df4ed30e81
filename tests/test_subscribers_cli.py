"""`digest subscribers ...` as an operator runs it: the real command, its output read as text,
CSV and JSON, and its exit status."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from digest.store import Store
from tests.conftest import digest, drop_source, write_profile

LONG = "a.very.long.local.part.for.a.reader" + "@" + "mail.department.university.example.org"


def _store(site: Path) -> Store:
    return Store(f"sqlite:///{site / 'data' / 'digest.db'}")


def test_check_warns_about_an_example_arxiv_lacks_and_category_typos_naming_file_key_and_value(
    site: Path,
) -> None:
    profile = write_profile(
        site / "subscribers",
        "cy",
        'email = "cy@example.org"\n[interests]\nkeywords = ["llm"]\n'
        'papers = ["2609.04411", "2411.99999"]\ncategories = ["cs.CL", "cs.XX", "astroph"]\n',
    )
    ran = digest("subscribers", "check", cwd=site)
    assert ran.returncode == 0, ran.stderr  # warnings, not errors: every profile still loads
    lines = [ln for ln in ran.stderr.splitlines() if ln.startswith("warning:")]
    assert lines == [
        f"warning: {profile}: interests.papers[1]: '2411.99999' was not found on arXiv "
        "(source arxiv-api); is the id right?",
        f"warning: {profile}: interests.categories[1]: 'cs.XX' is not an arXiv category "
        "(see arxiv.org/category_taxonomy)",
        f"warning: {profile}: interests.categories[2]: 'astroph' is not an arXiv category; "
        "did you mean astro-ph?",
    ]
    assert "3 valid, 0 invalid, 3 warnings" in ran.stdout


def test_check_says_an_example_could_not_be_checked_when_no_arxiv_api_source_is_configured(
    site: Path,
) -> None:
    drop_source(site, "arxiv-api")
    write_profile(site / "subscribers", "cy", 'email = "cy@example.org"\n'
                  '[interests]\npapers = ["2411.99999"]\n')  # fmt: skip
    ran = digest("subscribers", "check", cwd=site)
    assert ran.returncode == 0
    assert "'2411.99999' could not be checked: no arxiv-api source" in ran.stderr
    assert "not found on arXiv" not in ran.stderr


def test_a_category_only_a_configured_feed_uses_is_not_a_typo(site: Path) -> None:
    from datetime import date

    from digest.record import PaperRecord

    store = _store(site)
    store.upgrade()
    store.upsert_papers(
        [
            PaperRecord(
                id="https://blog.example.org/p/1",
                title="A post",
                categories=["ml-systems"],
                announced=date(2026, 11, 20),
                source="blog",
                kind="rss",
            )
        ]
    )
    store.dispose()
    write_profile(site / "subscribers", "cy", 'email = "cy@example.org"\n'
                  '[interests]\ncategories = ["ml-systems", "ml-system"]\n')  # fmt: skip
    ran = digest("subscribers", "check", cwd=site)
    assert "categories[0]" not in ran.stderr
    assert "interests.categories[1]: 'ml-system' is not an arXiv category" in ran.stderr


def test_list_prints_full_addresses_and_a_state_column_even_when_piped_into_a_narrow_terminal(
    site: Path,
) -> None:
    write_profile(site / "subscribers", "long", f'email = "{LONG}"\nmode = "trending"\n')
    assert digest("subscribers", "unsubscribe", "bob@example.org", cwd=site).returncode == 0
    ran = digest("subscribers", "list", cwd=site, env={"COLUMNS": "60"})
    assert ran.returncode == 0, ran.stderr
    assert LONG in ran.stdout  # whole, on one line: grep finds it
    rows = {ln.split()[1]: ln for ln in ran.stdout.splitlines() if "@" in ln}
    assert "active" in rows["ada@example.org"]
    assert "unsubscribed" in rows["bob@example.org"]


def test_list_filters_by_state_and_gives_every_field_as_csv_and_json(site: Path) -> None:
    digest("subscribers", "unsubscribe", "BOB@example.org", cwd=site)
    as_csv = digest("subscribers", "list", "--state", "active", "--format", "csv", cwd=site)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["email"] for r in rows] == ["ada@example.org"]
    assert rows[0]["keywords"] == "state space models; long context"
    assert rows[0]["state"] == "active" and rows[0]["send_at"] == "07:00"
    as_json = json.loads(digest("subscribers", "list", "--format", "json", cwd=site).stdout)
    bob = next(r for r in as_json if r["email"] == "bob@example.org")
    assert bob["state"] == "unsubscribed" and bob["since"]
    assert bob["keywords"] == ["retrieval-augmented generation"]
    assert bob["categories"] == ["cs.IR"]


def test_a_reader_who_unsubscribed_and_whose_file_was_removed_is_still_listed(site: Path) -> None:
    digest("subscribers", "unsubscribe", "bob@example.org", cwd=site)
    (site / "subscribers" / "bob.toml").unlink()
    ran = digest("subscribers", "list", "--state", "unsubscribed", "--format", "json", cwd=site)
    (bob,) = json.loads(ran.stdout)
    assert bob["email"] == "bob@example.org" and bob["file"] == ""


def test_unsubscribe_and_resubscribe_from_the_cli_change_who_the_next_run_mails(
    site: Path, smtp_server: object
) -> None:
    ran = digest("subscribers", "unsubscribe", "ada@example.org", cwd=site)
    assert ran.returncode == 0 and "unsubscribed" in ran.stdout
    again = digest("subscribers", "unsubscribe", "ada@example.org", cwd=site)
    assert again.returncode == 0 and "already unsubscribed" in again.stdout
    run = digest("run", "--dry-run", cwd=site)
    assert "unsubscribed" in next(ln for ln in run.stdout.splitlines() if "ada@" in ln)
    back = digest("subscribers", "resubscribe", "ada@example.org", cwd=site)
    assert back.returncode == 0 and "resubscribed" in back.stdout
    run = digest("run", "--dry-run", cwd=site)
    assert "dry-run" in next(ln for ln in run.stdout.splitlines() if "ada@" in ln)
    twice = digest("subscribers", "resubscribe", "ada@example.org", cwd=site)
    assert twice.returncode == 0 and "already subscribed" in twice.stdout  # as unsubscribe


def test_commands_on_an_unknown_address_say_so_in_one_line_and_exit_1(site: Path) -> None:
    for command in ("enable", "unsubscribe", "resubscribe"):
        ran = digest("subscribers", command, "nobody@example.org", cwd=site)
        assert ran.returncode == 1, command
        first = ran.stderr.splitlines()[0]
        assert "no subscriber nobody@example.org" in first, command
        assert "Traceback" not in ran.stderr
    active = digest("subscribers", "enable", "ada@example.org", cwd=site)
    assert active.returncode == 1 and "is not disabled (state: active)" in active.stderr


def test_an_address_hiding_an_encoded_header_is_refused_naming_file_and_key(site: Path) -> None:
    profile = write_profile(
        site / "subscribers",
        "evil",
        'email = "=?utf-8?q?=0d=0aBcc=3A_victim=40evil.example?=@example.org"\n',
    )
    ran = digest("subscribers", "check", cwd=site)
    assert ran.returncode == 1
    assert f"{profile}: email: must not contain an encoded-word" in ran.stderr
    assert "2 valid, 1 invalid" in ran.stdout
