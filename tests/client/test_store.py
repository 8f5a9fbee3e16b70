"""The client's local store: messages and their states, the outbox, de-duplication, the roster
cache, the settings, and the password kept out of the database (keyring, or a 0600 file)."""

from __future__ import annotations

import multiprocessing
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.fail
import pytest
from keyrings.alt.file import PlaintextKeyring  # type: ignore[import-untyped]

from schnack.client import Contact
from schnack.client.store import (
    FILENAME,
    PASSWORD_FILE,
    Settings,
    Store,
    StoreError,
    account_dir,
    client_dir,
    load_password,
    save_password,
    stored_accounts,
)
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.xml import element, qname, sub

ALICE = JID.parse("alice@example.test")
BOB = JID.parse("bob@example.test")
CAROL = JID.parse("carol@example.test")
SECRET = "correct horse battery staple"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(account_dir(ALICE, tmp_path))
    yield opened
    opened.close()


def queue(store: Store, to: JID, text: str, origin_id: str) -> None:
    el = element(qname(ns.CLIENT, "message"), {"type": "chat", "to": str(to), "id": origin_id})
    sub(el, qname(ns.CLIENT, "body"), text=text)
    store.queue(to, text, origin_id, el, encrypted=False)


def test_the_outbox_keeps_messages_in_order_until_acknowledged(tmp_path: Path, store: Store) -> None:
    queue(store, BOB, "first", "o1")
    queue(store, CAROL, "second", "o2")
    queue(store, BOB, "third", "o3")
    entries = store.outbox()
    assert [(e.origin_id, e.peer) for e in entries] == [("o1", BOB), ("o2", CAROL), ("o3", BOB)]
    assert entries[0].stanza.findtext(f"{{{ns.CLIENT}}}body") == "first"
    assert entries[0].stanza.get("to") == str(BOB)
    assert store.advance("o1", "sent") and store.advance("o1", "acked")
    assert store.advance("o3", "acked")
    assert [e.origin_id for e in store.outbox()] == ["o2"]
    # It was written to disk: another store on the same file sees the same.
    other = Store(account_dir(ALICE, tmp_path))
    try:
        assert [e.origin_id for e in other.outbox()] == ["o2"]
        assert [(m.text, m.state) for m in other.history(BOB)] == [("first", "acked"), ("third", "acked")]
    finally:
        other.close()


def test_states_only_move_forward(store: Store) -> None:
    queue(store, BOB, "hello", "o1")
    message = store.sent_message("o1")
    assert message is not None and (message.state, message.direction, message.peer) == ("pending", "out", BOB)
    assert store.advance("o1", "delivered")
    assert not store.advance("o1", "sent") and not store.advance("o1", "acked")
    assert store.advance("o1", "read")
    assert not store.advance("unknown", "acked")
    message = store.sent_message("o1")
    assert message is not None and message.state == "read"
    assert store.outbox() == []
    with pytest.raises(ValueError, match="unknown state"):
        store.advance("o1", "teleported")


def test_a_refused_message_is_failed_and_leaves_the_outbox(store: Store) -> None:
    queue(store, BOB, "hello", "o1")
    assert store.fail("o1", "policy-violation", "encrypt it")
    assert not store.fail("unknown", "item-not-found", None)
    assert not store.advance("o1", "acked")
    message = store.sent_message("o1")
    assert message is not None
    assert (message.state, message.error, message.error_text) == ("failed", "policy-violation", "encrypt it")
    assert store.outbox() == []


def test_an_unconfirmed_message_is_found_by_peer_and_text(store: Store) -> None:
    queue(store, BOB, "same words", "o1")
    assert store.unconfirmed(BOB, "same words", encrypted=False) == "o1"
    assert store.unconfirmed(BOB.bare, "other words", encrypted=False) is None
    assert store.unconfirmed(CAROL, "same words", encrypted=False) is None
    assert store.unconfirmed(BOB, "same words", encrypted=True) is None
    store.advance("o1", "acked")
    assert store.unconfirmed(BOB, "same words", encrypted=False) is None


