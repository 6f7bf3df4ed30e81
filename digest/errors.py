"""One error family for everything a user or operator can fix.

Each error carries a one-line message naming what is wrong and a hint naming where to fix it.
The CLI prints both and exits 1; a run catches them per feed or per subscriber and goes on.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """What `digest run` and `digest ingest` tell a cron job or a monitor (see the README)."""

    OK = 0  # every due digest went out (or none was due); every source and profile was fine
    ERROR = 1  # the command could not do its work: config, database, key, usage
    PARTIAL = 2  # it ran, but a digest is still unsent or a source or profile failed
    PAUSED = 3  # delivery is paused (by `digest pause`, or by itself after a relay refusal)


class DigestError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` what to check."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(DigestError):
    hint = "check the service configuration file (digest.toml)"


class ProfileError(DigestError):
    """A subscriber profile is invalid; ``path`` and ``key`` locate the mistake."""

    hint = "see subscribers/example.toml for every allowed key"

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        location = f"{path}: {key}" if key else path
        super().__init__(f"{location}: {problem}")


class FeedError(DigestError):
    """A source could not be fetched or parsed."""

    hint = "check the source's url in digest.toml, or run `digest ingest --source NAME -v`"


class StoreError(DigestError):
    hint = "check [database] url in digest.toml and that the database is reachable"


class RenderError(DigestError):
    hint = "check the templates and `digest preview`"


class NotFound(DigestError):
    hint = "run `digest subscribers list` to see who is configured"
