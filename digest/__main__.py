"""`python -m digest` runs the CLI, as the installed `digest` command does."""

from __future__ import annotations

from digest.cli import main

main()
