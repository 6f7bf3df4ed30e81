"""Kill test: `digest run` killed with SIGKILL at random points, restarted, mail counted.

    python bench/kill_test.py [--subscribers 500] [--kills 20] [--seed 1]

A real `digest run` process (planning, rendering and sending for every subscriber) is killed
with SIGKILL after a random delay, again and again, then run to completion. The SMTP server
(tests/smtp_fault.py, in this process) stores every message. In the end every subscriber must
have exactly one digest, except where a kill fell between the server storing a message and the
run recording it as sent: those duplicates are counted and listed, and may not outnumber the
kills. Prints the figures as one JSON line too, for the test that runs a small version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digest.store import Store  # noqa: E402
from digest.store.schema import Delivery  # noqa: E402
from tests.sites import write_site  # noqa: E402
from tests.smtp_fault import FaultServer  # noqa: E402

UNFINISHED = {"pending", "sending", "retry", "ambiguous"}


def _held(d: Delivery) -> bool:
    """A digest whose sender died mid-send twice: resent once, then held as ambiguous for the
    operator (`[delivery] resends`), since a relay that stores every copy must not get one per
    retry. Right when its reader did receive it."""
    return d.state == "ambiguous" and d.next_attempt_at is None


def site(tmp: Path, port: int, n: int) -> list[str]:
    extra = "[delivery]\nconnections = 4\nlease_seconds = 10\ndata_timeout = 5\nretry_base = 0.5"
    return write_site(tmp, port, n, extra=extra, name="r{i:04d}")


def digest(cfg: list[str], *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *cfg, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--stall",
        type=float,
        default=0.05,
        help="seconds the server waits before each 250: the window kills aim at",
    )
    parser.add_argument(
        "--max-delay",
        type=float,
        default=8.0,
        help="kill after a uniform random delay up to this many seconds",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fault = FaultServer().start()
    # A pause before each 250 keeps messages in flight long enough for kills to land there.
    fault.default = f"stall-final:{args.stall}"
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            cfg = site(tmp, fault.port, args.subscribers)
            assert digest(cfg, "ingest").wait() == 0
            kills_during_send = 0
            for _ in range(args.kills):
                before = len(fault.stored)
                proc = digest(cfg, "run", "--no-ingest")
                time.sleep(rng.uniform(0.5, args.max_delay))
                proc.kill()
                proc.wait()
                kills_during_send += len(fault.stored) > before
            store = Store(f"sqlite:///{tmp / 'data' / 'digest.db'}")
            for _ in range(20):
                # 2: digests still wait (leases of killed runs): what this loop waits out.
                assert digest(cfg, "run", "--no-ingest").wait() in (0, 2)
                if not any(d.state in UNFINISHED and not _held(d) for d in store.deliveries()):
                    break
                time.sleep(11)  # let the leases of killed runs run out
            states = store.counts_by_state()
            rows = store.deliveries()
            ambiguous_rows = sum(d.ambiguous_count > 0 for d in rows)
            held = [d.subscriber for d in rows if _held(d)]
            store.dispose()
    finally:
        fault.stop()
    per_reader = Counter(s.rcpt for s in fault.stored)
    expected = {f"r{i:04d}@example.org" for i in range(args.subscribers)}
    missing = sorted(expected - set(per_reader))
    duplicated = sorted(r for r, n in per_reader.items() if n > 1)
    extra = sum(n - 1 for n in per_reader.values())
    result = {
        "subscribers": args.subscribers,
        "kills": args.kills,
        "kills_while_sending": kills_during_send,
        "messages_stored": len(fault.stored),
        "missing": len(missing),
        "duplicates": extra,
        "duplicated_subscribers": duplicated,
        "final_states": states,
        "rows_marked_ambiguous": ambiguous_rows,
        "held_ambiguous": len(held),
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(
        f"{args.subscribers} subscribers, {args.kills} SIGKILLs "
        f"({kills_during_send} while messages were going out), then runs to completion"
    )
    print(
        f"stored {len(fault.stored)} messages: {len(missing)} subscribers missing, "
        f"{extra} duplicate(s) {duplicated}"
    )
    print(f"final states {states}; {result['seconds']} s")
    if held:
        print(
            f"held as ambiguous after their resend (died mid-send twice): {len(held)}, "
            f"each received: {all(per_reader[r] >= 1 for r in held)}"
        )
    print(
        "each duplicate is a kill between the server's 250 and the commit of `sent`; "
        f"bound: duplicates ({extra}) <= kills ({args.kills})"
    )
    print(
        f"reproduce: python bench/kill_test.py --subscribers {args.subscribers} "
        f"--kills {args.kills} --seed {args.seed} --stall {args.stall} --max-delay {args.max_delay}"
    )
    print(json.dumps(result))
    finished = set(states) <= {"sent", "ambiguous"} and states.get("ambiguous", 0) == len(held)
    ok = not missing and extra <= args.kills and finished and all(per_reader[r] for r in held)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
