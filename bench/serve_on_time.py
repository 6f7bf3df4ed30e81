"""Acceptance check for `digest serve`: a subscriber whose send_at is the next minute gets the
digest within that minute; then SIGTERM, and no delivery is left `sending`.

    python bench/serve_on_time.py

Takes up to two real minutes (it waits for a wall-clock minute), so it is a script, not a test.
Uses the demo listing and a local SMTP capture; nothing leaves the machine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from digest.service.demo import DEMO_DATA, MaildirHandler, free_port
from digest.store import Store


def main() -> int:
    from aiosmtpd.controller import Controller

    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        port = free_port()
        received: list[datetime] = []

        class Timed(MaildirHandler):
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                received.append(datetime.now(UTC))
                return await super().handle_DATA(server, session, envelope)

        controller = Controller(Timed(site / "maildir"), hostname="127.0.0.1", port=port)
        controller.start()
        now = datetime.now(UTC)
        if now.second > 50:  # leave the service time to start before the minute turns
            time.sleep(61 - now.second)
        slot = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        (site / "key").write_text("k" * 40)
        (site / "digest.toml").write_text(f"""
[smtp]
host = "127.0.0.1"
port = {port}
[web]
secret_key_file = "key"
[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "{(DEMO_DATA / "listing.xml").as_uri()}"
""")
        (site / "subscribers").mkdir()
        (site / "subscribers" / "ada.toml").write_text(
            f'email = "ada@example.org"\ntimezone = "UTC"\nsend_at = "{slot:%H:%M}"\n'
            '[interests]\nkeywords = ["state space models"]\n'
        )
        cfg = ["--config", str(site / "digest.toml")]
        subprocess.run(
            [sys.executable, "-m", "digest", *cfg, "ingest"], check=True, capture_output=True
        )
        started = datetime.now(UTC)
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", *cfg, "serve"], stderr=subprocess.PIPE, text=True
        )
        while not received and datetime.now(UTC) < slot + timedelta(minutes=2):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=120)
        controller.stop()
        store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
        states = store.counts_by_state()
        store.dispose()
    print(f"serve started {started:%H:%M:%S}, send_at {slot:%H:%M} UTC")
    if not received:
        print("FAILED: no digest arrived", log[-2000:], sep="\n")
        return 1
    late = (received[0] - slot).total_seconds()
    print(f"digest arrived {received[0]:%H:%M:%S.%f} UTC, {late:.1f} s after the slot")
    print(f"after SIGTERM (exit {proc.returncode}): deliveries by state {states}")
    print("reproduce: python bench/serve_on_time.py")
    ok = 0 <= late < 60 and "sending" not in states and proc.returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
