"""Ingest throughput on the real arXiv listing (1,504 items) into a fresh SQLite file.

Run: python bench/ingest_speed.py [--repeat N]
Reads ../shared/data beside the project (or $DIGEST_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from digest.config import SourceConfig
from digest.ingest import ingest_source
from digest.store import Store

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIGEST_SHARED_DATA", ROOT.parent / "shared" / "data"))
FEED = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not FEED.exists():
        print(f"missing {FEED}", file=sys.stderr)
        return 1
    src = SourceConfig(name="arxiv", kind="arxiv-rss", url=FEED.as_uri(), include_replacements=True)
    first, again = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{tmp}/bench.db")
            store.upgrade()
            t0 = time.perf_counter()
            report = ingest_source(store, src)
            t1 = time.perf_counter()
            ingest_source(store, src)
            t2 = time.perf_counter()
            store.dispose()
            first.append(t1 - t0)
            again.append(t2 - t1)
    n = report.entries
    print(f"feed: {FEED.name} ({FEED.stat().st_size / 1e6:.1f} MB, {n} items stored)")
    print(
        f"first ingest:  median {statistics.median(first):.2f} s "
        f"({n / statistics.median(first):.0f} papers/s) over {args.repeat} runs"
    )
    print(f"second ingest (all known): median {statistics.median(again):.2f} s")
    print(f"reproduce: python bench/ingest_speed.py --repeat {args.repeat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
