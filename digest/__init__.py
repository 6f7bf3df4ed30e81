"""digest: a personalised daily digest of new research papers, sent by email."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.2.0"  # 0.2: schema revisions (`digest db upgrade`)
# The package's own directory: templates and demo data ship in it (a wheel) or beside it (a
# source checkout), wherever the module that needs them sits.
PACKAGE = Path(__file__).resolve().parent
