"""A run's report as a file: `digest run --report FILE`, for monitoring and bench/cycle.py.

JSON holds the whole report (day, exit status, time per stage, counts by outcome, one row per
subscriber); CSV holds the per-subscriber rows only, for a spreadsheet. Readers' addresses are
in it, as in `digest deliveries`: the file is written private to its owner.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from digest.errors import DigestError
from digest.service.pipeline import RunReport

FIELDS = ("email", "status", "papers", "detail")


def report_dict(report: RunReport) -> dict[str, Any]:
    return {
        "day": report.day.isoformat(),
        "exit_status": int(report.exit_status()),
        "stages": {k: round(v, 3) for k, v in report.stages.items()},
        "counts": dict(Counter(str(r.status) for r in report.results)),
        "sources": {r.source: r.status for r in report.ingest},
        "profile_errors": [str(e) for e in report.profile_errors],
        "results": [
            {"email": r.email, "status": str(r.status), "papers": r.papers, "detail": r.detail}
            for r in report.results
        ],
    }


def write_report(report: RunReport, path: Path) -> None:
    """Written whole or not at all (a temporary file renamed), so a monitor never reads half."""
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(FIELDS)
        for r in report.results:
            out.writerow([r.email, str(r.status), r.papers, r.detail])
        text = buf.getvalue()
    else:
        text = json.dumps(report_dict(report), indent=1) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise DigestError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
