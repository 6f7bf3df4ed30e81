"""`digest db ...`: the database's schema revision, and upgrading it to this release's."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import click

from digest.cli.app import _state, cli, console
from digest.store import migrate
from digest.store.papers import Store


@cli.group()
def db() -> None:
    """The database schema: its revision, the revisions this release knows, upgrading."""


def _store(ctx: click.Context) -> Store:
    # Not State.store(): that refuses a database at another revision, which is why we are here.
    return Store(_state(ctx).cfg.database_url)


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """The database's schema revision, and whether this release can use it as it is.

    Example: digest db current
    """
    store = _store(ctx)
    state = migrate.condition(store.engine)
    if state.empty:
        console.print(f"{store.safe_url}: empty; the first command makes it at {migrate.head()}")
    elif state.versioned:
        verdict = (
            "current"
            if state.current
            else "older than this release: `digest db upgrade`"
            if state.revision and migrate.known(state.revision)
            else "unknown to this release (made by a newer one)"
        )
        console.print(f"{store.safe_url}: revision {state.revision} ({verdict})")
    elif state.revision:
        console.print(
            f"{store.safe_url}: made before schema revisions, matches {state.revision}; "
            "`digest db upgrade` stamps and upgrades it"
        )
    else:
        console.print(f"{store.safe_url}: unversioned, and matches no revision of this release")
    store.dispose()


@db.command("history")
def db_history() -> None:
    """Every schema revision this release knows, oldest first.

    Example: digest db history
    """
    newest = migrate.head()
    for revision, what in migrate.history():
        console.print(f"{revision}{' (newest)' if revision == newest else ''}  {what}")


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Bring the database to this release's schema; rows are kept. SQLite is copied aside first.

    Example: digest db upgrade
    """
    store = _store(ctx)
    state = migrate.condition(store.engine)
    if state.current:
        console.print(f"{store.safe_url} is at {state.revision}, the newest; nothing to do.")
        store.dispose()
        return
    if store.path is not None and store.path.exists() and not state.empty:
        label = state.revision if state.versioned else f"unversioned-{state.revision}"
        copy = _copy_aside(store.path, label or "unversioned")
        console.print(f"copied {store.path} to {copy} before upgrading", highlight=False)
    elif not state.empty:
        console.print("PostgreSQL: keep a `pg_dump` of it first if you may want to go back.")
    moved_from, moved_to = store.upgrade()
    store.dispose()
    if not state.versioned and moved_from == moved_to:
        console.print(
            f"{store.safe_url}: stamped as {moved_to}; its tables already matched, nothing else "
            "changed",
            highlight=False,
        )
    else:
        console.print(f"{store.safe_url}: {moved_from or 'empty'} -> {moved_to}", highlight=False)


def _copy_aside(path: Path, revision: str) -> Path:
    """A consistent copy (SQLite's backup API: the WAL's contents included), beside the file."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    copy = path.with_name(f"{path.name}.before-{revision}-{stamp}")
    with closing(sqlite3.connect(path)) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    copy.chmod(0o600)
    return copy