def test_copies_of_a_message_are_recorded_once(store: Store) -> None:
    """XEP-0359: the same origin-id from the same sender, or the same stanza-id, is the same message."""
    bob_phone = JID.parse("bob@example.test/phone")
    assert store.receive(bob_phone, "hi", origin_id="x1", stanza_id="s1")
    assert store.known(BOB, origin_id="x1") and store.known(CAROL, stanza_id="s1")
    assert not store.receive(JID.parse("bob@example.test/laptop"), "hi", origin_id="x1", stanza_id="s2")
    assert not store.receive(bob_phone, "hi", origin_id="x9", stanza_id="s1")
    # Another sender may pick the same origin-id: that is another message.
    assert not store.known(CAROL, origin_id="x1")
    assert store.receive(CAROL, "hello", origin_id="x1")
    # Without ids nothing tells copies apart: each is kept.
    assert not store.known(BOB)
    assert store.receive(BOB, "plain", stamp=None) and store.receive(BOB, "plain")
    assert [m.text for m in store.history(BOB)] == ["hi", "plain", "plain"]
    (first, *_) = store.history(BOB)
    assert (first.direction, first.state, first.origin_id, first.stanza_id) == ("in", "delivered", "x1", "s1")


def test_history_is_in_time_order_and_can_be_limited(store: Store) -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    # A message held back offline is placed at the time it was sent, not when it arrived.
    store.receive(BOB, "second", origin_id="b", stamp=start + timedelta(seconds=2))
    store.receive(BOB, "first", origin_id="a", stamp=start)
    queue(store, BOB, "third (now)", "o1")
    store.receive(CAROL, "elsewhere", origin_id="c", stamp=start)
    history = store.history(BOB)
    assert [m.text for m in history] == ["first", "second", "third (now)"]
    assert history[0].stamp == start
    assert [m.text for m in store.history(BOB, limit=2)] == ["second", "third (now)"]
    assert [m.direction for m in history] == ["in", "in", "out"]


def test_conversations_are_listed_latest_first_with_their_unread_count(store: Store) -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert store.conversations() == []
    store.receive(BOB, "one", message_id="b1", stamp=start)
    store.receive(BOB, "two", message_id="b2", stamp=start + timedelta(seconds=1))
    store.receive(CAROL, "hi", message_id="c1", stamp=start + timedelta(seconds=2))
    store.receive(BOB, "two, corrected", message_id="b3", replaces="b2", stamp=start + timedelta(seconds=3))
    listed = store.conversations()
    assert [(c.peer, c.text, c.direction, c.unread, c.last) for c in listed] == [
        (CAROL, "hi", "in", 1, start + timedelta(seconds=2)),
        (BOB, "two, corrected", "in", 2, start + timedelta(seconds=1)),
    ]
    # Reading bob's messages and answering him puts him first, with nothing unread.
    store.mark(BOB, "b2", "read", outgoing=False, earlier=True)
    queue(store, BOB, "my answer", "o1")
    assert [(c.peer, c.text, c.direction, c.unread) for c in store.conversations()] == [
        (BOB, "my answer", "out", 0), (CAROL, "hi", "in", 1)]


def test_the_roster_cache_follows_fetches_and_pushes(store: Store) -> None:
    store.save_roster([Contact(BOB, "Bob", "both", groups=("friends", "work")), Contact(CAROL, None, "none", pending=True)])
    assert store.contacts() == [Contact(BOB, "Bob", "both", groups=("friends", "work")),
                                Contact(CAROL, None, "none", pending=True)]
    store.update_contact(Contact(CAROL, "Carol", "to"))
    store.update_contact(Contact(BOB, subscription="remove"))
    assert store.contacts() == [Contact(CAROL, "Carol", "to")]
    store.save_roster([Contact(BOB, approved=True)])
    assert store.contacts() == [Contact(BOB, approved=True)]


@pytest.mark.parametrize("verify", [True, False, Path("/etc/ssl/server.pem")])
def test_settings_round_trip(store: Store, verify: bool | Path) -> None:
    assert store.settings() is None
    settings = Settings("127.0.0.1", 5222, verify, False)
    store.save_settings(settings)
    assert store.settings() == settings


def test_the_store_is_the_owners_alone(tmp_path: Path, store: Store) -> None:
    directory = account_dir(ALICE, tmp_path)
    assert directory == tmp_path / "alice@example.test"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / FILENAME).stat().st_mode) == 0o600


def test_accounts_are_the_directories_with_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHNACK_CLIENT_DIR", str(tmp_path))
    assert client_dir() == tmp_path
    assert client_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"
    assert stored_accounts() == []
    for account in (BOB, ALICE):
        Store(account_dir(account)).close()
    (tmp_path / "not-an-account").mkdir()
    (tmp_path / "example.test").mkdir()
    Store(tmp_path / "example.test").close()
    assert stored_accounts() == [ALICE, BOB]


