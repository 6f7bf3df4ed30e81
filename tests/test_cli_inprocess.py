"""The CLI in-process, through click's CliRunner, on a real temporary SQLite database: fast
enough to cover every read-only command and its output. What needs a real process (the entry
point's exit statuses, signals, `-v` tracebacks, cron's environment) stays in the subprocess
tests (tests/conftest.py `digest`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import cli
from digest.store import migrate

Invoke = Callable[..., Result]


@pytest.fixture
def run_cli(site: Path) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["--config", str(site / "digest.toml"), *args])

    return invoke


def test_subscribers_list_as_json_names_every_reader_with_state(run_cli: Invoke) -> None:
    result = run_cli("subscribers", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    readers = {r["email"]: r for r in json.loads(result.stdout)}
    assert set(readers) == {"ada@example.org", "bob@example.org"}
    assert readers["ada@example.org"]["state"] == "active"
    assert readers["bob@example.org"]["categories"] == ["cs.IR"]


def test_a_new_database_is_made_at_the_newest_revision_and_db_current_says_so(
    run_cli: Invoke,
) -> None:
    assert run_cli("status").exit_code == 0  # the first command makes the database
    current = run_cli("db", "current")
    assert current.exit_code == 0 and f"revision {migrate.head()} (current)" in current.stdout
    history = run_cli("db", "history")
    assert [ln.split()[0] for ln in history.stdout.splitlines()] == [
        r for r, _ in migrate.history()
    ]


def test_unsubscribe_then_list_by_state_in_process(run_cli: Invoke) -> None:
    assert run_cli("subscribers", "unsubscribe", "bob@example.org").exit_code == 0
    result = run_cli("subscribers", "list", "--state", "unsubscribed", "--format", "csv")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("email,") and len(lines) == 2 and lines[1].startswith("bob@")


def test_check_warns_in_process_about_a_category_typo(site: Path, run_cli: Invoke) -> None:
    (site / "subscribers" / "cy.toml").write_text(
        'email = "cy@example.org"\n[interests]\ncategories = ["astroph"]\n'
    )
    result = run_cli("subscribers", "check")
    assert result.exit_code == 0
    assert "did you mean astro-ph?" in result.stderr


def test_a_run_for_many_readers_ends_with_a_summary_not_a_row_each(
    site: Path, run_cli: Invoke
) -> None:
    from tests.conftest import write_profile

    for i in range(60):
        write_profile(
            site / "subscribers",
            f"r{i:02d}",
            f'email = "r{i:02d}@example.org"\n[interests]\nkeywords = ["retrieval"]\n',
        )
    write_profile(site / "subscribers", "zz", 'email = "zz@example.org"\nfavourite = 1\n')
    report = site / "run.json"
    result = run_cli("run", "--dry-run", "--report", str(report))
    assert result.exit_code == 2  # the broken profile must be noticed
    assert "62 subscribers: 62 dry-run" in result.stdout
    assert "r07@example.org" not in result.stdout  # fine readers are in the report, not listed
    assert "time: " in result.stdout and "models" in result.stdout
    data = json.loads(report.read_text())
    assert data["counts"] == {"dry-run": 62} and len(data["results"]) == 62
    assert data["exit_status"] == 2 and "zz.toml" in data["profile_errors"][0]
    assert oct(report.stat().st_mode)[-3:] == "600"


def test_status_turns_the_garbage_collector_back_on_when_it_is_done(run_cli: Invoke) -> None:
    import gc

    assert run_cli("status").exit_code == 0
    assert gc.isenabled()  # off only while it reads 100,000 readers
