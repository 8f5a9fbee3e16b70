"""Byte counts in SI units, for people."""

from __future__ import annotations

import pytest

from schnack.client.sizes import data_size


@pytest.mark.parametrize(("count", "text"), [
    (0, "0 bytes"), (999, "999 bytes"), (1000, "1.0 kB"), (61_440, "61.4 kB"), (999_949, "999.9 kB"),
    (4_200_000, "4.2 MB"), (3_500_000_000, "3.5 GB"), (2_000_000_000_000, "2000.0 GB"),
])
def test_the_largest_unit_under_a_thousand(count: int, text: str) -> None:
    assert data_size(count) == text


def test_a_fixed_unit() -> None:
    """As a table shows it: every figure in the same unit, however large or small."""
    assert data_size(1_040_000, "kB") == "1040.0 kB"
    assert data_size(12, "kB") == "0.0 kB"
    assert data_size(1_500_000, "MB") == "1.5 MB"
