"""The microbenchmarks in bench/micro run, each once and untimed (``--benchmark-disable``), so
that a change which breaks them shows in the regular test run; ``make bench-micro`` times them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bench.servers import REPO


def test_microbenchmarks_run_once_without_timing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", "bench/micro"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\b6 passed\b", done.stdout), done.stdout[-3000:]
