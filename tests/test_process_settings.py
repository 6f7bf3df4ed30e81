"""Process-wide settings a `digest` process starts with (digest.memory), seen from a new
process the way the CLI makes them: before NumPy is loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import sys; from digest.cli.app import main; import digest.cli.app as app;"
    "sys.argv = ['digest', '--version'];"
    "import contextlib, io;"
    "out = io.StringIO();"
    "exec('try:\\n with contextlib.redirect_stdout(out): main()\\nexcept SystemExit: pass');"
    "import numpy; from threadpoolctl import threadpool_info;"
    "print(max(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'))"
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "1"), (("OPENBLAS_NUM_THREADS", "2"), "2"), (("OMP_NUM_THREADS", "2"), "2")],
)
def test_a_digest_process_uses_one_blas_thread_unless_the_operator_sets_a_number(
    given: tuple[str, str] | None, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    if given is not None:
        env[given[0]] = given[1]
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == expected
