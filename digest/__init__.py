"""digest: a personalised daily digest of new research papers, sent by email."""

from __future__ import annotations

__version__ = "0.1.0"
