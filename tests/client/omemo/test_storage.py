"""The file python-omemo's state lives in: values kept across restarts, readable by the owner only."""

from __future__ import annotations

import stat
from pathlib import Path

from schnack.client.omemo.storage import FILENAME, SqliteStorage


async def test_values_survive_reopening(tmp_path: Path) -> None:
    directory = tmp_path / "account"
    storage = SqliteStorage(directory)
    await storage.store("/own_device_id", 1234)
    await storage.store("/devices/bob@example.org/list", [1, 2])
    await storage.store_bytes("/identity", b"\x00\xff")
    await storage.store("/gone", "soon")
    await storage.delete("/gone")
    storage.close()
    again = SqliteStorage(directory)
    assert (await again.load_primitive("/own_device_id", int)).from_just() == 1234
    assert (await again.load_list("/devices/bob@example.org/list", int)).from_just() == [1, 2]
    assert (await again.load_bytes("/identity")).from_just() == b"\x00\xff"
    assert (await again.load("/gone")).is_nothing
    again.close()
    assert stat.S_IMODE((directory / FILENAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


async def test_without_a_directory_state_is_in_memory(tmp_path: Path) -> None:
    storage = SqliteStorage(None)
    await storage.store("/key", {"a": [1, None, True]})
    assert (await storage.load("/key")).from_just() == {"a": [1, None, True]}
    assert storage.path is None
    storage.close()
