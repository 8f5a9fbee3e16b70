"""What only the PostgreSQL backend has: its URL, connection failures, migrations shared by nodes,
indexes, nodes racing one another, and a whole server that keeps its data across a restart."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from schnack.server.storage import AccountGone, Storage, StorageError, open_storage
from schnack.server.storage.base import DELETED_FOR
from schnack.xmpp import ns
from schnack.xmpp.sasl import derive_credentials

from ...harness import add_user, connect, running
from .conftest import POSTGRES_URL, postgres_schema, with_query

CARD = f"<vCard xmlns='{ns.VCARD}'><FN>Alice Liddell</FN><NICKNAME>alice</NICKNAME></vCard>"


@pytest.fixture
async def schema() -> AsyncIterator[tuple[str, str, asyncpg.Connection]]:
    async with postgres_schema() as fresh:
        yield fresh


def migration_names() -> list[str]:
    folder = resources.files("schnack.server.storage").joinpath("migrations", "postgres")
    return sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql"))


async def test_connection_refused_is_one_clear_line() -> None:
    # A bound socket that does not listen refuses connections, and no one else can take its port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(StorageError) as caught:
            await open_storage(f"postgresql://postgres@127.0.0.1:{port}/test")
    message = str(caught.value)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port}: ")
    assert "\n" not in message


async def test_password_stays_out_of_messages() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(StorageError) as caught:
            await open_storage(f"postgres://schnack:hunter2@127.0.0.1:{port}/test")
    assert f"127.0.0.1:{port}" in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("query", "complaint"), [
    ("pool_max_size=many", "pool_max_size must be a whole number of at least 1, got 'many'"),
    ("pool_max_size=%C2%B2", "pool_max_size must be a whole number of at least 1, got '\u00b2'"),
    ("pool_min_size=0", "pool_min_size must be a whole number of at least 1, got '0'"),
    ("pool_min_size=5&pool_max_size=2", "pool_min_size 5 is larger than pool_max_size 2"),
    ("schema=x%3Bdrop", "schema must be a plain SQL name"),
    ("schema=", "schema must be a plain SQL name"),
    ("command_timeout=0", "command_timeout must be a number of seconds above 0, got '0'"),
    ("command_timeout=soon", "command_timeout must be a number of seconds above 0, got 'soon'"),
])  # fmt: skip
async def test_bad_url_options(query: str, complaint: str) -> None:
    with pytest.raises(StorageError, match=complaint):
        await open_storage(f"postgresql://postgres@127.0.0.1/test?{query}")


async def test_nodes_starting_together_migrate_once(schema: tuple[str, str, asyncpg.Connection]) -> None:
    url, name, admin = schema
    stores: list[Storage] = list(await asyncio.gather(*(open_storage(url) for _ in range(4))))
    try:
        rows = await admin.fetch(f'SELECT version, name FROM "{name}".schema_migrations ORDER BY version')
        assert [r["name"] for r in rows] == migration_names()
        assert [r["version"] for r in rows] == [int(n.split("_")[0]) for n in migration_names()]
        # Every node works on the one schema.
        await stores[0].kv.set("example.org", "alice", "vcard", b"card")
        assert [await s.kv.get("example.org", "alice", "vcard") for s in stores] == [b"card"] * 4
    finally:
        for store in stores:
            await store.close()


async def test_pool_options_and_driver_options(schema: tuple[str, str, asyncpg.Connection]) -> None:
    url, name, admin = schema
    # Options the backend does not know go to the driver (here a server setting).
    store = await open_storage(with_query(url, pool_min_size="3", pool_max_size="3", application_name=name))
    try:
        await store.accounts.list("example.org")
        connections = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name=$1", name)
        assert connections == 3
    finally:
        await store.close()


async def test_archive_indexes(schema: tuple[str, str, asyncpg.Connection]) -> None:
    url, name, admin = schema
    store = await open_storage(url)
    await store.close()
    rows = await admin.fetch("SELECT indexdef FROM pg_indexes WHERE schemaname=$1 AND tablename='archive'", name)
    definitions = {r["indexdef"].partition(" USING btree ")[2] for r in rows}
    assert {
        "(host, username, store, seq, \"timestamp\")", "(host, username, store, with_jid, seq, \"timestamp\")",
        "(host, username, store, \"timestamp\", seq)", "(id)", "(seq)",
        "(host, username, store, with_resource, seq) WHERE (with_resource <> ''::text)",
        "(host, username, store, seq) WHERE (with_resource IS NULL)",
    } <= definitions  # fmt: skip


async def test_server_keeps_data_across_restart(tmp_path: Path) -> None:
    async with postgres_schema() as (url, _, _):
        async with running(tmp_path, storage={"url": url}) as server:
            assert server.config.storage_url == url
            await add_user(server, "alice")
            client = await connect(server, "alice@localhost/phone")
            await client.send(f"<iq type='set' id='v1'>{CARD}</iq>")
            (reply,) = await client.expect()
            assert reply.get("type") == "result"
        async with running(tmp_path, storage={"url": url}) as server:
            assert await server.storage.accounts.list("localhost") == ["alice"]
            client = await connect(server, "alice@localhost/laptop")
            await client.send(f"<iq type='get' id='v2'><vCard xmlns='{ns.VCARD}'/></iq>")
            (reply,) = await client.expect()
            assert reply.get("type") == "result"
            card = reply.find(f"{{{ns.VCARD}}}vCard")
            assert card is not None
            assert card.findtext(f"{{{ns.VCARD}}}FN") == "Alice Liddell"
            assert card.findtext(f"{{{ns.VCARD}}}NICKNAME") == "alice"


async def test_driver_failures_are_storage_errors(schema: tuple[str, str, asyncpg.Connection]) -> None:
    url, _, _ = schema
    store = await open_storage(url)
    await store.close()
    with pytest.raises(StorageError, match=r"^PostgreSQL: "):
        await store.kv.get("example.org", "alice", "vcard")
    with pytest.raises(StorageError, match=r"^PostgreSQL: "):
        await store.accounts.delete("example.org", "alice")


async def test_archive_item_committed_late_is_not_skipped(schema: tuple[str, str, asyncpg.Connection]) -> None:
    """An append that drew its seq but has not committed yet must not let a later append become
    visible first: a reader paging "after" the later one would skip it for good. The two appends
    come from two nodes on the one database."""
    url, name, admin = schema
    node = await open_storage(with_query(url, application_name=name))
    other = await open_storage(url)
    try:
        # A trigger holds the appends of 'slow@x' open after their row, and seq, were made.
        await admin.execute(
            f'CREATE FUNCTION "{name}".hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
            "IF NEW.with_jid = 'slow@x' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$")
        await admin.execute(f'CREATE TRIGGER hold BEFORE INSERT ON "{name}".archive '
                            f'FOR EACH ROW EXECUTE FUNCTION "{name}".hold()')
        first = await node.archive.append("example.org", "alice", "mam", 1.0, "bob@x", b"first")
        slow = asyncio.ensure_future(node.archive.append("example.org", "alice", "mam", 2.0, "slow@x", b"slow"))
        # PostgreSQL tells no one that a backend started waiting; pg_stat_activity shows it.
        async with asyncio.timeout(60):
            while not await admin.fetchval("SELECT count(*) FROM pg_stat_activity "  # noqa: ASYNC110
                                           "WHERE wait_event='PgSleep' AND application_name=$1", name):
                await asyncio.sleep(0.01)
        fast = await other.archive.append("example.org", "alice", "mam", 3.0, "bob@x", b"fast")
        seen = [item.id for item in (await other.archive.query("example.org", "alice", "mam", after=first)).items]
        held = await slow
        seen += [item.id for item in (await other.archive.query("example.org", "alice", "mam", after=seen[-1])).items]
        assert seen == [held, fast]
    finally:
        await node.close()
        await other.close()


async def test_appends_waiting_together_are_one_statement_in_order(schema: tuple[str, str, asyncpg.Connection]) -> None:
    """Appends to several archives issued while none is written yet go out in one statement (one
    transaction: their rows share xmin), each archive's items in the order they were issued, a
    seq each in that order; a row the database refuses leaves the others their own outcome."""
    url, name, admin = schema
    store = await open_storage(url)
    try:
        users = ["alice", "bob", "carol", "dave", "erin"]
        ids = await asyncio.gather(*(store.archive.append("example.org", users[i % 5], "mam", float(i), "x@y",
                                                          b"%d" % i) for i in range(30)))
        rows = await admin.fetch(f'SELECT id, username, payload, xmin::text AS xmin FROM "{name}".archive ORDER BY seq')
        assert [r["id"] for r in rows] == ids
        assert len({r["xmin"] for r in rows}) == 1
        for user in users:
            page = await store.archive.query("example.org", user, "mam")
            assert [item.payload for item in page.items] == [b"%d" % i for i in range(30) if users[i % 5] == user]
        bad = store.archive.append("example.org", "bob", "mam", 0.0, "x@y", b"again", item_id=ids[0])
        results = await asyncio.gather(*(store.archive.append("example.org", user, "mam", 1.0, "x@y", b"late")
                                         for user in users[:2]), bad, return_exceptions=True)
        assert isinstance(results[2], StorageError) and all(isinstance(r, str) for r in results[:2])
        assert await store.archive.count("example.org", "alice", "mam") == 7
        assert await store.archive.count("example.org", "bob", "mam") == 7
    finally:
        await store.close()


async def test_nodes_appending_to_the_same_archives_in_any_order_all_succeed(
        schema: tuple[str, str, asyncpg.Connection]) -> None:
    """Two nodes write statements that lock several of the same archives at once: they take the
    locks in one order, so neither waits on the other for good, and every append is stored."""
    url, _, _ = schema
    nodes = [await open_storage(url), await open_storage(url)]
    try:
        users = [f"user{i}" for i in range(6)]

        async def writer(node: int, turn: int) -> list[str]:
            order = users if (node + turn) % 2 else users[::-1]
            return list(await asyncio.gather(*(nodes[node].archive.append("example.org", user, "mam", 1.0, "x@y",
                                                                          b"%d:%d" % (node, turn)) for user in order)))

        written = await asyncio.gather(*(writer(node, turn) for turn in range(20) for node in (0, 1)))
        assert sum(map(len, written)) == 2 * 20 * len(users)
        for user in users:
            assert await nodes[0].archive.count("example.org", user, "mam") == 2 * 20
    finally:
        for node in nodes:
            await node.close()


async def _waiting_on_a_lock(admin: asyncpg.Connection, application: str, count: int) -> None:
    """Until ``count`` backends of ``application`` wait for an advisory lock (PostgreSQL tells no
    one; pg_stat_activity shows it)."""
    async with asyncio.timeout(60):
        while await admin.fetchval("SELECT count(*) FROM pg_stat_activity "  # noqa: ASYNC110
                                   "WHERE wait_event='advisory' AND application_name=$1", application) < count:
            await asyncio.sleep(0.01)


async def test_writes_racing_an_account_deletion_from_other_nodes_leave_nothing(
        schema: tuple[str, str, asyncpg.Connection]) -> None:
    """Another node's write for the account that began before its deletion commits first and is
    deleted with the rest; one that comes while the deletion runs waits for it and is refused.
    Neither is left for whoever registers the name next."""
    url, name, admin = schema
    node = await open_storage(with_query(url, application_name=name))
    other = await open_storage(with_query(url, application_name=name))
    writer = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": f'"{name}"'})
    try:
        await node.accounts.create("example.org", "alice", derive_credentials("x"))
        began = writer.transaction()
        await began.start()
        await writer.execute("INSERT INTO kv VALUES ('example.org', 'alice', 'vcard', 'card')")
        deletion = asyncio.ensure_future(node.accounts.delete("example.org", "alice"))
        await _waiting_on_a_lock(admin, name, 1)
        late = asyncio.ensure_future(other.archive.append("example.org", "alice", "mam", 1.0, "bob@x", b"late"))
        await _waiting_on_a_lock(admin, name, 2)
        await began.commit()
        assert await deletion is True
        with pytest.raises(AccountGone, match=r"alice@example\.org is deleted"):
            await late
        await node.accounts.create("example.org", "alice", derive_credentials("y"))
        assert await node.kv.get("example.org", "alice", "vcard") is None
        assert await node.archive.count("example.org", "alice", "mam") == 0
    finally:
        await writer.close()
        await node.close()
        await other.close()


async def test_a_deleted_account_is_refused_for_a_while_and_then_forgotten(
        schema: tuple[str, str, asyncpg.Connection]) -> None:
    """The entry of a deleted account counts for DELETED_FOR seconds, and the next deletion or
    registration removes it once that is past: no name is kept long after its account."""
    url, name, admin = schema
    store = await open_storage(url)
    try:
        for user in ("alice", "bob"):
            await store.accounts.create("example.org", user, derive_credentials("x"))
            await store.accounts.delete("example.org", user)
        until = await admin.fetchval(f'SELECT until FROM "{name}".deleted_accounts WHERE username=$1', "alice")
        assert until == pytest.approx(time.time() + DELETED_FOR, abs=60)
        await admin.execute(f'UPDATE "{name}".deleted_accounts SET until = until - $1 WHERE username=$2',
                            DELETED_FOR, "alice")
        await store.kv.set("example.org", "alice", "vcard", b"card")
        with pytest.raises(AccountGone):
            await store.kv.set("example.org", "bob", "vcard", b"card")
        await store.accounts.create("example.org", "carol", derive_credentials("x"))
        assert [r[0] for r in await admin.fetch(f'SELECT username FROM "{name}".deleted_accounts')] == ["bob"]
    finally:
        await store.close()


async def test_the_pool_takes_up_new_connections_once_the_server_ends_its_own(
        schema: tuple[str, str, asyncpg.Connection]) -> None:
    """PostgreSQL ends the pool's connections (a restart, a failover, an administrator) while
    appends are under way: each append is either stored and told so, or told it failed and not
    stored, the kept counts agree with the items, and each ended connection fails at most the one
    operation that finds it so: the next ones get new connections."""
    url, name, admin = schema
    store = await open_storage(with_query(url, application_name=name, pool_min_size="4", pool_max_size="4"))
    archives = [("example.org", f"user{n}", box) for n in range(3) for box in ("mam", "offline")]
    try:
        await store.kv.set("example.org", "alice", "vcard", b"card")
        issued = [store.archive.append_soon(*archives[i % len(archives)], 1.0, "x@y", b"%d" % i,
                                            limit=100 if i % 4 == 1 else None) for i in range(60)]
        await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name=$1", name)
        outcomes = await asyncio.gather(*issued, return_exceptions=True)
        assert all(isinstance(outcome, str | StorageError) for outcome in outcomes), outcomes
        stored = []
        for archive in archives:
            page = await store.archive.query(*archive)
            assert await store.archive.count(*archive) == len(page.items)
            stored += [item.id for item in page.items]
        assert sorted(stored) == sorted(outcome for outcome in outcomes if isinstance(outcome, str))
        await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name=$1", name)
        found: list[bytes | None] = []
        for _ in range(8):
            try:
                found.append(await store.kv.get("example.org", "alice", "vcard"))
            except StorageError:
                found.append(None)
        assert found[4:] == [b"card"] * 4, found
    finally:
        await store.close()


async def test_an_operation_held_up_by_the_server_fails_within_the_command_timeout(
        schema: tuple[str, str, asyncpg.Connection]) -> None:
    """A connection that goes silent without closing (here: the statements wait for a lock another
    connection holds) fails each operation after command_timeout with a StorageError, appends
    included, rather than holding up the writer and its callers; nothing is half-written, and once
    the server answers again the same operations succeed."""
    url, name, _admin = schema
    store = await open_storage(with_query(url, command_timeout="0.5"))
    archive = ("example.org", "alice", "mam")
    blocker = await asyncpg.connect(POSTGRES_URL, timeout=10)
    try:
        await store.kv.set("example.org", "alice", "vcard", b"old")
        async with blocker.transaction():
            await blocker.execute(f'LOCK TABLE "{name}".kv, "{name}".archive IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(StorageError):
                await store.kv.set("example.org", "alice", "vcard", b"new")
            held = await asyncio.gather(*(store.archive.append(*archive, 1.0, "bob@example.org", b"%d" % n)
                                          for n in range(3)), return_exceptions=True)
            assert all(isinstance(outcome, StorageError) for outcome in held), held
        await store.kv.set("example.org", "alice", "vcard", b"new")
        assert await store.kv.get("example.org", "alice", "vcard") == b"new"
        stored = await asyncio.gather(*(store.archive.append(*archive, 1.0, "bob@example.org", b"%d" % n)
                                        for n in range(3)))
        page = await store.archive.query(*archive)
        assert [item.id for item in page.items] == stored
    finally:
        await blocker.close()
        await store.close()
