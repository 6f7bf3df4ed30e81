"""Alembic's entry point, run by digest.store.migrate with a connection already open.

SQLite alters tables in batch mode (copy and move), since it cannot alter most columns in place;
the same revisions then run on PostgreSQL unchanged.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import digest.store.schema  # noqa: F401  (the tables, for autogenerate)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
