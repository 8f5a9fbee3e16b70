"""The storage contract for group chat rooms and affiliations (XEP-0045), on every backend."""

from __future__ import annotations

import contextlib
import sqlite3
import time

from schnack.server.storage import Storage, open_storage
from schnack.server.storage.base import RoomAffiliation

from .conftest import execute_in_schema

S = "groups.example.org"
OTHER = "groups.other.example"


async def test_room_round_trip_and_update(storage: Storage) -> None:
    before = time.time()
    assert await storage.muc.get_room(S, "family") is None
    await storage.muc.save_room(S, "family", '{"name": "Family"}')
    room = await storage.muc.get_room(S, "family")
    assert room is not None
    assert (room.service, room.name, room.config) == (S, "family", '{"name": "Family"}')
    assert before <= room.created <= time.time()
    await storage.muc.save_room(S, "family", '{"name": "Family 2"}')
    again = await storage.muc.get_room(S, "family")
    assert again is not None and again.config == '{"name": "Family 2"}' and again.created == room.created
    assert await storage.muc.get_room(OTHER, "family") is None


async def test_rooms_listed_per_service_in_order(storage: Storage) -> None:
    for name in ("zeta", "alpha", "Mid"):
        await storage.muc.save_room(S, name, "{}")
    await storage.muc.save_room(OTHER, "elsewhere", "{}")
    assert [r.name for r in await storage.muc.rooms(S)] == ["Mid", "alpha", "zeta"]
    assert [r.name for r in await storage.muc.rooms(OTHER)] == ["elsewhere"]


async def test_affiliations_set_replace_and_remove(storage: Storage) -> None:
    await storage.muc.save_room(S, "family", "{}")
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("alice@example.org", "owner", "Alice"))
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("bob@example.org", "member"))
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("eve@example.org", "outcast", None, "spam 😀"))
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("bob@example.org", "admin", "Bob"))
    assert await storage.muc.affiliations(S, "family") == {
        "alice@example.org": RoomAffiliation("alice@example.org", "owner", "Alice"),
        "bob@example.org": RoomAffiliation("bob@example.org", "admin", "Bob"),
        "eve@example.org": RoomAffiliation("eve@example.org", "outcast", None, "spam 😀"),
    }
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("eve@example.org", "none"))
    assert set(await storage.muc.affiliations(S, "family")) == {"alice@example.org", "bob@example.org"}
    assert await storage.muc.affiliations(S, "other") == {}


async def test_affiliations_keep_when_they_were_granted(storage: Storage) -> None:
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("alice@example.org", "owner", since=1000.25))
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("bob@example.org", "member"))
    assert await storage.muc.affiliations(S, "family") == {
        "alice@example.org": RoomAffiliation("alice@example.org", "owner", since=1000.25),
        "bob@example.org": RoomAffiliation("bob@example.org", "member"),
    }
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("alice@example.org", "admin", "Al", since=999.5))
    assert (await storage.muc.affiliations(S, "family"))["alice@example.org"] == RoomAffiliation(
        "alice@example.org", "admin", "Al", since=999.5)


async def test_affiliations_stored_before_their_time_was_kept_have_none(storage_url: str) -> None:
    """The migration that adds the time keeps the rows there were, without a time."""
    store = await open_storage(storage_url)
    try:
        await store.muc.set_affiliation(S, "family", RoomAffiliation("alice@example.org", "owner", "Alice", since=5.0))
    finally:
        await store.close()
    await _forget_affiliation_times(storage_url)
    store = await open_storage(storage_url)
    try:
        assert await store.muc.affiliations(S, "family") == {
            "alice@example.org": RoomAffiliation("alice@example.org", "owner", "Alice"),
        }
        await store.muc.set_affiliation(S, "family", RoomAffiliation("bob@example.org", "member", since=6.0))
        assert (await store.muc.affiliations(S, "family"))["bob@example.org"].since == 6.0
    finally:
        await store.close()