def test_a_memory_store_works_alike() -> None:
    memory = Store(None)
    try:
        queue(memory, BOB, "hello", "o1")
        assert [e.origin_id for e in memory.outbox()] == ["o1"]
        assert memory.directory is None
    finally:
        memory.close()


# The password -------------------------------------------------------------------------------------------


@pytest.fixture
def use_keyring() -> Iterator[None]:
    """Restore the process's keyring backend after a test that picks one."""
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


def _database_contains(directory: Path, secret: str) -> bool:
    """Whether the secret is in the database or its journal files."""
    return any(secret.encode() in path.read_bytes() for path in directory.glob(f"{FILENAME}*"))


def test_without_a_keyring_the_password_is_in_an_owner_only_file(tmp_path: Path, use_keyring: None) -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())
    directory = account_dir(ALICE, tmp_path)
    store = Store(directory)
    try:
        assert load_password(directory, ALICE) is None
        where = save_password(directory, ALICE, SECRET)
        assert where == str(directory / PASSWORD_FILE)
        assert stat.S_IMODE((directory / PASSWORD_FILE).stat().st_mode) == 0o600
        assert load_password(directory, ALICE) == SECRET
        # Saved again (a new password), the file is replaced, still owner-only.
        save_password(directory, ALICE, "new " + SECRET)
        assert load_password(directory, ALICE) == "new " + SECRET
        assert stat.S_IMODE((directory / PASSWORD_FILE).stat().st_mode) == 0o600
        queue(store, BOB, "some traffic", "o1")
    finally:
        store.close()
    assert not _database_contains(directory, SECRET)


