"""Byte counts as people read them: SI units (1 kB = 1000 bytes), as file managers and the meters
of mobile data plans count them."""

from __future__ import annotations

from typing import Literal

Unit = Literal["kB", "MB", "GB"]
_UNITS: tuple[Unit, ...] = ("kB", "MB", "GB")


def data_size(count: int, unit: Unit | None = None) -> str:
    """``count`` bytes with one decimal in ``unit``; without one, in the largest unit that keeps
    the number under 1000 (GB at most), and in whole bytes below 1 kB.

    A fixed unit keeps the figures of a table comparable at a glance.
    """
    if unit is None and count < 1000:
        return f"{count} bytes"
    value = count / 1000
    for name in _UNITS:
        if name == unit or (unit is None and (value < 1000 or name == _UNITS[-1])):
            return f"{value:.1f} {name}"
        value /= 1000
    raise ValueError(f"not a unit: {unit!r}")
