"""Writes gathered per turn of the event loop (schnack.server.gather)."""

from __future__ import annotations

import asyncio

import pytest

from schnack.server.gather import Gathered

pytestmark = pytest.mark.asyncio


async def test_what_one_turn_adds_is_handed_over_once_at_its_end() -> None:
    handed: list[str] = []
    out = Gathered(handed.append)
    out.add("<a/>")
    out.add("<b/>")
    assert handed == []
    await asyncio.sleep(0)
    assert handed == ["<a/><b/>"]
    out.add("<c/>")
    await asyncio.sleep(0)
    assert handed == ["<a/><b/>", "<c/>"]


async def test_a_flush_hands_over_at_once_and_the_end_of_the_turn_finds_nothing() -> None:
    handed: list[str] = []
    out = Gathered(handed.append)
    out.add("<proceed/>")
    out.flush()
    assert handed == ["<proceed/>"]
    await asyncio.sleep(0)
    assert handed == ["<proceed/>"]


async def test_what_is_dropped_is_never_handed_over() -> None:
    handed: list[str] = []
    out = Gathered(handed.append)
    out.add("<lost/>")
    out.drop()
    await asyncio.sleep(0)
    assert handed == []


async def test_drop_last_forgets_only_the_last_piece_not_handed_over() -> None:
    handed: list[str] = []
    out = Gathered(handed.append)
    out.add("<features/>")
    out.add("<proceed/>")
    out.drop_last()
    out.add("<error/>")
    await asyncio.sleep(0)
    assert handed == ["<features/><error/>"]
    out.drop_last()
    await asyncio.sleep(0)
    assert handed == ["<features/><error/>"]
