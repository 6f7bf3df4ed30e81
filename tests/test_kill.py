"""A small run of bench/kill_test.py: `digest run` killed with SIGKILL at random points and
restarted; every subscriber gets exactly one digest, bar duplicates bounded by the kills.
The full-size run (500 subscribers, 20 kills) is `python bench/kill_test.py`."""

from __future__ import annotations

import json

from tests.conftest import run_bench


def test_sigkill_at_random_points_loses_nothing_and_duplicates_at_most_once_per_kill() -> None:
    out = run_bench(
        "kill_test.py", "--subscribers", "40", "--kills", "4", "--max-delay", "4", "--seed", "7"
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["missing"] == 0
    assert result["duplicates"] <= result["kills"]
    assert result["final_states"] == {"sent": 40}
