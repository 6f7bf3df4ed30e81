"""Shared fixtures: a real SQLite store, a real SMTP server, a real local HTTP feed server,
personas (ada, bob), and the real data in ../shared/data when it is there."""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from digest.cli import cli
from digest.config import Config, SmtpConfig, SourceConfig, WebConfig
from digest.service.demo import free_port
from digest.store import Store

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(os.environ.get("DIGEST_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEMO_DATA = ROOT / "digest" / "demo_data"
# A fixed "now": Monday 23 November 2026, 08:00 UTC, after the demo listing of Friday the 20th.
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(needs_shared)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """With DIGEST_FORBID_SKIPS=1 (CI) a skipped test fails the run: CI never passes by skipping."""
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get("DIGEST_FORBID_SKIPS") == "1" and skipped:
        terminalreporter.write_line(
            f"FAILED: {len(skipped)} test(s) skipped; CI expects every test to run", red=True
        )
        terminalreporter._session.exitstatus = 1


# -- SMTP ---------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SmtpHandler:
    """Records every message; `fail` maps a command (RCPT, DATA) to the reply to give instead."""

    received: list[Received] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)
    fail_for: set[str] = field(default_factory=set)  # only these recipients (empty: everyone)

    def _failing(self, command: str, rcpt: str | None) -> str | None:
        if command not in self.fail:
            return None
        if self.fail_for and rcpt not in self.fail_for:
            return None
        return self.fail[command]

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if reply := self._failing("RCPT", address):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else None
        if reply := self._failing("DATA", rcpt):
            return reply
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: SmtpHandler

    @property
    def received(self) -> list[Received]:
        return self.handler.received


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    handler = SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


# -- HTTP feed server ---------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    content_type: str = "application/xml"
    etag: str | None = None
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0  # seconds between bytes of the body (a server that drips)


class FeedServer:
    """A local HTTP server; a route may be a list, answered in turn (the last one repeats), and
    a path in `answers` is answered by its function of the request's query parameters."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Route | list[Route]] = {}
        self.answers: dict[str, Callable[[dict[str, str]], Route]] = {}
        self.requests: list[dict[str, str]] = []
        self.times: list[float] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.times.append(time.monotonic())
                server.requests.append({"path": self.path, **dict(self.headers.items())})
                found = server.routes.get(path)
                if path in server.answers:
                    query = urllib.parse.parse_qs(self.path.partition("?")[2])
                    found = server.answers[path]({k: v[0] for k, v in query.items()})
                if isinstance(found, list):
                    route = found.pop(0) if len(found) > 1 else found[0]
                else:
                    route = found
                if route is None:
                    self.send_error(404)
                    return
                if route.delay:
                    threading.Event().wait(route.delay)
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                if route.etag:
                    self.send_header("ETag", route.etag)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if not route.trickle:
                        self.wfile.write(route.body)
                    for i in range(len(route.body) if route.trickle else 0):
                        self.wfile.write(route.body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(route.trickle)

            def log_message(self, *args: Any) -> None:
                pass

        self.host = host
        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    try:
        yield server
    finally:
        server.close()


# -- store, config, personas --------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    s.upgrade()
    try:
        yield s
    finally:
        s.dispose()


ADA = """\
email = "ada@example.org"
name = "Ada"
timezone = "Europe/London"
send_at = "07:00"
max_papers = 8

[interests]
keywords = ["state space models", "long context"]
authors = ["Mira Okafor"]
papers = ["2609.04411", "2610.02290"]
"""

BOB = """\
email = "bob@example.org"
name = "Bob"
timezone = "America/New_York"
send_at = "06:30"

[interests]
keywords = ["retrieval-augmented generation"]
exclude = ["prompt injection"]
categories = ["cs.IR"]
"""


def write_profile(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def demo_sources() -> list[SourceConfig]:
    return [
        SourceConfig(name="arxiv", kind="arxiv-rss", url=(DEMO_DATA / "listing.xml").as_uri()),
        SourceConfig(name="arxiv-api", kind="arxiv-api", url=(DEMO_DATA / "examples.xml").as_uri()),
        SourceConfig(name="hf", kind="hf-daily", url=(DEMO_DATA / "hf_daily.json").as_uri()),
    ]


@pytest.fixture
def workspace(tmp_path: Path, smtp_server: SmtpServer) -> Config:
    """A config over the demo listing with ada and bob subscribed, sending to smtp_server."""
    subs = tmp_path / "subscribers"
    write_profile(subs, "ada", ADA)
    write_profile(subs, "bob", BOB)
    key = tmp_path / "secret_key"
    key.write_text("test-secret-key\n")
    return Config(
        data_dir=tmp_path / "data",
        subscribers_dir=subs,
        smtp=SmtpConfig(
            host=smtp_server.host,
            port=smtp_server.port,
            security="none",
            from_address="digest@papers.example.org",
        ),
        web=WebConfig(base_url="https://papers.example.org", secret_key_file=key),
        sources=demo_sources(),
    )


# -- the CLI as an operator runs it --------------------------------------------------------


def digest(
    *args: str, cwd: Path, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command in a child process; an ``env`` value of None unsets that variable."""
    merged = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env = {k: v for k, v in merged.items() if v is not None}
    full_env.pop("DIGEST_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def digest_here(
    *args: str, cwd: Path, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """The same command in this process, through click's CliRunner: the same exit statuses and
    output as `digest` above at a fraction of the start-up time. What needs a real process (the
    umask, signals, `-v` tracebacks, the entry point itself) stays with `digest`."""
    merged: dict[str, str | None] = {"COLUMNS": "200", "DIGEST_CONFIG": None, **(env or {})}
    before = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, list(args), env=merged, prog_name="digest")
    finally:
        os.chdir(before)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # A real process would print this traceback and exit 1; here it fails the test legibly.
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def site(tmp_path: Path, smtp_server: SmtpServer) -> Path:
    """A directory with digest.toml (demo listing, local SMTP) and two subscribers."""
    (tmp_path / "digest.toml").write_text(f"""
data_dir = "data"
[smtp]
host = "127.0.0.1"
port = {smtp_server.port}
security = "none"
from_address = "digest@papers.example.org"
[web]
base_url = "https://papers.example.org"
secret_key_file = "secret"
[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "{(DEMO_DATA / "listing.xml").as_uri()}"
[[sources]]
name = "arxiv-api"
kind = "arxiv-api"
url = "{(DEMO_DATA / "examples.xml").as_uri()}"
[[sources]]
name = "hf"
kind = "hf-daily"
url = "{(DEMO_DATA / "hf_daily.json").as_uri()}"
""")
    (tmp_path / "secret").write_text("k" * 40)
    write_profile(tmp_path / "subscribers", "ada", ADA)
    write_profile(tmp_path / "subscribers", "bob", BOB)
    return tmp_path


def relay_elsewhere(site: Path) -> int:
    """Point the site's SMTP at a free port where nothing listens (the relay is down)."""
    cfg = site / "digest.toml"
    text = cfg.read_text()
    start = text.index("port = ") + len("port = ")
    port = free_port()
    cfg.write_text(text[:start] + str(port) + text[text.index("\n", start) :])
    return port


def drop_source(site: Path, name: str) -> None:
    """Remove one [[sources]] table from the site's digest.toml, as an operator would."""
    cfg = site / "digest.toml"
    text = cfg.read_text()
    start = text.index(f'[[sources]]\nname = "{name}"')
    end = text.find("[[sources]]", start + 1)
    cfg.write_text(text[:start] + (text[end:] if end != -1 else ""))


def write_config(path: Path, cfg_text: str) -> Path:
    path.write_text(cfg_text, encoding="utf-8")
    return path


def run_bench(script: str, *args: str, timeout: float = 600) -> str:
    """Run a script from bench/ as a subprocess; its output, failing the test on a non-zero exit."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


_CHAR_REF = re.compile(r"&#([0-9]+);")


def bodies(raw: bytes) -> tuple[str, str]:
    """The plain text and the HTML of a message as a reader's mail client shows them. The HTML
    part goes out as 7-bit ASCII, its other characters as references (`&#252;`) that the
    client's HTML parser turns back into characters; only those are resolved here, so an
    escaped `&lt;` stays as the client receives it (a feed cannot forge a reference: its "&"
    arrives as `&amp;`)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]

    def char(m: re.Match[str]) -> str:
        code = int(m.group(1))
        return chr(code) if code > 127 else m.group(0)

    return str(text), _CHAR_REF.sub(char, str(html))


def write_small_site(root: Path, smtp_port: int, sources: str) -> Path:
    """A digest.toml and key in ``root`` (local SMTP, the public base URL) with these
    `[[sources]]` tables; returns ``root``."""
    (root / "key").write_text("k" * 40)
    (root / "digest.toml").write_text(f"""
[smtp]
host = "127.0.0.1"
port = {smtp_port}
from_address = "digest@papers.example.org"
[web]
base_url = "https://papers.example.org"
secret_key_file = "key"
{sources}""")
    return root


def lines_by_file(
    result: subprocess.CompletedProcess[str], marker: str = ".toml: "
) -> dict[str, str]:
    """`digest subscribers check`'s lines holding ``marker``, by the profile file they name
    (a `note:` line by its file too)."""
    return {
        Path(x.removeprefix("note: ").split(": ")[0]).name: x
        for x in (result.stdout + result.stderr).splitlines()
        if marker in x
    }
