"""Delivery throughput: the engine against Postfix's smtp-sink, next to smtp-source.

    python bench/delivery.py [--messages 10000] [--size 30000] [--connections 10]

Both push the same number of messages of the same size over the same number of connections into
one `smtp-sink` on loopback. The engine runs in a child process (so its peak memory is its own)
against a fresh SQLite database holding the planned digests, exactly as `digest run` would find
them. Needs the Debian package `postfix` (only the smtp-sink and smtp-source binaries are used;
the mail daemon need not run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from digest.config import Config, DatabaseConfig, DeliveryConfig, SmtpConfig, WebConfig
from digest.mail.engine import deliver
from digest.service.demo import free_port
from digest.store import Store
from digest.store.schema import Delivery, DeliveryMessage


def smtp_source(source_bin: str, port: int, messages: int, size: int, connections: int) -> float:
    """Seconds Postfix's smtp-source takes to push ``messages`` of ``size`` bytes over
    ``connections`` connections into the sink on ``port``: the yardstick of the benches."""
    t0 = time.perf_counter()
    subprocess.run(
        [
            *(source_bin, "-s", str(connections), "-m", str(messages), "-l", str(size)),
            *("-f", "digest@bench.example.org", "-t", "reader@bench.example.org"),
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def message(i: int, size: int) -> bytes:
    head = (
        f"From: Paper digest <digest@bench.example.org>\r\nTo: reader{i}@bench.example.org\r\n"
        f"Subject: 10 new papers for you\r\nMessage-ID: <bench.{i}@bench.example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"A digest line of about seventy-six characters, as a wrapped text part has.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def plan(store: Store, n: int, size: int) -> None:
    now = datetime.now(UTC)
    day = now.date()
    rows = [
        {
            "subscriber": f"reader{i}@bench.example.org",
            "digest_date": day,
            "message_id": f"<bench.{i}@bench.example.org>",
            "state": "pending",
            "attempts": 0,
            "ambiguous_count": 0,
            "paper_ids": [],
            "reasons": {},
            "created_at": now,
            "expire_at": now + timedelta(hours=20),
        }
        for i in range(n)
    ]
    with store.session() as s:
        for i in range(0, n, 1000):
            s.exec(insert(Delivery), params=rows[i : i + 1000])  # type: ignore[call-overload]
        s.commit()
        ids = [r[0] for r in s.execute(select(Delivery.id).order_by(Delivery.id)).all()]
        for i in range(0, n, 1000):
            s.exec(  # type: ignore[call-overload]
                insert(DeliveryMessage),
                params=[
                    {"delivery_id": d, "message": message(k, size)}
                    for k, d in enumerate(ids[i : i + 1000], start=i)
                ],
            )
        s.commit()


def engine_child(db_url: str, port: int, connections: int, processes: int) -> None:
    """Runs in its own process: send everything due, print figures as JSON."""
    store = Store(db_url)
    cfg = Config(
        database=DatabaseConfig(url=db_url),
        smtp=SmtpConfig(
            host="127.0.0.1",
            port=port,
            security="none",
            from_address="digest@bench.example.org",
            timeout=30,
        ),
        web=WebConfig(base_url="https://bench.example.org"),
        delivery=DeliveryConfig(
            connections=connections, messages_per_connection=1000, processes=processes
        ),
    )
    t0 = time.perf_counter()
    report = deliver(store, cfg)
    elapsed = time.perf_counter() - t0
    # The largest of this process and its sending children (each measured on its own).
    peak_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "peak_mb": peak_mb,
                "counts": dict(report.counts),
                "connections": report.connections,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--processes", type=int, default=1, help="sending processes ([delivery] processes)"
    )
    parser.add_argument(
        "--engine-child", nargs=4, metavar=("DB", "PORT", "CONN", "PROC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.engine_child:
        engine_child(
            args.engine_child[0],
            int(args.engine_child[1]),
            int(args.engine_child[2]),
            int(args.engine_child[3]),
        )
        return 0
    sink_bin, source_bin = (
        shutil.which("smtp-sink") or "/usr/sbin/smtp-sink",
        shutil.which("smtp-source") or "/usr/sbin/smtp-source",
    )
    if not (os.path.exists(sink_bin) and os.path.exists(source_bin)):
        print("needs smtp-sink and smtp-source: apt-get install postfix", file=sys.stderr)
        return 1
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(
        [sink_bin, *user, f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine_runs: list[dict[str, float]] = []
    source_runs: list[float] = []
    left: dict[str, int] = {}
    try:
        time.sleep(0.3)
        # Alternate the two, several times: on a shared 2-core VM one run can be off by 3x.
        for _ in range(args.repeat):
            engine = run_engine_once(args, port)
            engine_runs.append(engine)
            left = engine["left"]  # type: ignore[assignment]
            source_runs.append(
                smtp_source(source_bin, port, args.messages, args.size, args.connections)
            )
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(5)
    n = args.messages
    engine_rates = [n / e["elapsed"] for e in engine_runs]
    source_rates = [n / t for t in source_runs]
    engine_rate = statistics.median(engine_rates)
    source_rate = statistics.median(source_rates)
    peak = max(e["peak_mb"] for e in engine_runs)
    print(
        f"{n} messages of {args.size} bytes, {args.connections} connections "
        f"({args.processes} sending processes), into smtp-sink on loopback, {args.repeat} rounds"
    )
    print(
        "digest engine msg/s: "
        + ", ".join(f"{r:.0f}" for r in engine_rates)
        + f"  -> median {engine_rate:.0f}, peak memory {peak:.0f} MB"
    )
    print(
        "smtp-source  msg/s: "
        + ", ".join(f"{r:.0f}" for r in source_rates)
        + f"  -> median {source_rate:.0f}"
    )
    print(f"ratio of medians engine/smtp-source: {engine_rate / source_rate:.1%}")
    print(f"final states (last round): {left}")
    print(
        f"reproduce: python bench/delivery.py --messages {n} --size {args.size} "
        f"--connections {args.connections} --processes {args.processes} --repeat {args.repeat}"
    )
    return 0 if left == {"sent": n} else 1


def run_engine_once(args: argparse.Namespace, port: int) -> dict[str, object]:
    """Plan the digests in a fresh database, send them from a child process; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        store = Store(db_url)
        store.upgrade()
        plan(store, args.messages, args.size)
        store.dispose()
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--engine-child",
                db_url,
                str(port),
                str(args.connections),
                str(args.processes),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        engine: dict[str, object] = json.loads(child.stdout.strip().splitlines()[-1])
        store = Store(db_url)
        engine["left"] = store.counts_by_state()
        store.dispose()
    return engine


if __name__ == "__main__":
    sys.exit(main())
