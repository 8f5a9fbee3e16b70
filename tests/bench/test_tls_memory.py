"""bench.tls_memory at a toy size: the bare server starts, holds its connections and is measured."""

from __future__ import annotations

import re

import pytest

from bench import tls_memory


def _per_connection(out: str) -> float:
    match = re.search(r"Rss (\d+\.\d) KiB", out)
    assert match, out
    return float(match.group(1))


def test_tls_connections_cost_more_than_plain_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert tls_memory.main(["-n", "100"]) == 0
    tls = _per_connection(capsys.readouterr().out)
    assert tls_memory.main(["-n", "100", "--plain"]) == 0
    plain = _per_connection(capsys.readouterr().out)
    # OpenSSL's connection object alone is several KiB: present with TLS, absent without.
    assert tls > plain + 4


def test_schnacks_own_connections_are_measured_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert tls_memory.main(["-n", "100", "--link"]) == 0
    tls = _per_connection(capsys.readouterr().out)
    assert tls_memory.main(["-n", "100", "--link", "--plain"]) == 0
    plain = _per_connection(capsys.readouterr().out)
    assert tls > plain + 4
