"""The storage contract (DESIGN.md, Storage): every backend behaves the same, test for test."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import sqlite3
import time

import pytest

from schnack.server.storage import (
    AccountGone,
    AlreadyExists,
    ArchivedItem,
    ArchiveFull,
    ArchivePage,
    DuplicateItem,
    ItemNotFound,
    RosterItem,
    Storage,
    StorageError,
    TooLong,
    new_item_id,
    open_storage,
)  # fmt: skip
from schnack.server.storage.base import NAME_BYTES, RoomAffiliation
from schnack.xmpp.sasl import ScramCredential, derive_credentials

from .conftest import execute_in_schema, rewind_sqlite_archive

H = "example.org"
OTHER_HOST = "other.example"
BINARY = b"\x00\x01\xff\x00nul\x00inside\x80\xfe"
UNICODE = "zoë-😀-日本"


# --- accounts ------------------------------------------------------------------------------------


async def test_account_round_trip(storage: Storage) -> None:
    credentials = derive_credentials("secret", iterations=4096)
    before = time.time()
    await storage.accounts.create(H, "alice", credentials)
    account = await storage.accounts.get(H, "alice")
    assert account is not None
    assert (account.host, account.username, account.credentials) == (H, "alice", credentials)
    assert before <= account.created <= time.time()
    assert await storage.accounts.get(H, "bob") is None
    assert await storage.accounts.get(OTHER_HOST, "alice") is None


async def test_account_exists_already(storage: Storage) -> None:
    await storage.accounts.create(H, "alice", derive_credentials("one"))
    with pytest.raises(AlreadyExists):
        await storage.accounts.create(H, "alice", derive_credentials("two"))
    # The same name on another host is another account.
    await storage.accounts.create(OTHER_HOST, "alice", derive_credentials("three"))
    assert issubclass(AlreadyExists, StorageError)


async def test_set_credentials(storage: Storage) -> None:
    await storage.accounts.create(H, "alice", derive_credentials("old"))
    new = {"SHA-256": ScramCredential(b"\x00salt\x00", 10_000, b"\x00" * 32, b"\xff" * 32)}
    assert await storage.accounts.set_credentials(H, "alice", new) is True
    account = await storage.accounts.get(H, "alice")
    assert account is not None and account.credentials == new
    assert await storage.accounts.set_credentials(H, "nobody", new) is False
    assert await storage.accounts.get(H, "nobody") is None


async def test_list_accounts_sorted_per_host(storage: Storage) -> None:
    for name in ("carol", "Bob", UNICODE, "alice", "alice.b"):
        await storage.accounts.create(H, name, derive_credentials("x"))
    await storage.accounts.create(OTHER_HOST, "dave", derive_credentials("x"))
    assert await storage.accounts.list(H) == ["Bob", "alice", "alice.b", "carol", UNICODE]
    assert await storage.accounts.list(OTHER_HOST) == ["dave"]
    assert await storage.accounts.list("empty.example") == []


async def test_unicode_account(storage: Storage) -> None:
    await storage.accounts.create(H, UNICODE, derive_credentials("pässwörd"))
    account = await storage.accounts.get(H, UNICODE)
    assert account is not None and account.username == UNICODE


async def _fill(storage: Storage, username: str) -> None:
    """Some data of every kind for ``username``."""
    await storage.roster.set_item(H, username, RosterItem("friend@example.org"))
    await storage.kv.set(H, username, "vcard", b"card")
    await storage.maps.set(H, username, "private", "key", b"value")
    await storage.archive.append(H, username, "mam", 1.0, "friend@example.org", b"message")


async def test_account_delete_removes_everything(storage: Storage) -> None:
    for name in ("alice", "bob"):
        await storage.accounts.create(H, name, derive_credentials("x"))
        await _fill(storage, name)
    assert await storage.accounts.delete(H, "alice") is True
    assert await storage.accounts.get(H, "alice") is None
    assert await storage.roster.get(H, "alice") == (0, {})
    assert await storage.kv.get(H, "alice", "vcard") is None
    assert await storage.maps.items(H, "alice", "private") == {}
    assert await storage.archive.count(H, "alice", "mam") == 0
    # Bob keeps all of his.
    version, items = await storage.roster.get(H, "bob")
    assert version == 1 and list(items) == ["friend@example.org"]
    assert await storage.kv.get(H, "bob", "vcard") == b"card"
    assert await storage.maps.items(H, "bob", "private") == {"key": b"value"}
    assert await storage.archive.count(H, "bob", "mam") == 1
    assert await storage.accounts.list(H) == ["bob"]
    assert await storage.accounts.delete(H, "alice") is False


async def test_account_delete_removes_leftovers_of_an_account_gone(storage: Storage) -> None:
    await _fill(storage, "ghost")
    assert await storage.accounts.delete(H, "ghost") is False
    assert await storage.kv.get(H, "ghost", "vcard") is None
    assert await storage.archive.count(H, "ghost", "mam") == 0


async def test_appends_issued_before_an_account_is_deleted_do_not_outlive_it(storage: Storage) -> None:
    """Nothing of a deleted account waits in its archives for whoever next registers its name: not
    even a message routed to it, and queued, just before it was deleted."""
    await storage.accounts.create(H, "alice", derive_credentials("x"))
    await storage.archive.append(H, "alice", "mam", 1.0, "bob@x", b"before")
    queued = storage.archive.append_soon(H, "alice", "mam", 2.0, "bob@x", b"queued")
    assert await storage.accounts.delete(H, "alice") is True
    with contextlib.suppress(AccountGone):
        await queued
    await storage.accounts.create(H, "alice", derive_credentials("y"))
    assert await storage.archive.count(H, "alice", "mam") == 0
    assert (await storage.archive.query(H, "alice", "mam")).items == []
    # The new account's own archive works.
    await storage.archive.append(H, "alice", "mam", 3.0, "carol@x", b"new")
    assert [i.payload for i in (await storage.archive.query(H, "alice", "mam")).items] == [b"new"]


async def test_an_append_for_an_account_deleted_meanwhile_is_refused_alone(storage: Storage) -> None:
    """A message routed to an account as it is deleted comes to be written after the deletion:
    refused (it would wait in the archive for the next account of that name), and the rows
    written in the same batch for others are kept."""
    for name in ("alice", "bob"):
        await storage.accounts.create(H, name, derive_credentials("x"))
        await storage.archive.append(H, name, "mam", 1.0, "carol@x", b"old")
    assert await storage.accounts.delete(H, "alice")
    # One batch: all are issued before the writer runs.
    late = [storage.archive.append_soon(H, name, store, 2.0, "carol@x", b"late")
            for name in ("alice", "bob") for store in ("mam", "offline")]
    outcomes = await asyncio.gather(*late, return_exceptions=True)
    assert [type(o) for o in outcomes[:2]] == [AccountGone, AccountGone]
    assert all(isinstance(o, str) for o in outcomes[2:])
    assert await storage.archive.count(H, "bob", "mam") == 2
    assert await storage.archive.count(H, "bob", "offline") == 1
    # Registered again, the name's archives take appends, and hold nothing of before.
    await storage.accounts.create(H, "alice", derive_credentials("y"))
    await storage.archive.append(H, "alice", "mam", 3.0, "carol@x", b"new")
    assert [i.payload for i in (await storage.archive.query(H, "alice", "mam")).items] == [b"new"]


async def test_what_a_deleted_account_would_keep_is_refused_until_it_exists_again(storage: Storage) -> None:
    """A contact's subscription request, or a roster change its presence made, written just after
    the account's deletion: refused, not kept for the next account of that name."""
    await storage.accounts.create(H, "alice", derive_credentials("x"))
    assert await storage.accounts.delete(H, "alice")
    with pytest.raises(AccountGone, match=r"alice@example\.org is deleted"):
        await storage.maps.set(H, "alice", "roster-pending", "bob@example.org", b"<presence/>")
    with pytest.raises(AccountGone):
        await storage.roster.set_item(H, "alice", RosterItem("bob@example.org"))
    with pytest.raises(AccountGone):
        await storage.kv.set(H, "alice", "vcard", b"card")
    # Others, and the server's own data (no username), are written as ever.
    await storage.maps.set(H, "bob", "roster-pending", "carol@example.org", b"<presence/>")
    await storage.kv.set(H, "", "upload-secret", b"s")
    await storage.accounts.create(H, "alice", derive_credentials("y"))
    assert await storage.maps.items(H, "alice", "roster-pending") == {}
    assert await storage.roster.get(H, "alice") == (0, {})
    assert await storage.roster.set_item(H, "alice", RosterItem("bob@example.org")) == 1


