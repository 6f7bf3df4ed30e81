"""Schema migrations with Alembic: how a database comes to exist and how it follows the code.

The revisions live in digest/migrations/versions, shipped inside the package; the same ones run
on SQLite (in batch mode) and PostgreSQL. A database is in one of three conditions:

- empty: the newest schema is made by running every revision;
- versioned (an `alembic_version` row): at this release's newest revision it is used; at an older
  one, `digest db upgrade` brings it forward; at one this release does not know (a newer
  release made it) it is refused;
- made before migrations existed: recognised by its tables and columns as one revision, stamped
  with it, then upgraded; a database matching no revision is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, inspect, text

from digest.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

# The newest revision this release ships. Written here so that opening a database that is
# current needs no Alembic: importing it took a fifth of every `digest` command's start.
# tests/test_upgrade.py holds it to the head Alembic finds among the revisions.
HEAD = "0005"

SCRIPTS = Path(__file__).resolve().parent / "migrations"
UPGRADE_HINT = "run `digest db upgrade` (it keeps a copy of an SQLite file first)"


@dataclass(frozen=True)
class Condition:
    empty: bool
    revision: str | None  # the stored revision, or the one recognised in an unversioned database
    versioned: bool

    @property
    def current(self) -> bool:
        return self.versioned and self.revision == head()


def _config(connection: Connection) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(SCRIPTS))
    return ScriptDirectory.from_config(cfg)


def head() -> str:
    return HEAD


def history() -> list[tuple[str, str]]:
    """(revision, what it does), oldest first."""
    revisions = list(_scripts().walk_revisions())
    return [(r.revision, (r.doc or "").splitlines()[0]) for r in reversed(revisions)]


def known(revision: str) -> bool:
    return any(r == revision for r, _ in history())


def schema_at(revision: str) -> dict[str, frozenset[str]]:
    """Tables and their columns at a revision, as the revisions themselves make them."""
    return _made_at(revision)[0]


def indexes_at(revision: str) -> frozenset[str]:
    """Names of the indexes at a revision, as the revisions themselves make them."""
    return _made_at(revision)[1]


@cache
def _made_at(revision: str) -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    from alembic import command

    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), revision)
        return _tables(engine), _indexes(engine)
    finally:
        engine.dispose()


def _tables(engine: Engine) -> dict[str, frozenset[str]]:
    found = inspect(engine)
    return {
        t: frozenset(c["name"] for c in found.get_columns(t))
        for t in found.get_table_names()
        if t != "alembic_version"
    }


def condition(engine: Engine) -> Condition:
    tables = set(inspect(engine).get_table_names())
    if not tables - {"alembic_version"}:
        return Condition(empty=True, revision=None, versioned=False)
    if "alembic_version" in tables:
        # Alembic's own table, read directly: one row with a linear history like ours.
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        stored = rows[0] if len(rows) == 1 else None
        return Condition(empty=False, revision=stored, versioned=True)
    return Condition(empty=False, revision=recognise(engine), versioned=False)


def recognise(engine: Engine) -> str | None:
    """The revision whose tables and columns an unversioned database has exactly, or None.

    Revisions that only add an index (0005) leave the tables as they were: among those, the
    newest whose indexes the database has, so a database without the index is upgraded to it
    rather than stamped past it. Indexes break ties only: the release before migrations named
    its own, and its tables alone must keep recognising it.
    """
    have = _tables(engine)
    matching = [r for r, _ in reversed(history()) if schema_at(r) == have]
    if len(matching) < 2:
        return matching[0] if matching else None
    indexes = _indexes(engine)
    return next((r for r in matching if indexes_at(r) <= indexes), matching[-1])


def _indexes(engine: Engine) -> frozenset[str]:
    found = inspect(engine)
    return frozenset(
        str(i["name"]) for t in found.get_table_names() for i in found.get_indexes(t) if i["name"]
    )


def check(engine: Engine, where: str, state: Condition | None = None) -> None:
    """Refuse a database this release cannot use as it is, in one line with what to do
    (``state``: its condition, when the caller has looked already)."""
    state = state or condition(engine)
    if state.empty or state.current:
        return
    if state.versioned and state.revision is not None and not known(state.revision):
        raise StoreError(
            f"the database {where} is at schema revision {state.revision}, made by a newer "
            f"release of digest than this one (newest known: {head()})",
            "upgrade digest itself, or use the database with the release that made it",
        )
    if not state.versioned and state.revision is None:
        raise StoreError(
            f"the database {where} matches no known schema: made by another program, or by a "
            "development version of digest",
            "move it aside and run `digest init` for a new one",
        )
    if not state.versioned and state.revision == head():
        raise StoreError(
            f"the database {where} has no schema version yet (its tables match {head()}, the "
            "newest)",
            "run `digest db upgrade`: it records the version; no table changes",
        )
    if not state.versioned:
        raise StoreError(
            f"the database {where} predates schema versions and matches revision "
            f"{state.revision}; this release needs {head()}",
            UPGRADE_HINT,
        )
    raise StoreError(
        f"the database {where} is at revision {state.revision}; this release needs {head()}",
        UPGRADE_HINT,
    )


def upgrade(engine: Engine, where: str) -> tuple[str | None, str]:
    """Bring the database to the newest revision; (from, to). An unversioned one is stamped
    with the revision it matches first; one matching none is refused."""
    state = condition(engine)
    if state.versioned and state.revision is not None and not known(state.revision):
        check(engine, where, state)  # raises: newer than this release
    if not state.versioned and not state.empty and state.revision is None:
        check(engine, where, state)  # raises: not recognised
    from alembic import command

    with engine.begin() as conn:
        cfg = _config(conn)
        if not state.versioned and state.revision is not None:
            command.stamp(cfg, state.revision)
        command.upgrade(cfg, "head")
    return state.revision, head()
