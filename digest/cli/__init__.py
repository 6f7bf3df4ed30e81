"""The `digest` command: a thin layer that wires the service to click.

`app` holds the group, the shared helpers and the daily commands; `ops`, `subscribers` and `db`
add their command groups when imported here. Nothing below the CLI imports it.
"""

from __future__ import annotations

from digest.cli import db, ops, subscribers  # noqa: F401  (each registers its commands)
from digest.cli.app import cli, main

__all__ = ["cli", "main"]