async def test_kv_set_default_keeps_the_first_value_stored(storage: Storage) -> None:
    """Of callers setting a default at once, the first to store wins, and every one is told it."""
    told = await asyncio.gather(*(storage.kv.set_default(H, "", "secret", b"%d" % n) for n in range(8)))
    assert len(set(told)) == 1 and told[0] in {b"%d" % n for n in range(8)}
    assert await storage.kv.get(H, "", "secret") == told[0]
    assert await storage.kv.set_default(H, "", "secret", b"later") == told[0]


async def test_kv_set_default_after_a_delete_stores_anew(storage: Storage) -> None:
    """A value deleted is no default any more: the next caller's value is stored (an upload slot
    whose PUT failed is claimed again this way)."""
    assert await storage.kv.set_default(H, "", "claim", b"first") == b"first"
    await storage.kv.delete(H, "", "claim")
    assert await storage.kv.set_default(H, "", "claim", b"second") == b"second"
    assert await storage.kv.get(H, "", "claim") == b"second"


async def test_kv_replace_stores_only_in_place_of_the_value_named(storage: Storage) -> None:
    """Compare and set: of callers replacing one value at once, one succeeds; nothing is stored
    in place of another value, nor where nothing is."""
    assert not await storage.kv.replace(H, "", "slot", b"old", b"new")
    assert await storage.kv.get(H, "", "slot") is None
    await storage.kv.set(H, "", "slot", b"old")
    won = await asyncio.gather(*(storage.kv.replace(H, "", "slot", b"old", b"%d" % n) for n in range(8)))
    assert won.count(True) == 1
    assert await storage.kv.get(H, "", "slot") == b"%d" % won.index(True)
    assert not await storage.kv.replace(H, "", "slot", b"old", b"late")
    assert await storage.kv.get(H, "", "slot") == b"%d" % won.index(True)


async def test_kv_and_maps_delete_if_delete_only_the_value_named(storage: Storage) -> None:
    """Compare and delete: what was stored in place of the value named stays."""
    await storage.kv.set(H, "", "code", b"new")
    assert not await storage.kv.delete_if(H, "", "code", b"old")
    assert await storage.kv.get(H, "", "code") == b"new"
    assert await storage.kv.delete_if(H, "", "code", b"new")
    assert await storage.kv.get(H, "", "code") is None
    assert not await storage.kv.delete_if(H, "", "code", b"new")
    await storage.maps.set(H, "", "index", "code", b"new")
    await storage.maps.set(H, "", "index", "other", b"old")
    assert not await storage.maps.delete_if(H, "", "index", "code", b"old")
    assert await storage.maps.delete_if(H, "", "index", "other", b"old")
    assert await storage.maps.items(H, "", "index") == {"code": b"new"}


async def test_maps_set_many_is_all_or_nothing(storage: Storage) -> None:
    """Several keys of one map change in one transaction: a refused key leaves the map as it was."""
    await storage.maps.set(H, "alice", "private", "kept", b"old")
    with pytest.raises(TooLong):
        await storage.maps.set_many(H, "alice", "private", {"kept": None, "new": b"1", "x" * NAME_BYTES: b"2"})
    assert await storage.maps.items(H, "alice", "private") == {"kept": b"old"}
    await storage.maps.set_many(H, "alice", "private", {"kept": None, "new": b"1", "other": b"2"})
    assert await storage.maps.items(H, "alice", "private") == {"new": b"1", "other": b"2"}


