"""The `digest` command: a thin layer that wires the service to click.

`app` holds the group, the shared helpers and the daily commands; `cycle` (`run`, `demo`),
`ops`, `subscribers` and `db` add theirs when imported here. Nothing below the CLI imports it.
"""

from __future__ import annotations

from digest.cli import cycle, db, ops, subscribers  # noqa: F401  (each registers its commands)
from digest.cli.app import cli, main

__all__ = ["cli", "main"]
