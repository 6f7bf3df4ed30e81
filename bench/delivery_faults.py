"""Delivery under the fault mix of RELIABILITY.md: final states must match the injected faults.

    python bench/delivery_faults.py [--messages 10000] [--size 30000] [--seed 1]

Each recipient is given one fault (or none) by a seeded draw: 5 % 451 on the final dot (then
accepted), 1 % 550 5.1.1 on RCPT, 1 % the connection dropped after the message was stored, 0.5 %
dropped during DATA, 0.5 % 421 on RCPT. The engine runs round after round on an injected clock
(retries and relay backoffs cost no real time) until nothing is due. Expected: 550s end
`bounced`, everything else `sent`, nothing `sending`, duplicates <= drops after DATA.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from delivery import plan  # noqa: E402

from digest.config import Config, DeliveryConfig, SmtpConfig, WebConfig  # noqa: E402
from digest.mail.engine import Engine  # noqa: E402
from digest.store import Store  # noqa: E402
from tests.smtp_fault import FaultServer  # noqa: E402

MIX = [
    ("data:451 4.3.0 try again later", 0.05),
    ("rcpt:550 5.1.1 no such user", 0.01),
    ("drop-after-data", 0.01),
    ("drop-during-data", 0.005),
    ("rcpt:421 4.3.2 closing connection", 0.005),
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fault = FaultServer().start()
    injected: Counter[str] = Counter()
    for i in range(args.messages):
        x, acc = rng.random(), 0.0
        for behaviour, share in MIX:
            acc += share
            if x < acc:
                fault.plan(f"reader{i}@bench.example.org", behaviour)
                injected[behaviour.split(" ")[0]] += 1
                break
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{tmp}/faults.db")
            store.upgrade()
            plan(store, args.messages, args.size)
            cfg = Config(
                smtp=SmtpConfig(
                    host="127.0.0.1",
                    port=fault.port,
                    security="none",
                    from_address="digest@bench.example.org",
                    timeout=10,
                ),
                web=WebConfig(base_url="https://bench.example.org"),
                delivery=DeliveryConfig(
                    connections=10, relay_backoff=60, retry_base=60, retry_max=600
                ),
            )
            now = datetime.now(UTC)
            rounds = 0
            possible_duplicates = 0
            while True:
                rounds += 1
                report = asyncio.run(Engine(store, cfg, lambda t=now: t).run())
                possible_duplicates += report.possible_duplicates
                states = store.counts_by_state()
                if report.paused:
                    print(f"paused: {report.paused}")
                    break
                if not {"pending", "retry", "ambiguous", "sending"} & set(states):
                    break
                now += timedelta(seconds=601)
            ambiguous_rows = sum(d.ambiguous_count > 0 for d in store.deliveries())
            store.dispose()
    finally:
        fault.stop()
    elapsed = time.perf_counter() - t0
    stored = Counter(s.rcpt for s in fault.stored)
    duplicates = sum(n - 1 for n in stored.values())
    drops_after = injected["drop-after-data"]
    bounces = injected["rcpt:550"]
    print(f"{args.messages} digests of {args.size} bytes; injected: {dict(injected)}")
    print(f"final states after {rounds} engine rounds: {states}")
    print(
        f"duplicates at the server: {duplicates} (drops after DATA: {drops_after}); "
        f"rows marked ambiguous: {ambiguous_rows}; {elapsed:.1f} s"
    )
    print(
        f"reproduce: python bench/delivery_faults.py --messages {args.messages} "
        f"--size {args.size} --seed {args.seed}"
    )
    ok = (
        states.get("bounced", 0) == bounces
        and states.get("sent", 0) == args.messages - bounces
        and "sending" not in states
        and duplicates <= drops_after
        and ambiguous_rows == drops_after + injected["drop-during-data"]
    )
    print("OK: final counts match the injected faults" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
