"""`digest serve` sending one large send slot: how long after the slot's time the last digest
of it is in the sink.

    python bench/serve_slot.py [--subscribers 20000] [--lead 120] [--workers N] [--keep DIR]

A workspace as bench/cycle.py makes it (the real 1,504-item arXiv listing over a 20,000-paper
corpus, ingested before), with every one of N readers in one slot. The slot is not waited for
at its daily hour: the clock is moved to it instead, by giving every profile a send time
`--lead` seconds or so after the workspace is ready (the next whole minute, UTC). `digest serve`
starts before then, reads the profiles and schedules the slot; at the slot's minute its
scheduler plans and sends all N digests into Postfix's `smtp-sink`.

Printed: the seconds from the slot's time to the last message in the sink (issue 14 asks for
2 minutes at 20,000), to the service's `event=slot` line, peak memory (PSS of the service and
its planners), and what arrived: every reader with a digest exactly once. `--workers 1` plans
the slot in the service's own process, for comparison. Needs the Debian package `postfix`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cycle import PeakMemory, arrived, digest, finish, start_sink, workspace  # noqa: E402

from digest.service.demo import free_port  # noqa: E402
from tests.profile_mix import LABELLED, LISTING, corpus_rows  # noqa: E402


def move_to_slot(subs: Path, lead: float) -> datetime:
    """Give every profile the send time of the first whole minute `lead` seconds from now."""
    at = (datetime.now(UTC) + timedelta(seconds=lead + 60)).replace(second=0, microsecond=0)
    line = f'send_at = "{at:%H:%M}"\ntimezone = "UTC"\n'
    for path in subs.glob("*.toml"):
        text = path.read_text()
        first, rest = text.split("\n", 1)  # the email line: top-level keys go before tables
        path.write_text(f"{first}\n{line}{rest}")
    return at


def count_files(dump: Path) -> tuple[int, float]:
    """Messages the sink wrote so far, and when the newest was written."""
    n, newest = 0, 0.0
    for path in dump.rglob("*"):
        if path.is_file():
            n += 1
            newest = max(newest, path.stat().st_mtime)
    return n, newest


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument(
        "--lead", type=float, default=120, help="seconds at least between ready and the slot"
    )
    parser.add_argument("--workers", type=int, help="[planning] workers (default: per core)")
    parser.add_argument("--corpus", type=int, default=20_000)
    parser.add_argument("--keep", help="make the workspace under DIR and keep it")
    args = parser.parse_args()
    if not (LABELLED.exists() and LISTING.exists()):
        print("needs ../shared/data (the labelled corpus and the arXiv listing)", file=sys.stderr)
        return 2
    sink_bin = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(sink_bin).exists():
        print("needs smtp-sink (apt-get install postfix)", file=sys.stderr)
        return 2
    n = args.subscribers
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="digest-slot-", dir=args.keep))
    sink, dump = start_sink(port, args.keep)
    serve: subprocess.Popen[str] | None = None
    try:
        cfg = workspace(tmp, n, corpus_rows(args.corpus), "sqlite", port, args.workers)
        finish(digest(cfg, "ingest"))
        slot = move_to_slot(tmp / "subscribers", args.lead)
        print(f"{n} readers in the slot of {slot:%H:%M} UTC; starting digest serve", flush=True)
        # Not through /usr/bin/time as the other commands: SIGTERM must reach the service.
        serve = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(cfg), "serve"],
            env={k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"},
            cwd=cfg.parent,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        lines: list[tuple[float, str]] = []

        def read_log() -> None:
            assert serve is not None and serve.stderr is not None
            for raw in serve.stderr:
                lines.append((time.time(), raw.rstrip()))

        reader = threading.Thread(target=read_log, daemon=True)
        reader.start()
        memory = PeakMemory([serve.pid])
        slot_line: tuple[float, str] | None = None
        deadline = slot.timestamp() + 1800
        while time.time() < deadline and serve.poll() is None:
            slot_line = next(((t, s) for t, s in lines if "event=slot " in s), None)
            if slot_line is not None:
                break
            time.sleep(1)
        peak = memory.stop()
        loaded = next((t for t, s in lines if "event=profiles-loaded" in s), None)
        time.sleep(1)
        files, newest = count_files(dump)
        got = arrived(dump)
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(120)
        reader.join(5)
        if slot_line is None:
            print("the slot never finished; the service said:", file=sys.stderr)
            print("\n".join(s for _, s in lines[-30:]), file=sys.stderr)
            return 1
        counts = dict(re.findall(r"(\S+)=(\d+)", slot_line[1].split("event=slot", 1)[1]))
        sent = int(counts.get("sent", 0))
        twice = sum(1 for c in got.values() if c > 1)
        everyone = {f"reader{i:06d}@bench.example.org" for i in range(n)}
        stray = len(set(got) - everyone)
        if loaded is not None and loaded > slot.timestamp():
            print("  (the profiles were read after the slot's time: raise --lead)")
        print(
            f"  last digest in the sink {newest - slot.timestamp():.1f} s after the slot's time "
            f"(the service's event=slot line at {slot_line[0] - slot.timestamp():.1f} s); "
            f"peak {peak:.0f} MB (PSS of serve and its planners)"
        )
        print(
            f"  outcomes {counts}; in the sink {files} messages to {len(got)} readers, "
            f"{twice} twice, {stray} strays; serve exit status after SIGTERM {code}"
        )
        ok = sent == len(got) == files and twice == 0 and stray == 0 and code == 0
        print(
            f"reproduce: python bench/serve_slot.py --subscribers {n}"
            + (f" --workers {args.workers}" if args.workers else "")
        )
        return 0 if ok else 1
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
        sink.send_signal(signal.SIGTERM)
        sink.wait(5)
        shutil.rmtree(dump, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
