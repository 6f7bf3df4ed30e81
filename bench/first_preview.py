"""The first `digest preview` on a fresh 20,000-paper corpus: the vocabulary fitted from cold.

    python bench/first_preview.py [--corpus 20000] [--runs 2]

A fresh workspace (the corpus of bench/cycle.py: real labelled arXiv papers, the real 1,504-item
listing ingested, one subscriber from its profile mix), no stored vocabulary (the one the
ingest fitted is removed; the ingest's own time and peak are printed too). `digest preview`
runs under /usr/bin/time: wall time and peak resident memory of the whole command, then the
size of data/models/vocabulary.npz, then a second preview that reuses it. Issue 14's floor: the
first preview in 20 s and 500 MB. `--runs` repeats the cold preview (the vocabulary removed
before each) and prints each.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cycle import digest, workspace  # noqa: E402

from tests.profile_mix import LABELLED, corpus_rows  # noqa: E402


def timed(cfg: Path, *args: str) -> tuple[float, float, str]:
    start = time.monotonic()
    p = digest(cfg, *args)
    out, err = p.communicate()
    wall = time.monotonic() - start
    if p.returncode:
        raise SystemExit(f"digest {' '.join(args)} failed ({p.returncode}):\n{err[-2000:]}")
    found = re.search(r"maxrss_kb=(\d+)", err)
    return wall, int(found.group(1)) / 1024 if found else float("nan"), out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if not LABELLED.exists():
        print(f"missing {LABELLED}", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="digest-first-preview-"))
    try:
        cfg = workspace(tmp, 1, corpus_rows(args.corpus), "sqlite", 2525)
        # The ingest fits the vocabulary too (removed again below, so each preview is cold).
        ingest_wall, ingest_peak, _ = timed(cfg, "ingest")
        reader = re.search(r'email = "([^"]+)"', (tmp / "subscribers" / "r000000.toml").read_text())
        assert reader is not None
        models = tmp / "data" / "models"
        print(
            f"corpus {args.corpus} papers; the real listing ingested (fitting the vocabulary: "
            f"{ingest_wall:.1f} s, peak {ingest_peak:.0f} MB); one reader"
        )
        for _ in range(args.runs):
            shutil.rmtree(models, ignore_errors=True)
            wall, peak, out = timed(cfg, "preview", reader.group(1))
            size = (models / "vocabulary.npz").stat().st_size / 1e6
            papers = len(re.findall(r"^\s*\d+\. ", out, re.M))
            print(
                f"first preview: {wall:.1f} s, peak {peak:.0f} MB, vocabulary.npz {size:.1f} MB,"
                f" {papers} papers shown"
            )
        wall, peak, _ = timed(cfg, "preview", reader.group(1))
        print(f"next preview (vocabulary reused): {wall:.1f} s, peak {peak:.0f} MB")
        print("floor: first preview <= 20 s and <= 500 MB  (python bench/first_preview.py)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
