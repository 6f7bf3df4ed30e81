"""`digest web` faces the internet: a huge body, idle or trickling connections and a flood of
them cannot exhaust its memory or its file descriptors (issue 12, items 2 and 6). Against the real
command in its own process, with the usual 1,024 file-descriptor limit."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from digest.config import load_config
from digest.mail.links import Signer
from digest.service.demo import free_port
from digest.store import Store

PER_PROCESS_FILES = 1024


class WebProcess:
    def __init__(self, site: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "COLUMNS": "200"}
        env.pop("DIGEST_CONFIG", None)

        def limit_files() -> None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (PER_PROCESS_FILES, hard))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "web", "--port", str(self.port)],
            cwd=site,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_files,
        )
        for _ in range(150):
            try:
                httpx.get(f"{self.base}/healthz", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("digest web did not start")

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


@pytest.fixture
def web_site(site: Path) -> Iterator[tuple[WebProcess, str]]:
    """`digest web` on the site, and a real unsubscribe token of Ada's (as a run records it)."""
    text = (site / "digest.toml").read_text()
    (site / "digest.toml").write_text(
        text.replace("[web]\n", "[web]\nheader_timeout = 1.5\nmax_connections = 200\n")
    )
    cfg = load_config(site / "digest.toml")
    signer = Signer(cfg)
    store = Store(cfg.database_url)
    store.upgrade()
    store.remember_ref(signer.ref("ada@example.org"), "ada@example.org")
    store.dispose()
    web = WebProcess(site)
    try:
        yield web, signer.unsubscribe("ada@example.org")
    finally:
        web.stop()


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_300_mb_post_to_a_valid_link_is_refused_with_413_before_its_body_is_read(
    web_site: tuple[WebProcess, str], site: Path
) -> None:
    web, token = web_site
    with socket.create_connection(("127.0.0.1", web.port)) as sock:
        sock.sendall(
            f"POST /u/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
            + b"List-Unsubscribe=One-Click&"
        )
        assert _answer(sock).startswith(b"HTTP/1.1 413")
    # A body without a length is cut off as soon as it passes the limit.
    with socket.create_connection(("127.0.0.1", web.port)) as sock:
        sock.sendall(
            f"POST /u/{token} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(5):
            try:
                sock.sendall(b"800\r\n" + b"a" * 0x800 + b"\r\n")
            except BrokenPipeError:
                break  # the server answered and closed before the rest arrived: as it should
        assert _answer(sock).startswith(b"HTTP/1.1 413")
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        assert not store.is_unsubscribed("ada@example.org")  # refused means refused
    finally:
        store.dispose()
    # A real one-click unsubscribe still works.
    done = httpx.post(f"{web.base}/u/{token}", content=b"List-Unsubscribe=One-Click", timeout=5)
    assert done.status_code == 200


def test_1100_idle_connections_leave_the_links_answering_and_the_log_quiet(
    web_site: tuple[WebProcess, str],
) -> None:
    web, token = web_site
    idle = []
    try:
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", web.port), timeout=5))
        started = time.monotonic()
        page = httpx.get(f"{web.base}/u/{token}", timeout=10)
        assert page.status_code == 200
        assert time.monotonic() - started < 5
    finally:
        for s in idle:
            s.close()
    err = web.stop()
    assert len(err) < 20_000, err[-2000:]  # no line per refused accept
    assert "Too many open files" not in err or err.count("Too many open files") <= 2


def test_request_headers_trickled_in_are_cut_at_the_header_timeout(
    web_site: tuple[WebProcess, str],
) -> None:
    web, _ = web_site
    with socket.create_connection(("127.0.0.1", web.port)) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.3)
            if time.monotonic() - started > 6:
                break
        if not closed:
            closed = sock.recv(100) == b""
        assert closed and time.monotonic() - started < 6


def test_the_memory_bench_runs_small_and_stays_under_its_floor() -> None:
    from tests.conftest import run_bench

    out = run_bench("hostile_memory.py", "--bomb-gib", "1", "--post-mb", "20")
    assert "RESULT ingest_peak_mb=" in out and "413" in out


def test_a_link_with_a_slash_added_is_not_redirected_to_the_host_the_client_named(
    web_site: tuple[WebProcess, str],
) -> None:
    web, token = web_site
    answer = httpx.get(f"{web.base}/u/{token}/", headers={"Host": "evil.example"})
    assert answer.status_code == 404 and "location" not in answer.headers


def test_a_database_locked_past_its_wait_gets_the_try_again_page_and_one_line_without_the_address(
    web_site: tuple[WebProcess, str], site: Path
) -> None:
    """Another process holds the SQLite file for longer than the 10 s a connection waits: the
    reader gets the site's page with a 503, the log one line, and no address or traceback."""
    import sqlite3

    web, token = web_site
    lock = sqlite3.connect(site / "data" / "digest.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        answer = httpx.post(
            f"{web.base}/u/{token}", content=b"List-Unsubscribe=One-Click", timeout=30
        )
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert answer.status_code == 503 and "Please try again" in answer.text
    assert "Traceback" not in answer.text
    log = web.stop()
    assert "request failed: path=/u/…" in log, log
    assert "ada@example.org" not in log and "Traceback" not in log, log
    again = WebProcess(site)  # and the link works once the lock is gone
    try:
        done = httpx.post(f"{again.base}/u/{token}", content=b"List-Unsubscribe=One-Click")
        assert done.status_code == 200
    finally:
        again.stop()
