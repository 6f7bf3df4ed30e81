"""A small run of bench/kill_test.py: `digest run` killed with SIGKILL at random points and
restarted; every subscriber gets exactly one digest, bar duplicates bounded by the kills.
The full-size run (500 subscribers, 20 kills) is `python bench/kill_test.py`."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_sigkill_at_random_points_loses_nothing_and_duplicates_at_most_once_per_kill() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "kill_test.py"),
            "--subscribers",
            "40",
            "--kills",
            "4",
            "--max-delay",
            "4",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["missing"] == 0
    assert result["duplicates"] <= result["kills"]
    assert result["final_states"] == {"sent": 40}