async def test_names_too_long_to_store_are_refused_alike(storage: Storage) -> None:
    """Names that key a row (a map's key, a store's name, a roster item's or an archived item's
    JID) longer than both backends can index are refused before anything is written, on both;
    up to the limit they are kept, in any script."""
    room = NAME_BYTES - len(H.encode()) - len(b"alice") - len(b"pep")
    # Ideographs in no order that compresses (PostgreSQL compresses a long index entry).
    scramble = random.Random(7)
    longest = "".join(chr(0x4E00 + scramble.randrange(20_000)) for _ in range(room // 3)) + "x" * (room % 3)
    await storage.maps.set(H, "alice", "pep", longest, b"kept")
    assert await storage.maps.items(H, "alice", "pep") == {longest: b"kept"}
    with pytest.raises(TooLong):
        await storage.maps.set(H, "alice", "pep", longest + "x", b"refused")
    far_too_long = longest * 2
    with pytest.raises(TooLong):
        await storage.maps.set(H, "alice", "pep", far_too_long, b"refused")
    with pytest.raises(TooLong):
        await storage.kv.set(H, "alice", far_too_long, b"refused")
    with pytest.raises(TooLong):
        await storage.roster.set_item(H, "alice", RosterItem(far_too_long))
    with pytest.raises(TooLong):
        await storage.archive.append(H, "alice", "pep", 1.0, far_too_long, b"refused")
    with pytest.raises(TooLong):
        await storage.muc.set_affiliation(H, "alice", RoomAffiliation(far_too_long, "member"))
    assert await storage.maps.items(H, "alice", "pep") == {longest: b"kept"}
    assert await storage.roster.get(H, "alice") == (0, {})
    assert await storage.archive.count(H, "alice", "pep") == 0
    await storage.archive.append(H, "alice", "pep", 1.0, longest, b"kept")
    assert [item.with_jid for item in (await storage.archive.query(H, "alice", "pep")).items] == [longest]


# --- roster --------------------------------------------------------------------------------------


async def test_empty_roster(storage: Storage) -> None:
    assert await storage.roster.get(H, "alice") == (0, {})
    assert await storage.roster.get_item(H, "alice", "bob@example.org") is None


async def test_roster_items_and_versions(storage: Storage) -> None:
    bob = RosterItem("bob@example.org", "Bob", "both", ask=False, approved=True, groups=("Friends", "Work"))
    carol = RosterItem("carol@example.org")
    assert await storage.roster.set_item(H, "alice", bob) == 1
    assert await storage.roster.set_item(H, "alice", carol) == 2
    assert await storage.roster.get(H, "alice") == (2, {bob.jid: bob, carol.jid: carol})
    assert await storage.roster.get_item(H, "alice", bob.jid) == bob
    # Replacing an item changes every field and the version.
    changed = RosterItem(bob.jid, None, "to", ask=True, approved=False, groups=())
    assert await storage.roster.set_item(H, "alice", changed) == 3
    assert await storage.roster.get_item(H, "alice", bob.jid) == changed
    assert await storage.roster.remove_item(H, "alice", bob.jid) == 4
    assert await storage.roster.get(H, "alice") == (4, {carol.jid: carol})
    # Removing what is not there changes nothing.
    assert await storage.roster.remove_item(H, "alice", bob.jid) == 4
    assert await storage.roster.remove_item(H, "alice", "nobody@example.org") == 4
    assert await storage.roster.get(H, "alice") == (4, {carol.jid: carol})


async def test_a_roster_is_read_with_its_own_version(storage: Storage) -> None:
    """Items and version come from one moment: with a change between the two reads, a client
    would cache the items before it under the version after it, and never be told of it
    (RFC 6121 §2.6)."""
    bob, carol = RosterItem("bob@example.org"), RosterItem("carol@example.org")
    await storage.roster.set_item(H, "alice", bob)
    (version, items), _ = await asyncio.gather(storage.roster.get(H, "alice"),
                                               storage.roster.set_item(H, "alice", carol))
    assert (version, sorted(items)) in [(1, [bob.jid]), (2, [bob.jid, carol.jid])]


async def test_roster_remove_on_empty_roster(storage: Storage) -> None:
    assert await storage.roster.remove_item(H, "alice", "bob@example.org") == 0
    assert await storage.roster.get(H, "alice") == (0, {})


async def test_rosters_are_per_account(storage: Storage) -> None:
    await storage.roster.set_item(H, "alice", RosterItem("x@example.org"))
    await storage.roster.set_item(H, "alice", RosterItem("y@example.org"))
    assert await storage.roster.set_item(H, "bob", RosterItem("x@example.org", "X")) == 1
    assert await storage.roster.set_item(OTHER_HOST, "alice", RosterItem("z@example.org")) == 1
    version, items = await storage.roster.get(H, "bob")
    assert version == 1 and items == {"x@example.org": RosterItem("x@example.org", "X")}
    assert (await storage.roster.get(H, "alice"))[0] == 2


async def test_roster_unicode(storage: Storage) -> None:
    item = RosterItem(f"{UNICODE}@example.org", f"Name {UNICODE}", "from", groups=(UNICODE, "Ünïcödé"))
    await storage.roster.set_item(H, UNICODE, item)
    assert await storage.roster.get(H, UNICODE) == (1, {item.jid: item})


# --- key-value -----------------------------------------------------------------------------------


async def test_kv(storage: Storage) -> None:
    assert await storage.kv.get(H, "alice", "vcard") is None
    await storage.kv.set(H, "alice", "vcard", b"one")
    await storage.kv.set(H, "alice", "vcard", b"two")
    await storage.kv.set(H, "alice", "other", b"three")
    await storage.kv.set(H, "bob", "vcard", b"four")
    assert await storage.kv.get(H, "alice", "vcard") == b"two"
    assert await storage.kv.get(H, "alice", "other") == b"three"
    assert await storage.kv.get(H, "bob", "vcard") == b"four"
    assert await storage.kv.get(OTHER_HOST, "alice", "vcard") is None


async def test_kv_none_and_delete_remove(storage: Storage) -> None:
    await storage.kv.set(H, "alice", "a", b"1")
    await storage.kv.set(H, "alice", "b", b"2")
    await storage.kv.set(H, "alice", "a", None)
    await storage.kv.delete(H, "alice", "b")
    assert await storage.kv.get(H, "alice", "a") is None
    assert await storage.kv.get(H, "alice", "b") is None
    # Removing what is not there is fine.
    await storage.kv.set(H, "alice", "a", None)
    await storage.kv.delete(H, "nobody", "b")


async def test_kv_binary_empty_and_unicode(storage: Storage) -> None:
    await storage.kv.set(H, UNICODE, UNICODE, BINARY)
    await storage.kv.set(H, "alice", "empty", b"")
    assert await storage.kv.get(H, UNICODE, UNICODE) == BINARY
    assert await storage.kv.get(H, "alice", "empty") == b""


# --- maps ----------------------------------------------------------------------------------------


async def test_maps(storage: Storage) -> None:
    assert await storage.maps.get(H, "alice", "private", "k") is None
    assert await storage.maps.items(H, "alice", "private") == {}
    await storage.maps.set(H, "alice", "private", "k1", b"one")
    await storage.maps.set(H, "alice", "private", "k2", b"two")
    await storage.maps.set(H, "alice", "private", "k1", b"uno")
    await storage.maps.set(H, "alice", "pep", "k1", b"other store")
    await storage.maps.set(H, "bob", "private", "k1", b"other user")
    assert await storage.maps.get(H, "alice", "private", "k1") == b"uno"
    assert await storage.maps.items(H, "alice", "private") == {"k1": b"uno", "k2": b"two"}
    assert await storage.maps.items(H, "alice", "pep") == {"k1": b"other store"}
    assert await storage.maps.items(H, "bob", "private") == {"k1": b"other user"}


async def test_map_none_removes_one_key(storage: Storage) -> None:
    await storage.maps.set(H, "alice", "private", "k1", b"one")
    await storage.maps.set(H, "alice", "private", "k2", b"two")
    await storage.maps.set(H, "alice", "private", "k1", None)
    await storage.maps.set(H, "alice", "private", "missing", None)
    assert await storage.maps.get(H, "alice", "private", "k1") is None
    assert await storage.maps.items(H, "alice", "private") == {"k2": b"two"}


async def test_map_delete_all_is_per_store(storage: Storage) -> None:
    await storage.maps.set(H, "alice", "private", "k1", b"one")
    await storage.maps.set(H, "alice", "private", "k2", b"two")
    await storage.maps.set(H, "alice", "pep", "k1", b"kept")
    await storage.maps.set(H, "bob", "private", "k1", b"kept too")
    await storage.maps.delete_all(H, "alice", "private")
    assert await storage.maps.items(H, "alice", "private") == {}
    assert await storage.maps.items(H, "alice", "pep") == {"k1": b"kept"}
    assert await storage.maps.items(H, "bob", "private") == {"k1": b"kept too"}
    await storage.maps.delete_all(H, "nobody", "private")


async def test_map_binary_and_unicode(storage: Storage) -> None:
    key = "{urn:example:" + UNICODE + "}query"
    await storage.maps.set(H, UNICODE, UNICODE, key, BINARY)
    await storage.maps.set(H, UNICODE, UNICODE, "empty", b"")
    assert await storage.maps.get(H, UNICODE, UNICODE, key) == BINARY
    assert await storage.maps.items(H, UNICODE, UNICODE) == {key: BINARY, "empty": b""}


# --- archive -------------------------------------------------------------------------------------


async def _archive(storage: Storage, n: int = 10, store: str = "mam") -> list[str]:
    """Append ``n`` items for alice: timestamps 100, 101, ..., alternating between bob and carol."""
    return [
        await storage.archive.append(H, "alice", store, 100.0 + i, ("bob@x", "carol@x")[i % 2],
                                     f"msg {i}".encode())
        for i in range(n)
    ]


def ids_of(page: ArchivePage) -> list[str]:
    return [item.id for item in page.items]


async def test_archive_append_and_read_back(storage: Storage) -> None:
    payload = b"<message>\x00" + UNICODE.encode() + b"</message>"
    item_id = await storage.archive.append(H, "alice", "mam", 1712345678.123456, f"{UNICODE}@x", payload)
    other = await storage.archive.append(H, "alice", "mam", 0.0, "bob@x", b"")
    assert isinstance(item_id, str) and item_id and item_id != other
    page = await storage.archive.query(H, "alice", "mam")
    assert page.complete and page.count == 2
    first, second = page.items
    assert (first.id, first.timestamp, first.with_jid, first.payload) == (
        item_id, 1712345678.123456, f"{UNICODE}@x", payload)
    assert (second.id, second.timestamp, second.payload) == (other, 0.0, b"")


async def test_archive_ids_are_unique(storage: Storage) -> None:
    ids = [await storage.archive.append(H, u, s, 1.0, "x@x", b"p")
           for u in ("alice", "bob") for s in ("mam", "offline") for _ in range(25)]
    assert len(set(ids)) == len(ids)


async def test_an_append_with_an_id_taken_already_writes_nothing(storage: Storage) -> None:
    """Ids are unique across archives: a second append with one, with or without a limit, in
    the same archive or another, is refused as a duplicate and leaves the counts alone."""
    archive = storage.archive
    item_id = await archive.append(H, "alice", "offline", 1.0, "bob@x", b"first", limit=10, item_id="same")
    assert item_id == "same"
    with pytest.raises(DuplicateItem):
        await archive.append(H, "alice", "offline", 2.0, "bob@x", b"again", limit=10, item_id="same")
    with pytest.raises(DuplicateItem):
        await archive.append(H, "bob", "mam", 2.0, "bob@x", b"again", item_id="same")
    other, duplicate = await asyncio.gather(
        archive.append_soon(H, "alice", "offline", 3.0, "bob@x", b"other", limit=10),
        archive.append_soon(H, "alice", "offline", 4.0, "bob@x", b"again", limit=10, item_id="same"),
        return_exceptions=True)
    assert isinstance(other, str) and isinstance(duplicate, DuplicateItem)
    assert [item.payload for item in (await archive.query(H, "alice", "offline")).items] == [b"first", b"other"]
    assert await archive.count(H, "alice", "offline") == 2
    assert await archive.count(H, "bob", "mam") == 0


@pytest.mark.parametrize("store", ["offline", "mam"], ids=["counted", "not-counted"])
async def test_an_id_taken_already_is_a_duplicate_in_a_full_archive_too(storage: Storage, store: str) -> None:
    """An item whose id was derived from it (offline storage, handed the same message by two
    cluster nodes) is a duplicate when it took the archive's last place: its caller learns that
    it is stored, not that there is no room for it; another item is refused for the room."""
    archive = storage.archive
    await archive.append(H, "alice", store, 1.0, "bob@x", b"last", limit=1, item_id="same")
    with pytest.raises(DuplicateItem):
        await archive.append(H, "alice", store, 2.0, "bob@x", b"again", limit=1, item_id="same")
    with pytest.raises(ArchiveFull):
        await archive.append(H, "alice", store, 3.0, "bob@x", b"other", limit=1, item_id="else")
    # Written together, each still gets its own outcome.
    duplicate, full = await asyncio.gather(
        archive.append_soon(H, "alice", store, 4.0, "bob@x", b"again", limit=1, item_id="same"),
        archive.append_soon(H, "alice", store, 5.0, "bob@x", b"other", limit=1),
        return_exceptions=True)
    assert isinstance(duplicate, DuplicateItem) and isinstance(full, ArchiveFull)
    assert [item.payload for item in (await archive.query(H, "alice", store)).items] == [b"last"]
    assert await archive.count(H, "alice", store) == 1


@pytest.mark.parametrize("store", ["offline", "mam"], ids=["counted", "not-counted"])
@pytest.mark.parametrize("limit", [None, 10], ids=["no-limit", "limit"])
async def test_appends_of_one_id_written_together_each_get_their_own_outcome(
        storage: Storage, store: str, limit: int | None) -> None:
    """The same item handed to storage twice at once (offline storage derives its id from the
    message): the first append stores it and is told so, only the second is a duplicate."""
    archive = storage.archive
    first, second = await asyncio.gather(
        archive.append_soon(H, "alice", store, 1.0, "bob@x", b"once", limit=limit, item_id="same"),
        archive.append_soon(H, "alice", store, 1.0, "bob@x", b"once", limit=limit, item_id="same"),
        return_exceptions=True)
    assert first == "same" and isinstance(second, DuplicateItem), (first, second)
    assert ids_of(await archive.query(H, "alice", store)) == ["same"]
    assert await archive.count(H, "alice", store) == 1


async def test_of_two_appends_of_one_id_only_the_one_without_room_is_refused(storage: Storage) -> None:
    """An append that finds no room, and another with the same id written in the same round
    that does not need any: the first is refused, the second stored, each told its own."""
    archive = storage.archive
    full, stored = await asyncio.gather(
        archive.append_soon(H, "alice", "mam", 1.0, "bob@x", b"once", limit=0, item_id="same"),
        archive.append_soon(H, "alice", "mam", 1.0, "bob@x", b"once", item_id="same"),
        return_exceptions=True)
    assert isinstance(full, ArchiveFull) and stored == "same", (full, stored)
    assert ids_of(await archive.query(H, "alice", "mam")) == ["same"]


async def test_archive_orders_by_insertion_not_timestamp(storage: Storage) -> None:
    ids = [await storage.archive.append(H, "alice", "mam", t, "bob@x", b"p") for t in (30.0, 10.0, 20.0, 10.0)]
    assert ids_of(await storage.archive.query(H, "alice", "mam")) == ids
    assert ids_of(await storage.archive.query(H, "alice", "mam", reverse=True)) == ids


async def test_archive_empty(storage: Storage) -> None:
    page = await storage.archive.query(H, "alice", "mam", limit=10)
    assert page.items == [] and page.complete and page.count == 0
    assert await storage.archive.count(H, "alice", "mam") == 0


async def test_archive_paging_forward(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    seen: list[str] = []
    after: str | None = None
    pages = []
    while True:
        page = await storage.archive.query(H, "alice", "mam", after=after, limit=4)
        assert page.count == 10
        pages.append(len(page.items))
        seen += ids_of(page)
        if page.complete:
            break
        after = page.items[-1].id
    assert seen == ids and pages == [4, 4, 2]
    # A page ending exactly at the last item is complete.
    page = await storage.archive.query(H, "alice", "mam", after=ids[5], limit=4)
    assert ids_of(page) == ids[6:] and page.complete
    page = await storage.archive.query(H, "alice", "mam", after=ids[-1], limit=4)
    assert page.items == [] and page.complete and page.count == 10


async def test_archive_paging_backward(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    page = await storage.archive.query(H, "alice", "mam", limit=4, reverse=True)
    # The newest four, still in chronological order.
    assert ids_of(page) == ids[6:] and not page.complete and page.count == 10
    page = await storage.archive.query(H, "alice", "mam", before=ids[6], limit=4)
    assert ids_of(page) == ids[2:6] and not page.complete
    page = await storage.archive.query(H, "alice", "mam", before=ids[2], limit=4)
    assert ids_of(page) == ids[:2] and page.complete
    page = await storage.archive.query(H, "alice", "mam", before=ids[4], limit=4)
    assert ids_of(page) == ids[:4] and page.complete
    page = await storage.archive.query(H, "alice", "mam", before=ids[0])
    assert page.items == [] and page.complete


async def test_archive_reverse_after(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    page = await storage.archive.query(H, "alice", "mam", after=ids[2], limit=3, reverse=True)
    assert ids_of(page) == ids[7:] and not page.complete
    page = await storage.archive.query(H, "alice", "mam", reverse=True)
    assert ids_of(page) == ids and page.complete


async def test_archive_between_after_and_before(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    page = await storage.archive.query(H, "alice", "mam", after=ids[1], before=ids[8])
    assert ids_of(page) == ids[2:8] and page.complete
    page = await storage.archive.query(H, "alice", "mam", after=ids[1], before=ids[8], limit=2)
    assert ids_of(page) == ids[6:8] and not page.complete


async def test_archive_before_as_a_bound_going_forwards(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    page = await storage.archive.query(H, "alice", "mam", before=ids[6], limit=4, reverse=False)
    assert ids_of(page) == ids[:4] and not page.complete and page.count == 10
    page = await storage.archive.query(H, "alice", "mam", after=ids[3], before=ids[6], limit=4, reverse=False)
    assert ids_of(page) == ids[4:6] and page.complete
    page = await storage.archive.query(H, "alice", "mam", after=ids[3], limit=2, reverse=True)
    assert ids_of(page) == ids[8:] and not page.complete


async def test_archive_count_left_out(storage: Storage) -> None:
    ids = await _archive(storage, 5)
    page = await storage.archive.query(H, "alice", "mam", limit=2, count=False)
    assert ids_of(page) == ids[:2] and page.count is None and not page.complete
    page = await storage.archive.query(H, "alice", "mam", start=102.0, ids=ids[1:4], count=False)
    assert ids_of(page) == ids[2:4] and page.count is None and page.complete


async def test_archive_time_range_of_many_items(storage: Storage) -> None:
    # More items in the range than the backends look up by time (then they read in order), in a
    # range that is small and one that is not, out of timestamp order as a clock may go.
    n = 2500
    stamps = [1000.0 + i for i in range(n)]
    stamps[10], stamps[n - 10] = stamps[n - 10], stamps[10]
    ids = [await storage.archive.append(H, "alice", "mam", stamp, "bob@x", b"p") for stamp in stamps]
    page = await storage.archive.query(H, "alice", "mam", start=1000.0 + n - 20, limit=5)
    assert ids_of(page) == [ids[10], *ids[n - 20 : n - 16]] and not page.complete
    page = await storage.archive.query(H, "alice", "mam", start=1000.0 + n - 20, limit=5, reverse=True)
    assert ids_of(page) == ids[n - 5 :] and not page.complete
    page = await storage.archive.query(H, "alice", "mam", start=1005.0, limit=3)
    assert ids_of(page) == ids[5:8] and not page.complete and page.count == n - 5
    page = await storage.archive.query(H, "alice", "mam", start=1005.0, end=1000.0 + n - 6, limit=3, reverse=True)
    assert ids_of(page) == [ids[n - 8], ids[n - 7], ids[n - 6]]
    page = await storage.archive.query(H, "alice", "mam", end=1011.0, after=ids[5])
    assert ids_of(page) == [*ids[6:10], ids[11], ids[n - 10]] and page.complete and page.count == 12


async def test_archive_time_range_paging(storage: Storage) -> None:
    # XEP-0313 §4.1.2 with XEP-0059 paging: pages of a range come in archive order, whatever the
    # timestamps. Here one item inside the range's seqs is out of it in time, one appended last
    # (a node with its clock behind) is within it, and another account's items are in between.
    stamps = [100.0 + i for i in range(12)]
    stamps[6] = 500.0
    stamps.append(104.5)
    ids = []
    for i, stamp in enumerate(stamps):
        ids.append(await storage.archive.append(H, "alice", "mam", stamp, ("bob@x", "carol@x")[i % 2], b"p"))
        await storage.archive.append(H, "bob", "mam", stamp, "alice@x", b"p")
    window = [ids[i] for i in (3, 4, 5, 7, 8, 12)]
    query = functools.partial(storage.archive.query, H, "alice", "mam", start=103.0, end=108.0)
    page = await query(limit=2)
    assert ids_of(page) == window[:2] and not page.complete and page.count == 6
    page = await query(after=window[1], limit=2, count=False)
    assert ids_of(page) == window[2:4] and not page.complete and page.count is None
    page = await query(after=window[3], limit=2)
    assert ids_of(page) == window[4:] and page.complete and page.count == 6
    page = await query(after=window[5], limit=2)
    assert page.items == [] and page.complete
    page = await query(limit=4, reverse=True)
    assert ids_of(page) == window[2:] and not page.complete
    page = await query(before=window[2], limit=4)
    assert ids_of(page) == window[:2] and page.complete
    page = await query(after=window[0], before=window[5], limit=10)
    assert ids_of(page) == window[1:5] and page.complete
    page = await query(with_jid="bob@x", after=window[0], limit=1)
    assert ids_of(page) == [window[1]] and not page.complete and page.count == 3
    # An item outside the range in time is a valid paging id; the page goes on from its place.
    page = await query(after=ids[6], limit=10)
    assert ids_of(page) == window[3:] and page.complete
    page = await query(start=600.0)
    assert page.items == [] and page.complete and page.count == 0


async def test_archive_limit_zero_counts_only(storage: Storage) -> None:
    await _archive(storage, 3)
    page = await storage.archive.query(H, "alice", "mam", limit=0)
    assert page.items == [] and not page.complete and page.count == 3
    empty = await storage.archive.query(H, "bob", "mam", limit=0)
    assert empty.items == [] and empty.complete and empty.count == 0


async def test_archive_unknown_paging_id(storage: Storage) -> None:
    ids = await _archive(storage, 3)
    other_store = await storage.archive.append(H, "alice", "offline", 1.0, "bob@x", b"p")
    other_user = await storage.archive.append(H, "bob", "mam", 1.0, "alice@x", b"p")
    for bad in ("no-such-id", other_store, other_user, ""):
        with pytest.raises(ItemNotFound):
            await storage.archive.query(H, "alice", "mam", after=bad)
        with pytest.raises(ItemNotFound):
            await storage.archive.query(H, "alice", "mam", before=bad, limit=2)
    with pytest.raises(ItemNotFound):
        await storage.archive.query(H, "alice", "mam", after=ids[0], before="no-such-id")
    assert issubclass(ItemNotFound, StorageError)


async def test_archive_unknown_paging_id_in_a_time_range_without_items(storage: Storage) -> None:
    # XEP-0313 §4.3: the id is unknown whatever the range holds.
    ids = await _archive(storage, 3)
    for start, end in ((200.0, None), (None, 50.0), (200.0, 300.0)):
        query = functools.partial(storage.archive.query, H, "alice", "mam", start=start, end=end)
        with pytest.raises(ItemNotFound):
            await query(after="no-such-id")
        with pytest.raises(ItemNotFound):
            await query(before="no-such-id", limit=2)
        page = await query(after=ids[0])
        assert page.items == [] and page.complete and page.count == 0


async def test_archive_filter_with(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    page = await storage.archive.query(H, "alice", "mam", with_jid="carol@x")
    assert ids_of(page) == ids[1::2] and page.count == 5 and page.complete
    assert all(item.with_jid == "carol@x" for item in page.items)
    page = await storage.archive.query(H, "alice", "mam", with_jid="carol@x", after=ids[3], limit=2)
    assert ids_of(page) == [ids[5], ids[7]] and not page.complete and page.count == 5
    page = await storage.archive.query(H, "alice", "mam", with_jid="carol@x", limit=2, reverse=True)
    assert ids_of(page) == [ids[7], ids[9]] and not page.complete
    page = await storage.archive.query(H, "alice", "mam", with_jid="dave@x")
    assert page.items == [] and page.complete and page.count == 0


async def test_archive_id_bounds_bound_the_set_and_its_count(storage: Storage) -> None:
    """after_id and before_id bound the matching set (XEP-0313 §4.1.3), which count counts; after
    and before page through it, and the tighter bound of each side holds."""
    ids = await _archive(storage, 10)
    archive = storage.archive
    page = await archive.query(H, "alice", "mam", after_id=ids[1], before_id=ids[8], limit=2)
    assert ids_of(page) == ids[2:4] and page.count == 6 and not page.complete
    page = await archive.query(H, "alice", "mam", after_id=ids[1], before_id=ids[8], after=ids[5])
    assert ids_of(page) == ids[6:8] and page.count == 6 and page.complete
    page = await archive.query(H, "alice", "mam", after_id=ids[5], after=ids[1], limit=0)
    assert page.count == 4
    page = await archive.query(H, "alice", "mam", before_id=ids[8], before=ids[3], limit=5)
    assert ids_of(page) == ids[:3] and page.count == 8 and page.complete
    page = await archive.query(H, "alice", "mam", with_jid="bob@x", after_id=ids[3], limit=0)
    assert page.count == 3
    with pytest.raises(ItemNotFound):
        await archive.query(H, "alice", "mam", after_id="unknown")
    other = await archive.append(H, "bob", "mam", 1.0, "alice@x", b"p")
    with pytest.raises(ItemNotFound):
        await archive.query(H, "alice", "mam", before_id=other)


async def test_archive_filter_time(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    # start and end are both inclusive.
    page = await storage.archive.query(H, "alice", "mam", start=103.0, end=106.0)
    assert ids_of(page) == ids[3:7] and page.count == 4 and page.complete
    page = await storage.archive.query(H, "alice", "mam", start=107.5)
    assert ids_of(page) == ids[8:]
    page = await storage.archive.query(H, "alice", "mam", end=101.0)
    assert ids_of(page) == ids[:2]
    page = await storage.archive.query(H, "alice", "mam", start=102.0, end=108.0, with_jid="bob@x", limit=2)
    assert ids_of(page) == [ids[2], ids[4]] and not page.complete and page.count == 4
    page = await storage.archive.query(H, "alice", "mam", start=200.0)
    assert page.items == [] and page.count == 0


async def test_archive_filter_ids(storage: Storage) -> None:
    ids = await _archive(storage, 10)
    # Results come in archive order, whatever the order asked for; unknown ids are left out.
    page = await storage.archive.query(H, "alice", "mam", ids=[ids[7], ids[2], "unknown", ids[5]])
    assert ids_of(page) == [ids[2], ids[5], ids[7]] and page.count == 3 and page.complete
    page = await storage.archive.query(H, "alice", "mam", ids=[ids[7], ids[2], ids[5]], limit=2)
    assert ids_of(page) == [ids[2], ids[5]] and not page.complete and page.count == 3
    page = await storage.archive.query(H, "alice", "mam", ids=[])
    assert page.items == [] and page.count == 0 and page.complete
    other = await storage.archive.append(H, "bob", "mam", 1.0, "alice@x", b"p")
    assert (await storage.archive.query(H, "alice", "mam", ids=[other])).items == []


async def test_archives_are_per_store_and_user(storage: Storage) -> None:
    mam = await _archive(storage, 3, "mam")
    offline = await _archive(storage, 2, "offline")
    await storage.archive.append(H, "bob", "mam", 1.0, "alice@x", b"bob's")
    await storage.archive.append(OTHER_HOST, "alice", "mam", 1.0, "x@x", b"other host")
    assert ids_of(await storage.archive.query(H, "alice", "mam")) == mam
    assert ids_of(await storage.archive.query(H, "alice", "offline")) == offline
    assert await storage.archive.count(H, "alice", "mam") == 3
    assert await storage.archive.count(H, "alice", "offline") == 2
    assert await storage.archive.count(H, "bob", "mam") == 1
    assert await storage.archive.count(OTHER_HOST, "alice", "mam") == 1
    assert await storage.archive.count(H, "carol", "mam") == 0


async def test_archive_delete_by_ids(storage: Storage) -> None:
    ids = await _archive(storage, 5)
    other = await storage.archive.append(H, "bob", "mam", 1.0, "alice@x", b"p")
    assert await storage.archive.delete(H, "alice", "mam", ids=[ids[1], ids[3], other, "unknown"]) == 2
    assert ids_of(await storage.archive.query(H, "alice", "mam")) == [ids[0], ids[2], ids[4]]
    assert await storage.archive.count(H, "bob", "mam") == 1
    assert await storage.archive.delete(H, "alice", "mam", ids=[]) == 0
    assert await storage.archive.count(H, "alice", "mam") == 3
    # A deleted id is unknown for paging.
    with pytest.raises(ItemNotFound):
        await storage.archive.query(H, "alice", "mam", after=ids[1])


async def test_archive_items_put_back_take_their_places_again(storage: Storage) -> None:
    ids = await _archive(storage, 4, "offline")
    taken = (await storage.archive.query(H, "alice", "offline", limit=2)).items
    assert await storage.archive.delete(H, "alice", "offline", ids=[item.id for item in taken]) == 2
    later = await storage.archive.append(H, "alice", "offline", 200.0, "bob@x", b"later")
    # One that was never deleted stays as it is, and is not counted twice.
    await storage.archive.put_back(H, "alice", "offline", [*taken, await _item(storage, ids[3])])
    page = await storage.archive.query(H, "alice", "offline")
    assert ids_of(page) == [*ids, later]
    assert page.items[:2] == taken
    assert await storage.archive.count(H, "alice", "offline") == 5
    with pytest.raises(ArchiveFull):
        await storage.archive.append(H, "alice", "offline", 201.0, "bob@x", b"full", limit=5)


async def _item(storage: Storage, item_id: str) -> ArchivedItem:
    (item,) = (await storage.archive.query(H, "alice", "offline", ids=[item_id])).items
    return item


async def test_archive_delete_before_time(storage: Storage) -> None:
    ids = await _archive(storage, 5)
    # ``before`` is exclusive: the item at 102.0 stays.
    assert await storage.archive.delete(H, "alice", "mam", before=102.0) == 2
    assert ids_of(await storage.archive.query(H, "alice", "mam")) == ids[2:]
    assert await storage.archive.delete(H, "alice", "mam", ids=[ids[2], ids[4]], before=103.0) == 1
    assert ids_of(await storage.archive.query(H, "alice", "mam")) == ids[3:]


async def test_archive_delete_all_of_one_store(storage: Storage) -> None:
    await _archive(storage, 4, "mam")
    offline = await _archive(storage, 2, "offline")
    assert await storage.archive.delete(H, "alice", "mam") == 4
    assert await storage.archive.count(H, "alice", "mam") == 0
    assert ids_of(await storage.archive.query(H, "alice", "offline")) == offline
    assert await storage.archive.delete(H, "alice", "mam") == 0


async def test_archive_paging_after_deletes(storage: Storage) -> None:
    ids = await _archive(storage, 6)
    await storage.archive.delete(H, "alice", "mam", ids=[ids[2], ids[3]])
    page = await storage.archive.query(H, "alice", "mam", after=ids[1], limit=1)
    assert ids_of(page) == [ids[4]] and not page.complete and page.count == 4
    new = await storage.archive.append(H, "alice", "mam", 50.0, "bob@x", b"late")
    page = await storage.archive.query(H, "alice", "mam", after=ids[5])
    assert ids_of(page) == [new] and page.complete


async def _counts(storage: Storage, archives: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    """Each archive's count as ``count`` gives it, checked against the items a query finds."""
    counts = {}
    for host, user, store in archives:
        counts[host, user, store] = await storage.archive.count(host, user, store)
        assert counts[host, user, store] == len((await storage.archive.query(host, user, store)).items)
    return counts


async def test_archive_count_follows_appends_and_deletes(storage: Storage) -> None:
    """The count is kept per archive through every way items come and go, failed appends included."""
    archives = [(H, "alice", "mam"), (H, "alice", "offline"), (H, "bob", "offline"), (OTHER_HOST, "alice", "mam")]
    ids = await _archive(storage, 6, "mam")
    offline = await asyncio.gather(*(storage.archive.append(H, "alice", "offline", 1.0, "bob@x", b"%d" % i)
                                     for i in range(5)))
    await storage.archive.append(H, "bob", "offline", 1.0, "alice@x", b"p")
    await storage.archive.append(OTHER_HOST, "alice", "mam", 1.0, "bob@x", b"p")
    for store in ("mam", "offline"):
        # Refused by the database: an id is unique across archives.
        with pytest.raises(StorageError):
            await storage.archive.append(H, "alice", store, 0.0, "bob@x", b"again", item_id=ids[0])
    assert await _counts(storage, archives) == dict(zip(archives, [6, 5, 1, 1], strict=True))
    await storage.archive.delete(H, "alice", "offline", ids=offline[:2])
    await storage.archive.delete(H, "alice", "mam", before=102.0)
    assert await _counts(storage, archives) == dict(zip(archives, [4, 3, 1, 1], strict=True))
    await storage.archive.delete(H, "alice", "mam", ids=ids)
    await storage.archive.delete(H, "bob", "offline")
    assert await _counts(storage, archives) == dict(zip(archives, [0, 3, 0, 1], strict=True))
    await storage.accounts.create(H, "alice", derive_credentials("secret"))
    await storage.accounts.delete(H, "alice")
    assert await _counts(storage, archives) == dict(zip(archives, [0, 0, 0, 1], strict=True))
    # The name registered again starts from nothing.
    await storage.accounts.create(H, "alice", derive_credentials("secret"))
    await storage.archive.append(H, "alice", "offline", 1.0, "bob@x", b"again")
    assert await storage.archive.count(H, "alice", "offline") == 1


async def test_archive_append_with_a_limit(storage: Storage) -> None:
    """Appends with a limit, concurrent ones among them and mixed with appends without: exactly as
    many as the limit allows are stored, in order, and the others raise ArchiveFull."""
    first = await storage.archive.append(H, "alice", "offline", 1.0, "bob@x", b"0", limit=3)

    async def bounded(i: int) -> str:
        return await storage.archive.append(H, "alice", "offline", 1.0, "bob@x", b"%d" % i, limit=3)

    async def free(i: int) -> str:
        return await storage.archive.append(H, "alice", "mam", 1.0, "bob@x", b"%d" % i)

    results = await asyncio.gather(*(bounded(i) if i % 2 else free(i) for i in range(1, 9)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, ArchiveFull)]
    assert len(refused) == 2 and all(isinstance(r, str) for r in results if r not in refused)
    page = await storage.archive.query(H, "alice", "offline")
    assert [item.payload for item in page.items] == [b"0", b"1", b"3"] and page.items[0].id == first
    assert await storage.archive.count(H, "alice", "mam") == 4
    # A limit counts the archive it appends to; and a removed item makes room.
    await storage.archive.append(H, "bob", "offline", 1.0, "alice@x", b"p", limit=1)
    await storage.archive.delete(H, "alice", "offline", ids=[first])
    await bounded(9)
    with pytest.raises(ArchiveFull):
        await bounded(10)
    assert await storage.archive.count(H, "alice", "offline") == 3
    # An archive whose count storage does not keep is counted when a limit asks.
    with pytest.raises(ArchiveFull):
        await storage.archive.append(H, "alice", "mam", 1.0, "bob@x", b"p", limit=4)
    await storage.archive.append(H, "alice", "mam", 1.0, "bob@x", b"p", limit=5)


# Of the items _resourced appends, by resource: alternating contacts, resources in turn.
_BY_RESOURCE = {"phone": [0, 3, 6, 9], "laptop": [1, 4, 7, 10], "": [2, 5, 8, 11]}


async def _resourced(storage: Storage, n: int = 12) -> list[str]:
    """Append ``n`` items for alice: timestamps 100, 101, ..., contacts bob and carol in turn,
    resources 'phone', 'laptop' and none in turn."""
    return [await storage.archive.append(H, "alice", "mam", 100.0 + i, ("bob@x", "carol@x")[i % 2],
                                         f"msg {i}".encode(), resource=("phone", "laptop", "")[i % 3])
            for i in range(n)]


async def test_archive_query_by_resource(storage: Storage) -> None:
    """The items appended with a resource, found by it with their contact or without one (a
    room's archive asks by nick alone): pages both ways, bounds, time and count as without it."""
    archive = storage.archive
    ids = await _resourced(storage)
    phone = [ids[i] for i in _BY_RESOURCE["phone"]]
    page = await archive.query(H, "alice", "mam", resource="phone")
    assert ids_of(page) == phone and page.complete and page.count == 4
    assert {item.resource for item in page.items} == {"phone"}
    everything = await archive.query(H, "alice", "mam")
    assert [item.resource for item in everything.items] == ["phone", "laptop", ""] * 4
    assert ids_of(await archive.query(H, "alice", "mam", with_jid="bob@x", resource="phone")) == [ids[0], ids[6]]
    assert ids_of(await archive.query(H, "alice", "mam", with_jid="carol@x", resource="laptop")) == [ids[1], ids[7]]
    page = await archive.query(H, "alice", "mam", resource="phone", limit=2)
    assert ids_of(page) == phone[:2] and not page.complete and page.count == 4
    page = await archive.query(H, "alice", "mam", resource="phone", limit=2, after=phone[1])
    assert ids_of(page) == phone[2:] and page.complete
    page = await archive.query(H, "alice", "mam", resource="phone", limit=2, before=phone[3])
    assert ids_of(page) == phone[1:3] and not page.complete
    page = await archive.query(H, "alice", "mam", resource="phone", limit=1, reverse=True)
    assert ids_of(page) == phone[3:] and not page.complete
    # Paging ids need not be items with the resource; the bounds of the set are counted within.
    page = await archive.query(H, "alice", "mam", resource="phone", after=ids[1], before=ids[9])
    assert ids_of(page) == phone[1:3]
    page = await archive.query(H, "alice", "mam", resource="phone", after_id=ids[0], before_id=ids[9])
    assert ids_of(page) == phone[1:3] and page.count == 2
    page = await archive.query(H, "alice", "mam", resource="phone", start=103.0, end=106.0)
    assert ids_of(page) == phone[1:3] and page.count == 2
    page = await archive.query(H, "alice", "mam", resource="phone", ids=[ids[0], ids[1], ids[3]])
    assert ids_of(page) == phone[:2]
    page = await archive.query(H, "alice", "mam", resource="nobody")
    assert page.items == [] and page.complete and page.count == 0
    assert (await archive.query(H, "alice", "offline", resource="phone")).items == []


async def test_archive_items_put_back_keep_their_resource(storage: Storage) -> None:
    archive = storage.archive
    ids = await _resourced(storage, 6)
    taken = (await archive.query(H, "alice", "mam", ids=[ids[3]])).items
    assert await archive.delete(H, "alice", "mam", ids=[ids[3]]) == 1
    assert ids_of(await archive.query(H, "alice", "mam", resource="phone")) == [ids[0]]
    await archive.put_back(H, "alice", "mam", taken)
    page = await archive.query(H, "alice", "mam", resource="phone")
    assert ids_of(page) == [ids[0], ids[3]] and page.items[1] == taken[0]


async def test_archive_items_from_before_resources_were_kept(storage_url: str) -> None:
    """Items archived before resources were kept (SQLite migration 0007, PostgreSQL 0008) have
    none (None): a query with a resource takes them in, in their places, for the caller to check,
    and counts them; those appended since are found by their resource."""
    first = await open_storage(storage_url)
    try:
        old = await _resourced(first, 6)
    finally:
        await first.close()
    await _forget_resources(storage_url)
    second = await open_storage(storage_url)
    try:
        archive = second.archive
        assert [item.resource for item in (await archive.query(H, "alice", "mam")).items] == [None] * 6
        new = [await archive.append(H, "alice", "mam", 200.0 + i, "bob@x", b"new", resource=resource)
               for i, resource in enumerate(("phone", "laptop", "phone"))]
        # An item archived before, put back after, is one of those still.
        taken = (await archive.query(H, "alice", "mam", ids=[old[2]])).items
        await archive.delete(H, "alice", "mam", ids=[old[2]])
        await archive.put_back(H, "alice", "mam", taken)
        page = await archive.query(H, "alice", "mam", resource="phone")
        assert ids_of(page) == [*old, new[0], new[2]] and page.count == 8 and page.complete
        assert [item.resource for item in page.items] == [None] * 6 + ["phone"] * 2
        page = await archive.query(H, "alice", "mam", resource="phone", limit=7)
        assert ids_of(page) == [*old, new[0]] and not page.complete
        page = await archive.query(H, "alice", "mam", resource="phone", limit=3, before=new[2])
        assert ids_of(page) == [old[4], old[5], new[0]] and not page.complete
        page = await archive.query(H, "alice", "mam", with_jid="bob@x", resource="laptop", after=old[3])
        assert ids_of(page) == [old[4], new[1]] and page.count == 4
    finally:
        await second.close()


async def _forget_resources(storage_url: str) -> None:
    """Take the store back to the schema before resources were kept (SQLite 0007, PostgreSQL 0008)."""
    if storage_url.startswith("sqlite:"):
        rewind_sqlite_archive(storage_url.removeprefix("sqlite://"))
        return
    await execute_in_schema(storage_url, "ALTER TABLE archive DROP COLUMN with_resource;"
                            "DELETE FROM schema_migrations WHERE version >= 8")


async def test_archive_count_of_items_stored_before_it_was_kept(storage_url: str) -> None:
    """The migration that keeps the counts counts what an archive already held."""
    first = await open_storage(storage_url)
    try:
        await _archive(first, 7, "offline")
        await _archive(first, 2, "mam")
    finally:
        await first.close()
    await _forget_archive_counts(storage_url)
    second = await open_storage(storage_url)
    try:
        assert await second.archive.count(H, "alice", "offline") == 7
        await second.archive.append(H, "alice", "offline", 1.0, "bob@x", b"p")
        assert await second.archive.count(H, "alice", "offline") == 8
        assert await second.archive.count(H, "alice", "mam") == 2
    finally:
        await second.close()


async def _forget_archive_counts(storage_url: str) -> None:
    """Take the store back to the schema before the counts were kept (SQLite 0004, and those after
    it; PostgreSQL 0005, and those after it)."""
    if storage_url.startswith("sqlite:"):
        rewind_sqlite_archive(storage_url.removeprefix("sqlite://"))
        return
    await execute_in_schema(storage_url, "ALTER TABLE archive DROP COLUMN with_resource;"
                            "DROP TABLE deleted_accounts; DROP FUNCTION account_locked CASCADE;"
                            "DROP FUNCTION accounts_not_deleted CASCADE; DROP FUNCTION lock_account_for_deletion;"
                            "DROP TABLE archive_counts; DROP TRIGGER archive_counted ON archive;"
                            "DROP TRIGGER archive_uncounted ON archive; DROP FUNCTION archive_count_added;"
                            "DROP FUNCTION archive_count_removed; ALTER TABLE muc_affiliations DROP COLUMN since;"
                            "DELETE FROM schema_migrations WHERE version >= 5")


async def _refuse_counting(storage_url: str, username: str) -> None:
    """Make the store fail to count an item appended to an offline store of ``username``."""
    if storage_url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(storage_url.removeprefix("sqlite://"))) as db, db:
            db.execute("CREATE TRIGGER refuse_count BEFORE INSERT ON archive_counts WHEN NEW.owner IN "
                       f"(SELECT owner FROM archive_owners WHERE username = '{username}') "
                       "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        return
    await execute_in_schema(storage_url, "CREATE FUNCTION refuse_count() RETURNS trigger LANGUAGE plpgsql AS $$ "
                             f"BEGIN IF NEW.username = '{username}' THEN RAISE EXCEPTION 'refused'; END IF; "
                             "RETURN NEW; END $$; CREATE TRIGGER refuse_count BEFORE INSERT ON archive_counts "
                             "FOR EACH ROW EXECUTE FUNCTION refuse_count()")


async def test_an_item_that_cannot_be_counted_is_not_stored(storage: Storage, storage_url: str) -> None:
    """An item of a counted store goes in with its count or not at all: a caller told that its
    append failed finds nothing of it stored (it would be there twice once sent again), and the
    appends written with it keep their own outcomes."""
    await _refuse_counting(storage_url, "bob")
    outcomes = await asyncio.gather(
        *(storage.archive.append_soon(H, user, "offline", 1.0, "carol@x", b"p", limit=limit)
          for user, limit in (("alice", None), ("bob", None), ("alice", 5), ("bob", 5))),
        return_exceptions=True)
    assert isinstance(outcomes[0], str) and isinstance(outcomes[2], str), outcomes
    assert isinstance(outcomes[1], StorageError) and isinstance(outcomes[3], StorageError), outcomes
    assert (await storage.archive.query(H, "bob", "offline")).items == []
    assert await storage.archive.count(H, "bob", "offline") == 0
    assert ids_of(await storage.archive.query(H, "alice", "offline")) == [outcomes[0], outcomes[2]]
    assert await storage.archive.count(H, "alice", "offline") == 2


# --- archive: concurrent appends -----------------------------------------------------------------

WRITERS = 8
PER_WRITER = 40


async def _writer(storage: Storage, writer: int, count: int = PER_WRITER) -> list[str]:
    """Append ``count`` items one after the other, each payload naming its writer and number."""
    return [await storage.archive.append(H, "alice", "mam", 100.0 + i, f"w{writer}@x", f"{writer}:{i}".encode())
            for i in range(count)]


async def _page_through(storage: Storage, limit: int, *, backwards: bool = False) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        if backwards:
            page = await storage.archive.query(H, "alice", "mam", before=cursor or "", limit=limit, count=False) \
                if cursor is not None else await storage.archive.query(H, "alice", "mam", limit=limit,
                                                                       reverse=True, count=False)
            seen[:0] = ids_of(page)
            cursor = page.items[0].id if page.items else None
        else:
            page = await storage.archive.query(H, "alice", "mam", after=cursor, limit=limit, count=False)
            seen += ids_of(page)
            cursor = page.items[-1].id if page.items else cursor
        if page.complete:
            return seen


async def test_archive_concurrent_appends_keep_order_and_ids(storage: Storage) -> None:
    written = await asyncio.gather(*(_writer(storage, w) for w in range(WRITERS)))
    everything = [item_id for ids in written for item_id in ids]
    assert len(set(everything)) == len(everything) == WRITERS * PER_WRITER
    page = await storage.archive.query(H, "alice", "mam")
    assert page.complete and page.count == len(everything)
    assert sorted(ids_of(page)) == sorted(everything)
    # Each writer's items keep the order it appended them in, and say who wrote them.
    for writer, ids in enumerate(written):
        mine = [item for item in page.items if item.with_jid == f"w{writer}@x"]
        assert [item.id for item in mine] == ids
        assert [item.payload for item in mine] == [f"{writer}:{i}".encode() for i in range(PER_WRITER)]
    # Paging either way, and by id, sees the one order.
    assert await _page_through(storage, 7) == ids_of(page)
    assert await _page_through(storage, 9, backwards=True) == ids_of(page)
    chosen = everything[::13]
    by_id = await storage.archive.query(H, "alice", "mam", ids=chosen)
    assert ids_of(by_id) == [item_id for item_id in ids_of(page) if item_id in set(chosen)]


async def test_archive_append_is_committed_when_it_returns(storage_url: str) -> None:
    """Durable before acknowledged: once an append returns, another connection reads the item."""
    writer = await open_storage(storage_url)
    reader = await open_storage(storage_url)
    try:
        async def append_and_read(i: int) -> None:
            item_id = await writer.archive.append(H, "alice", "offline", float(i), "bob@x", b"%d" % i)
            assert ids_of(await reader.archive.query(H, "alice", "offline", ids=[item_id])) == [item_id]

        await asyncio.gather(*(append_and_read(i) for i in range(50)))
        assert await reader.archive.count(H, "alice", "offline") == 50
    finally:
        await writer.close()
        await reader.close()


async def test_archive_paging_during_concurrent_appends_misses_nothing(storage: Storage, storage_url: str) -> None:
    """A reader paging "after the last id it saw" while appends commit concurrently gets every item:
    an item never becomes visible after one appended later to the same archive. PostgreSQL is
    shared by the nodes of a cluster, so there the appends come through two of them; SQLite is
    embedded in one."""
    shared = not storage_url.startswith("sqlite:")
    nodes = [storage, await open_storage(storage_url) if shared else storage]
    try:
        # Many appends, so that two committing out of the order of their numbers is all but certain.
        writers = asyncio.gather(*(_writer(nodes[w % 2], w, 150) for w in range(WRITERS)))
        seen: list[str] = []
        cursor: str | None = None
        while True:
            done = writers.done()
            page = await nodes[0].archive.query(H, "alice", "mam", after=cursor, limit=5, count=False)
            seen += ids_of(page)
            cursor = page.items[-1].id if page.items else cursor
            if done and page.complete:
                break
        written = await writers
        everything = ids_of(await nodes[1].archive.query(H, "alice", "mam"))
        assert len(everything) == sum(len(ids) for ids in written)
        assert seen == everything
    finally:
        if shared:
            await nodes[1].close()


async def test_archive_failed_append_fails_alone(storage: Storage) -> None:
    """An append the backend refuses raises StorageError; appends made with it still succeed."""
    async def good(i: int) -> str:
        return await storage.archive.append(H, "alice", "mam", float(i), "bob@x", b"ok")

    first = await good(-1)

    async def bad() -> str:
        # An id the archive holds already, which the database refuses (a unique key).
        return await storage.archive.append(H, "alice", "mam", 0.0, "bob@x", b"again", item_id=first)

    results = await asyncio.gather(good(0), bad(), good(1), bad(), good(2), return_exceptions=True)
    assert all(isinstance(results[i], StorageError) for i in (1, 3)), results
    kept = [r for r in results if isinstance(r, str)]
    assert len(kept) == 3
    assert ids_of(await storage.archive.query(H, "alice", "mam")) == [first, *kept]


async def test_archive_append_keeps_an_id_made_before(storage: Storage) -> None:
    """A caller may show an item's id before its append commits: the item is stored under it, and
    an id given twice is refused for the second append alone."""
    made = [new_item_id() for _ in range(3)]
    appended = await asyncio.gather(
        *(storage.archive.append(H, "alice", "mam", float(i), "bob@x", b"%d" % i, item_id=made[i]) for i in range(3))
    )
    assert appended == made
    again = storage.archive.append(H, "alice", "mam", 9.0, "bob@x", b"again", item_id=made[1])
    with pytest.raises(StorageError):
        await again
    page = await storage.archive.query(H, "alice", "mam")
    assert ids_of(page) == made
    assert [item.payload for item in page.items] == [b"0", b"1", b"2"]


async def test_archive_read_sees_the_appends_issued_before_it(storage: Storage) -> None:
    """append_soon does not wait for the commit, and the reads made after it wait for it: a query,
    a count and a deletion see every append issued before them."""
    issued = [storage.archive.append_soon(H, "alice", "mam", float(i), "bob@x", b"%d" % i) for i in range(5)]
    assert not any(done.done() for done in issued)
    page = await storage.archive.query(H, "alice", "mam")
    assert ids_of(page) == [done.result() for done in issued]
    later = storage.archive.append_soon(H, "alice", "mam", 5.0, "bob@x", b"5")
    assert await storage.archive.count(H, "alice", "mam") == 6
    last = storage.archive.append_soon(H, "alice", "offline", 6.0, "bob@x", b"6")
    assert await storage.archive.delete(H, "alice", "offline") == 1
    assert later.done() and last.done()


async def test_archive_read_sees_appends_with_a_limit_to_several_archives(storage: Storage) -> None:
    """Appends with a limit issued together are written archive by archive: a read after them
    waits for every one of them, not only for the archive whose turn came last."""
    issued = [storage.archive.append_soon(H, "alice", "offline", float(i), "bob@x", b"%d" % i, limit=500)
              for i in range(100)]
    issued.append(storage.archive.append_soon(H, "bob", "offline", 0.0, "alice@x", b"p", limit=500))
    assert await storage.archive.count(H, "alice", "offline") == 100
    assert all(done.done() for done in issued)
    page = await storage.archive.query(H, "alice", "offline")
    assert ids_of(page) == [done.result() for done in issued[:-1]]


# --- lifetime ------------------------------------------------------------------------------------


async def test_reopen_keeps_everything(storage_url: str) -> None:
    credentials = derive_credentials("secret")
    item = RosterItem("bob@example.org", "Bob", "both", groups=("Friends",))
    first = await open_storage(storage_url)
    try:
        await first.accounts.create(H, "alice", credentials)
        await first.roster.set_item(H, "alice", item)
        await first.kv.set(H, "alice", "vcard", BINARY)
        await first.maps.set(H, "alice", "private", UNICODE, BINARY)
        ids = await _archive(first, 3)
    finally:
        await first.close()
    second = await open_storage(storage_url)
    try:
        account = await second.accounts.get(H, "alice")
        assert account is not None and account.credentials == credentials
        assert await second.roster.get(H, "alice") == (1, {item.jid: item})
        assert await second.kv.get(H, "alice", "vcard") == BINARY
        assert await second.maps.items(H, "alice", "private") == {UNICODE: BINARY}
        assert ids_of(await second.archive.query(H, "alice", "mam", after=ids[0])) == ids[1:]
        # Numbering goes on where it stopped.
        assert await second.roster.set_item(H, "alice", RosterItem("carol@example.org")) == 2
        new = await second.archive.append(H, "alice", "mam", 1.0, "bob@x", b"p")
        assert ids_of(await second.archive.query(H, "alice", "mam", after=ids[-1])) == [new]
    finally:
        await second.close()


async def test_stores_opened_together_find_one_schema(storage_url: str) -> None:
    """Processes that open a new store at the same moment (the nodes of a cluster, or a server and
    an admin command beside it) each find it migrated, once, whichever of them migrated it."""
    opened = await asyncio.gather(*(open_storage(storage_url) for _ in range(4)), return_exceptions=True)
    stores = [store for store in opened if not isinstance(store, BaseException)]
    try:
        assert len(stores) == len(opened), opened
        await stores[0].kv.set(H, "alice", "vcard", b"card")
        assert [await store.kv.get(H, "alice", "vcard") for store in stores] == [b"card"] * len(stores)
    finally:
        for store in stores:
            await store.close()


async def test_unsupported_url() -> None:
    with pytest.raises(StorageError, match="unsupported storage URL"):
        await open_storage("mysql://localhost/db")
