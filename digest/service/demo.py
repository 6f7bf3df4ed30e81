"""`digest demo`: the whole daily cycle, offline, in a scratch directory.

A small listing shipped with the package stands in for arXiv and Hugging Face, the example
subscriber stands in for a reader, and a local SMTP server (aiosmtpd) stores every message it
receives, byte for byte, in a Maildir under the data directory.
"""

from __future__ import annotations

import json
import mailbox
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from digest import PACKAGE
from digest.config import Config, SmtpConfig, SourceConfig, SourceKind, WebConfig
from digest.service.pipeline import RunReport, run
from digest.service.workspace import packaged_example_profile, write_secret_key
from digest.store.papers import Store

DEMO_DATA = PACKAGE / "demo_data"
# The shipped files standing in for each kind of source: (name, kind, file in DEMO_DATA).
DEMO_SOURCES: tuple[tuple[str, SourceKind, str], ...] = (
    ("arxiv", "arxiv-rss", "listing.xml"),
    ("arxiv-api", "arxiv-api", "examples.xml"),
    ("hf", "hf-daily", "hf_daily.json"),
)


class MaildirHandler:
    """An aiosmtpd handler that files each message into a Maildir exactly as received."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(path, create=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        self.maildir.add(data if isinstance(data, bytes) else data.encode())
        return "250 2.0.0 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_capture(maildir: Path, port: int | None = None) -> Iterator[int]:
    """A local SMTP server on 127.0.0.1 storing into ``maildir``; yields its port."""
    port = port or free_port()
    controller = Controller(MaildirHandler(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def demo_config(directory: Path, smtp_port: int) -> Config:
    data = directory / "data"
    key = data / "secret_key"
    write_secret_key(key)
    return Config(
        data_dir=data,
        subscribers_dir=directory / "subscribers",
        smtp=SmtpConfig(
            host="127.0.0.1",
            port=smtp_port,
            security="none",
            from_address="digest@localhost",
            from_name="Paper digest (demo)",
        ),
        web=WebConfig(base_url="http://localhost:8000", secret_key_file=key),
        sources=[
            SourceConfig(name=name, kind=kind, url=(DEMO_DATA / file).as_uri())
            for name, kind, file in DEMO_SOURCES
        ],
    )


EXAMPLE_ADDRESS = "ada@example.org"
# The first line of the digest.toml the demo writes; any other file there is not replaced.
DEMO_CONFIG_MARK = "# Written by `digest demo`"
# The Hugging Face daily email this project began from, as a profile: no interests, just the
# day's most upvoted papers.
TRENDING_PROFILE = """\
# Only the day's most upvoted Hugging Face papers, best first: no personal ranking.
email = "trending@example.org"
name = "Trending reader"
mode = "trending"
max_papers = 5
min_upvotes = 5
"""


@dataclass
class DemoResult:
    report: RunReport
    maildir: Path
    message: Path | None


def run_demo(directory: Path, now: datetime | None = None) -> DemoResult:
    directory = directory.absolute()
    profile = directory / "subscribers" / "example.toml"
    if not profile.exists():
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(packaged_example_profile().read_text(encoding="utf-8"))
    trending = directory / "subscribers" / "trending.toml"
    if not trending.exists():
        trending.write_text(TRENDING_PROFILE, encoding="utf-8")
    maildir = directory / "data" / "maildir"
    with smtp_capture(maildir) as port:
        cfg = demo_config(directory, port)
        write_demo_config(directory / "digest.toml", port)  # an operator's own is kept
        store = Store(cfg.database_url)
        try:
            store.upgrade()
            report = run(cfg, store, now=now)
        finally:
            store.dispose()
    return DemoResult(report, maildir, message_to(maildir, EXAMPLE_ADDRESS))


def write_demo_config(path: Path, smtp_port: int) -> None:
    """The demo's site as a digest.toml beside it, so every other command can look at what the
    demo did (`digest --config DIR/digest.toml status`). Relative paths: the directory can
    be moved. Its mail server ran only for the demo, which the file says. A digest.toml it
    did not write (the demo run in a real site's directory) is kept."""
    if path.exists() and not path.read_text(encoding="utf-8", errors="replace").startswith(
        DEMO_CONFIG_MARK
    ):
        return
    sources = "".join(
        f'\n[[sources]]\nname = "{name}"\nkind = "{kind}"\nurl = {json.dumps(url)}\n'
        for name, kind, url in ((n, k, (DEMO_DATA / f).as_uri()) for n, k, f in DEMO_SOURCES)
    )
    text = f"""{DEMO_CONFIG_MARK}: the demo's site, for the other commands to look at.
# Its mail server (port {smtp_port}) ran only while the demo did: a `digest run` with this
# file finds no relay and keeps its digests to retry.
data_dir = "data"
subscribers_dir = "subscribers"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from_address = "digest@localhost"
from_name = "Paper digest (demo)"

[web]
base_url = "http://localhost:8000"
secret_key_file = "data/secret_key"
{sources}"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _messages(maildir: Path) -> list[Path]:
    return [
        p for sub in ("new", "cur") if (maildir / sub).is_dir() for p in (maildir / sub).iterdir()
    ]


def messages_in(maildir: Path) -> int:
    return len(_messages(maildir))


def message_to(maildir: Path, address: str) -> Path | None:
    """The newest message in the Maildir addressed to ``address``."""
    files = _messages(maildir)
    wanted = f"<{address}>".encode()
    mine = [p for p in files if wanted in p.read_bytes().split(b"\r\n\r\n", 1)[0]]
    return max(mine, key=lambda p: p.stat().st_mtime) if mine else None
