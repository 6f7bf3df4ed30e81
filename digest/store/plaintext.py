"""LaTeX titles and abstracts as readers see them, kept in the store: a mixin of Store.

Converting a text with LaTeX in it takes pylatexenc about 8 ms, and a run shows each listing
paper to many readers from several planning processes. So each text is converted once, when
it is stored, and every run after loads the readings of its listing in one query and hands them
to digest.text, which then never converts those texts again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from digest.store.failures import explain
from digest.store.schema import PlainText
from digest.text import know_plain, latex_key, needs_latex, plain_latex

log = logging.getLogger(__name__)


class PaperLike(Protocol):
    title: str
    abstract: str


CHUNK = 500  # keys per query: well under either database's limit of bound parameters


class PlainTextQueries:
    engine: Engine

    @property
    def safe_url(self) -> str:  # pragma: no cover - Store's
        raise NotImplementedError

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    def plain_texts_of(self, papers: Iterable[PaperLike]) -> int:
        """`plain_texts` of these papers' titles and abstracts."""
        return self.plain_texts(t for p in papers for t in (p.title, p.abstract))

    def plain_texts(self, texts: Iterable[str]) -> int:
        """Make the plain reading of every text here with LaTeX in it known to this process
        (digest.text.plain_latex): read from the store, converted and stored where missing.
        Returns how many were converted now. A store that cannot keep them (a database not
        upgraded yet, say) costs only the time: the texts are converted in this process."""
        wanted = {latex_key(t): t for t in texts if needs_latex(t)}
        if not wanted:
            return 0
        found: dict[str, str] = {}
        try:
            with self.session() as s:
                keys = list(wanted)
                for start in range(0, len(keys), CHUNK):
                    part = keys[start : start + CHUNK]
                    rows = s.exec(select(PlainText).where(col(PlainText.key).in_(part)))
                    found.update((r.key, r.plain) for r in rows)
        except SQLAlchemyError as exc:
            why = explain(exc, self.safe_url).message
            log.warning("plain texts not read from the store (%s); converted where needed", why)
            return 0
        fresh = {k: plain_latex(t) for k, t in wanted.items() if k not in found}
        if fresh:
            self._save_plain(fresh)
        know_plain({wanted[k]: v for k, v in (found | fresh).items()})
        return len(fresh)

    def _save_plain(self, fresh: dict[str, str]) -> None:
        # Insert-or-ignore: two nodes ingesting the same listing convert the same texts.
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        rows = [{"key": k, "plain": v} for k, v in fresh.items()]
        try:
            with self.engine.begin() as conn:
                for start in range(0, len(rows), CHUNK):
                    stmt = insert(PlainText).values(rows[start : start + CHUNK])
                    conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
        except SQLAlchemyError as exc:
            why = explain(exc, self.safe_url).message
            log.warning("plain texts not kept in the store (%s); converted again next run", why)
