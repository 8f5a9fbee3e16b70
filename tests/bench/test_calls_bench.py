"""The calls benchmark at toy size: one short call per profile through coturn and the loss proxy
against ``schnack serve``; the figures must be there and add up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import calls

from ..conftest import require_service


def test_calls_bench_runs(tmp_path: Path) -> None:
    require_service(shutil.which("turnserver") is not None, "coturn is not installed (apt-get install coturn)")
    require_service(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt-get install espeak-ng)")
    results = calls.run(seconds=8, losses=(0.1,), profiles=("normal", "data-saver"), workdir=tmp_path)
    assert [(r.profile, r.loss) for r in results] == [("normal", 0.1), ("data-saver", 0.1)]
    normal, saver = results
    for r in results:
        assert r.dropped > 0 and r.setup > 0 and 0 < r.delay < 2
        assert -0.5 <= r.pesq <= 4.65
        assert len(r.stats) == 2 and all(s["audio_received"] >= 8 for s in r.stats)
        assert sum(s["packets_lost"] for s in r.stats) > 0
        for side in ("caller", "callee"):
            assert (tmp_path / f"{r.profile}-0.1-{side}-heard.wav").stat().st_size > 8 * 48000 * 2
    # The data saver's whole point.
    assert 0 < saver.bytes_per_minute < normal.bytes_per_minute
    with pytest.raises(ValueError, match="too short"):
        calls.conversation(tmp_path / "short", 2)
    table = calls.table(results).splitlines()
    assert len(table) == 4 and table[2].startswith("| normal | 10% |")