def test_with_a_keyring_the_password_is_kept_there(tmp_path: Path, use_keyring: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # Named by the user, so trusted like a system keyring whatever keyring's rating of it.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    backend = PlaintextKeyring()
    keyring.set_keyring(backend)
    directory = account_dir(ALICE, tmp_path / "client")
    Store(directory).close()
    # A file left by an earlier login without a keyring goes once the keyring has the password.
    keyring.set_keyring(keyring.backends.fail.Keyring())
    save_password(directory, ALICE, "old")
    keyring.set_keyring(backend)
    assert save_password(directory, ALICE, SECRET) == "the system keyring"
    assert not (directory / PASSWORD_FILE).exists()
    assert backend.get_password("schnack", "alice@example.test") == SECRET
    assert load_password(directory, ALICE) == SECRET
    assert not any(SECRET.encode() in path.read_bytes() for path in directory.iterdir())


def test_a_fallback_keyring_nobody_chose_is_not_used(tmp_path: Path, use_keyring: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """keyring picks a plaintext file on its own where no system keyring runs: our 0600 file is as good."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    keyring.set_keyring(PlaintextKeyring())
    directory = account_dir(ALICE, tmp_path / "client")
    assert save_password(directory, ALICE, SECRET) == str(directory / PASSWORD_FILE)
    assert load_password(directory, ALICE) == SECRET
    assert not (tmp_path / "xdg").exists() or not any(
        SECRET.encode() in path.read_bytes() for path in (tmp_path / "xdg").rglob("*") if path.is_file()
    )


def test_a_store_of_the_first_version_is_migrated(tmp_path: Path) -> None:
    """Version 1 knew no message ids, markers or corrections: our messages' ids are their origin-ids."""
    import sqlite3

    from schnack.client.store import _SCHEMA

    directory = account_dir(ALICE, tmp_path)
    directory.mkdir(parents=True)
    db = sqlite3.connect(directory / FILENAME, isolation_level=None)
    db.executescript(_SCHEMA[0])
    db.execute("INSERT INTO messages (peer, direction, body, stamp, state, origin_id) VALUES"
               " ('bob@example.test', 'out', 'old', '2026-01-01T00:00:00.000000Z', 'acked', 'o1')")
    db.execute("PRAGMA user_version = 1")
    db.close()
    store = Store(directory)
    try:
        [old] = store.history(BOB)
        assert (old.text, old.message_id, old.edited) == ("old", "o1", None)
        assert store.mark(BOB, "o1", "delivered", outgoing=True, earlier=False) == ["o1"]
    finally:
        store.close()


def test_a_store_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    """A newer schnack's file may hold columns or rows this version would misread or leave out of
    what it writes: it is not opened, and not changed."""
    import sqlite3

    from schnack.client.store import _SCHEMA

    directory = account_dir(ALICE, tmp_path)
    Store(directory).close()
    newer = len(_SCHEMA) + 1
    db = sqlite3.connect(directory / FILENAME, isolation_level=None)
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()
    before = (directory / FILENAME).read_bytes()
    expected = (f"cannot open the local store in {directory}: this store was written by a newer schnack"
                f" (schema {newer}, this version knows up to {len(_SCHEMA)}); upgrade schnack")
    with pytest.raises(StoreError) as refused:
        Store(directory)
    assert str(refused.value) == expected
    assert (directory / FILENAME).read_bytes() == before


def _open_store(directory: Path, start: Barrier, answers: Queue[str]) -> None:
    start.wait()
    try:
        Store(directory).close()
    except StoreError as err:
        answers.put(str(err))
    else:
        answers.put("opened")


@pytest.mark.parametrize("version", [0, 1], ids=["new", "first-version"])
def test_processes_opening_a_store_at_once_all_get_it(tmp_path: Path, version: int) -> None:
    """Several processes of one account (a listener and a send command) started together on a
    store that is new or of an older version: one creates or upgrades it, the others use it."""
    import sqlite3

    from schnack.client.store import _SCHEMA

    context = multiprocessing.get_context("fork")
    for round in range(5):
        directory = account_dir(ALICE, tmp_path / str(round))
        if version:
            directory.mkdir(parents=True)
            db = sqlite3.connect(directory / FILENAME, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA[0])
            db.execute("PRAGMA user_version = 1")
            db.close()
        start, answers = context.Barrier(4), context.Queue()
        openers = [context.Process(target=_open_store, args=(directory, start, answers)) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
        assert [answers.get() for _ in openers] == ["opened"] * 4
        store = Store(directory)
        try:
            queue(store, BOB, "hello", "o1")
            assert [m.text for m in store.history(BOB)] == ["hello"]
        finally:
            store.close()


def test_a_damaged_store_says_so_and_where(tmp_path: Path) -> None:
    """A file whose pages were overwritten (a disk fault) opens, but reading it raises StoreError
    naming the file, not an error of the database library."""
    directory = account_dir(ALICE, tmp_path)
    store = Store(directory)
    for n in range(10):
        store.receive(BOB, "x" * 2000, origin_id=str(n))
    store.close()
    path = directory / FILENAME
    data = path.read_bytes()
    # Only the first page, with the header and the schema, is left whole.
    page = int.from_bytes(data[16:18], "big")
    path.write_bytes(data[:page] + bytes(len(data) - page))
    with pytest.raises(StoreError, match=f"cannot read the local store in {directory}: .*malformed"):
        damaged = Store(directory)
        try:
            damaged.history(BOB)
        finally:
            damaged.close()


def test_markers_move_a_conversation_up_to_a_message(store: Store) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(3):
        queue(store, BOB, f"to bob {n}", f"o{n}")
    queue(store, CAROL, "to carol", "c0")
    for origin_id in ("o0", "o1", "o2", "c0"):
        store.advance(origin_id, "acked")
    # A receipt moves one message; a marker every one before it too, and never backwards.
    assert store.mark(BOB, "o1", "delivered", outgoing=True, earlier=False) == ["o1"]
    assert store.mark(BOB, "o1", "read", outgoing=True, earlier=True) == ["o0", "o1"]
    assert store.mark(BOB, "o0", "delivered", outgoing=True, earlier=True) == []
    assert [m.state for m in store.history(BOB)] == ["read", "read", "acked"]
    assert store.sent_message("c0").state == "acked"  # type: ignore[union-attr]
    assert store.mark(BOB, "unknown", "read", outgoing=True, earlier=True) == []
    # A receipt may overtake the server's acknowledgement: a message only written moves too,
    # and leaves the outbox; one not even written does not.
    queue(store, CAROL, "written", "c1")
    queue(store, CAROL, "not yet", "c2")
    store.advance("c1", "sent")
    assert store.mark(CAROL, "c2", "delivered", outgoing=True, earlier=True) == ["c0", "c1"]
    assert [e.origin_id for e in store.outbox()] == ["c2"]
    # Messages that arrived: read up to one, and the last markable one is what a marker names.
    for n, markable in enumerate((True, False)):
        assert store.receive(CAROL, f"from carol {n}", message_id=f"m{n}", markable=markable,
                             stamp=start + timedelta(seconds=n))
    assert store.latest_markable(CAROL, "m1") == "m0"
    assert store.mark(CAROL, "m1", "read", outgoing=False, earlier=True) == ["m0", "m1"]
    with pytest.raises(ValueError):
        store.mark(CAROL, "m1", "acked", outgoing=False, earlier=True)


def test_corrections_replace_only_the_senders_own_text(store: Store) -> None:
    assert store.receive(BOB, "helo", message_id="b1", origin_id="ob1")
    queue(store, BOB, "mine", "o1")
    # bob corrects his message: the text changes, the correction itself is not a message.
    assert store.receive(BOB, "hello", message_id="b2", origin_id="ob2", replaces="b1")
    assert not store.receive(BOB, "hello", message_id="b2", origin_id="ob2", replaces="b1")  # a copy
    # bob cannot correct ours: that stays a message of its own.
    assert store.receive(BOB, "not yours", message_id="b3", replaces="o1")
    history = store.history(BOB)
    assert [(m.direction, m.text, m.edited is not None) for m in history] == [
        ("in", "hello", True), ("out", "mine", False), ("in", "not yours", False)]
    # Our own correction goes through the outbox and changes our text at once.
    el = element(qname(ns.CLIENT, "message"), {"type": "chat", "to": str(BOB), "id": "o2"})
    store.queue(BOB, "mine, corrected", "o2", el, encrypted=False, replaces="o1")
    assert [m.text for m in store.history(BOB)] == ["hello", "mine, corrected", "not yours"]
    assert [e.origin_id for e in store.outbox()] == ["o1", "o2"]
    # A correction waiting in the outbox is not taken for a message the user typed again.
    store.advance("o1", "acked")
    assert store.unconfirmed(BOB, "mine, corrected", encrypted=False) is None


def test_what_our_other_devices_sent_is_recorded_once(store: Store) -> None:
    assert store.receive(BOB, "from the desk", origin_id="d1", message_id="d1", outgoing=True)
    assert store.known(BOB, origin_id="d1", outgoing=True) and not store.known(BOB, origin_id="d1")
    assert not store.receive(BOB, "from the desk", origin_id="d1", message_id="d1", outgoing=True, stanza_id="s1")
    # Without an origin-id (another app), the carbon and the archived copy share their 'id'.
    assert store.receive(BOB, "no origin-id", message_id="x1", outgoing=True)
    assert store.known(BOB, outgoing=True, message_id="x1")
    assert not store.receive(BOB, "no origin-id", message_id="x1", outgoing=True, stanza_id="s2")
    assert [(m.direction, m.text, m.state) for m in store.history(BOB)] == [
        ("out", "from the desk", "acked"), ("out", "no origin-id", "acked")]
    assert store.archive_position() is None
    store.save_archive_position("a1")
    assert store.archive_position() == "a1"


def test_group_messages_keep_their_writer_and_are_stored_once(store: Store) -> None:
    group = JID.parse("family@groups.example.test")
    stamp = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert store.receive(group, "hi all", stanza_id="s1", stamp=stamp, encrypted=True, message_id="g1",
                         nick="bob", sender=BOB)
    # The same message again, live and from the room's archive: one row.
    assert not store.receive(group, "hi all", stanza_id="s1", stamp=stamp, nick="bob", sender=BOB)
    assert store.receive(group, "hello", stanza_id="s2", stamp=stamp + timedelta(seconds=1), nick="carol")
    queue(store, group, "mine", "o1")
    [first, second, mine] = store.history(group)
    assert (first.peer, first.nick, first.sender, first.text, first.encrypted) == (group, "bob", BOB, "hi all", True)
    assert (second.nick, second.sender) == ("carol", None)
    assert (mine.direction, mine.nick, mine.sender) == ("out", None, None)
    [listed] = store.conversations()
    assert (listed.peer, listed.text, listed.direction, listed.unread) == (group, "mine", "out", 2)
    assert store.mark(group, "g1", "read", outgoing=False, earlier=True) == ["g1"]
    assert store.conversations()[0].unread == 1


def test_the_clock_offset_stamps_messages_and_is_kept(tmp_path: Path, store: Store) -> None:
    """The server's clock is an hour ahead of this device's: both directions are stamped by it,
    and the next process of the account starts with the offset."""
    store.set_clock_offset(timedelta(hours=1))
    queue(store, BOB, "out", "o1")
    store.receive(BOB, "in", message_id="i1")
    for message in store.history(BOB):
        assert abs(message.stamp - datetime.now(UTC) - timedelta(hours=1)) < timedelta(minutes=1)
    again = Store(account_dir(ALICE, tmp_path))
    try:
        assert abs(again.now() - datetime.now(UTC) - timedelta(hours=1)) < timedelta(minutes=1)
        again.set_clock_offset(timedelta())
    finally:
        again.close()
    last = Store(account_dir(ALICE, tmp_path))
    try:
        assert last.setting("clock_offset") is None
    finally:
        last.close()