async def _forget_affiliation_times(storage_url: str) -> None:
    """Take the store back to the schema before affiliations kept their time (SQLite 0006,
    PostgreSQL 0007), and so before the archive's resources too (SQLite 0007, PostgreSQL 0008)."""
    if storage_url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(storage_url.removeprefix("sqlite://"))) as db, db:
            db.executescript("DROP INDEX archive_by_resource; DROP INDEX archive_unresourced;"
                             "ALTER TABLE archive DROP COLUMN with_resource;"
                             "ALTER TABLE muc_affiliations DROP COLUMN since; DELETE FROM schema_version WHERE version >= 6")
        return
    await execute_in_schema(storage_url, "ALTER TABLE archive DROP COLUMN with_resource;"
                            "ALTER TABLE muc_affiliations DROP COLUMN since;"
                            "DELETE FROM schema_migrations WHERE version >= 7")


async def test_rooms_of_and_forget_jid(storage: Storage) -> None:
    await storage.muc.set_affiliation(S, "b-room", RoomAffiliation("alice@example.org", "member"))
    await storage.muc.set_affiliation(S, "a-room", RoomAffiliation("alice@example.org", "owner"))
    await storage.muc.set_affiliation(OTHER, "c-room", RoomAffiliation("alice@example.org", "admin"))
    await storage.muc.set_affiliation(S, "a-room", RoomAffiliation("bob@example.org", "member"))
    assert await storage.muc.rooms_of("alice@example.org") == [
        (S, "a-room", "owner"), (S, "b-room", "member"), (OTHER, "c-room", "admin"),
    ]  # fmt: skip
    assert await storage.muc.forget_jid("alice@example.org") == 3
    assert await storage.muc.rooms_of("alice@example.org") == []
    assert list(await storage.muc.affiliations(S, "a-room")) == ["bob@example.org"]


async def test_delete_room_takes_its_affiliations(storage: Storage) -> None:
    await storage.muc.save_room(S, "family", "{}")
    await storage.muc.save_room(S, "work", "{}")
    await storage.muc.set_affiliation(S, "family", RoomAffiliation("alice@example.org", "owner"))
    await storage.muc.set_affiliation(S, "work", RoomAffiliation("alice@example.org", "owner"))
    assert await storage.muc.delete_room(S, "family") is True
    assert await storage.muc.delete_room(S, "family") is False
    assert await storage.muc.get_room(S, "family") is None
    assert await storage.muc.affiliations(S, "family") == {}
    assert await storage.muc.rooms_of("alice@example.org") == [(S, "work", "owner")]


async def test_replace_archived_keeps_id_and_order(storage: Storage) -> None:
    first = await storage.archive.append(S, "family", "muc", 1.0, "alice@example.org", b"<one/>")
    second = await storage.archive.append(S, "family", "muc", 2.0, "bob@example.org", b"<two/>")
    assert await storage.muc.replace_archived(S, "family", "muc", first, b"<tombstone/>") is True
    assert await storage.muc.replace_archived(S, "family", "muc", "no-such-id", b"<x/>") is False
    # Another room's archive is not reached through this one.
    assert await storage.muc.replace_archived(S, "work", "muc", second, b"<x/>") is False
    page = await storage.archive.query(S, "family", "muc")
    assert [(i.id, i.payload) for i in page.items] == [(first, b"<tombstone/>"), (second, b"<two/>")]


async def test_rooms_survive_reopening(storage_url: str) -> None:
    store = await open_storage(storage_url)
    try:
        await store.muc.save_room(S, "family", '{"persistent": true}')
        await store.muc.set_affiliation(S, "family", RoomAffiliation("alice@example.org", "owner", "Alice"))
    finally:
        await store.close()
    store = await open_storage(storage_url)
    try:
        room = await store.muc.get_room(S, "family")
        assert room is not None and room.config == '{"persistent": true}'
        assert await store.muc.affiliations(S, "family") == {
            "alice@example.org": RoomAffiliation("alice@example.org", "owner", "Alice"),
        }
    finally:
        await store.close()
