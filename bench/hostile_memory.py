"""Peak memory of the processes that face hostile input (issue 12, RELIABILITY.md F3/F4).

1. `digest ingest` against a local server answering with `Content-Encoding: gzip, gzip`: a few
   KB that expand to --bomb-gib GiB of zeros (the cap is the source's max_bytes, 50 MB).
2. `digest web` receiving a --post-mb MB POST to a valid unsubscribe link.

Each is measured with /usr/bin/time -v (maximum resident set size) around the real command.

    python bench/hostile_memory.py [--bomb-gib 4] [--post-mb 300]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digest.config import load_config  # noqa: E402
from digest.mail.links import Signer  # noqa: E402
from digest.service.demo import free_port  # noqa: E402
from digest.store import Store  # noqa: E402


def stacked_bomb(gib: int) -> bytes:
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [inner.compress(block) for _ in range(gib << 10)]
    parts.append(inner.flush())
    return gzip.compress(b"".join(parts), 9)


def serve_bomb(body: bytes) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Encoding", "gzip, gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def site(directory: Path, feed_url: str) -> None:
    (directory / "secret").write_text("k" * 40)
    (directory / "digest.toml").write_text(
        'data_dir = "data"\n[web]\nbase_url = "https://papers.example.org"\n'
        'secret_key_file = "secret"\n'
        f'[[sources]]\nname = "bomb"\nkind = "arxiv-rss"\nurl = "{feed_url}"\n'
    )


def max_rss_mb(time_output: str) -> float:
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output)
    assert found, time_output
    return int(found.group(1)) / 1024


def digest_command(*args: str) -> list[str]:
    return ["/usr/bin/time", "-v", sys.executable, "-m", "digest", *args]


def measure_ingest(directory: Path, gib: int) -> tuple[float, str]:
    body = stacked_bomb(gib)
    httpd, port = serve_bomb(body)
    try:
        site(directory, f"http://127.0.0.1:{port}/feed")
        ran = subprocess.run(
            digest_command("ingest"), cwd=directory, capture_output=True, text=True, timeout=600
        )
    finally:
        httpd.shutdown()
    error = next((ln for ln in ran.stderr.splitlines() if "larger than" in ln), "(no cap hit!)")
    print(f"  bomb: {len(body):,} bytes on the wire, {gib} GiB after two gunzips")
    return max_rss_mb(ran.stderr), error.strip()


def measure_web_post(directory: Path, megabytes: int) -> tuple[float, str]:
    cfg = load_config(directory / "digest.toml")
    signer = Signer(cfg)
    store = Store(cfg.database_url)
    store.upgrade()
    store.remember_ref(signer.ref("ada@example.org"), "ada@example.org")
    store.dispose()
    token = signer.unsubscribe("ada@example.org")
    port = free_port()
    proc = subprocess.Popen(
        digest_command("web", "--port", str(port)),
        cwd=directory,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"POST /u/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: {megabytes << 20}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        chunk = b"a" * (1 << 20)
        try:
            for _ in range(megabytes):
                sock.sendall(chunk)
                sent += 1
        except OSError:
            pass  # the server answered 413 and closed: the rest is never read
        sock.settimeout(5)
        try:
            answer = sock.recv(100)
        except OSError:
            answer = b"(connection closed)"
    # /usr/bin/time does not pass signals on: stop its child, and it reports.
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    print(f"  POST: {megabytes} MB announced, {sent} MB written before the server closed")
    return max_rss_mb(err), answer.split(b"\r\n")[0].decode(errors="replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bomb-gib", type=int, default=4)
    parser.add_argument("--post-mb", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("COLUMNS", "200")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print("digest ingest against a stacked gzip bomb:")
        ingest_mb, ingest_error = measure_ingest(directory, args.bomb_gib)
        print(f"  peak RSS {ingest_mb:.0f} MB; {ingest_error}")
        print("digest web under a large POST to a valid link:")
        web_mb, web_answer = measure_web_post(directory, args.post_mb)
        print(f"  peak RSS {web_mb:.0f} MB; answer: {web_answer}")
    print(
        f"\nRESULT ingest_peak_mb={ingest_mb:.0f} web_peak_mb={web_mb:.0f} "
        f"(floor: each below 300 MB)\ncommand: python bench/hostile_memory.py "
        f"--bomb-gib {args.bomb_gib} --post-mb {args.post_mb}"
    )
    if ingest_mb >= 300 or web_mb >= 300:
        sys.exit(1)


if __name__ == "__main__":
    main()
