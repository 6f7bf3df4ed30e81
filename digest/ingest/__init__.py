"""Ingest: fetch each configured source, parse it, store its papers de-duplicated.

`fetch` gets the bytes (bounded in size, time and destination), one parser per source kind
turns them into records, `run` dispatches and records each source's outcome. Imports the ground
modules and the store.
"""

from __future__ import annotations

from digest.ingest.run import (
    IngestReport,
    Lookup,
    ingest_all,
    ingest_bytes,
    ingest_source,
    lookup_papers,
)

__all__ = ["IngestReport", "Lookup", "ingest_all", "ingest_bytes", "ingest_source", "lookup_papers"]
