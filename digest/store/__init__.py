"""The store: everything digest remembers, in SQLite or PostgreSQL.

Offers `Store` (papers, feeds, subscribers' state, deliveries, feedback, models), the tables
(`schema`), the schema revisions (`migrate`, `migrations/`), batched reads and writes for
planning (`planning`), compressed messages (`packing`) and one-line failures (`failures`).
Imports only the ground modules (errors, config, record, states, text).
"""

from __future__ import annotations

from digest.store.papers import Store, source_name, source_tag

__all__ = ["Store", "source_name", "source_tag"]
