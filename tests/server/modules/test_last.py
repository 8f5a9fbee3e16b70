"""XEP-0012 Last Activity: the server answers for its accounts (§5) and for itself (§6)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules import last as last_module
from schnack.server.modules.last import BEGAN, END_ATTEMPTS, STORE, Ended, LastActivity
from schnack.xmpp import ns
from schnack.xmpp.xml import serialize

from ...harness import Client, running
from ..storage.conftest import postgres_schema, with_query, write_locked
from .contacts import presence
from .messaging import condition, login
from .test_disco import ask, disco, info_of
from .test_presence import online
from .test_sm import SM, authenticated, enabled, on_end, options, resume, wait

QUERY = f"{{{ns.LAST}}}query"
# Long enough to show in whole seconds.
WAIT = 1.2


async def gone(server: Server, client: Client) -> None:
    """``client`` closes its stream, and its session's end is recorded (in the background)."""
    await client.close()
    module = server.modules[LastActivity.name]
    assert isinstance(module, LastActivity)
    await module.settled()


async def last(client: Client, to: str | None) -> Element:
    """Ask ``to`` (None: no 'to', the account itself) for its last activity; the reply."""
    client.take()
    address = f" to='{to}'" if to else ""
    await client.send(f"<iq type='get' id='last'{address}><query xmlns='{ns.LAST}'/></iq>")
    (reply,) = [el for el in await client.expect() if el.get("id") == "last"]
    return reply


def seconds(reply: Element) -> int:
    assert reply.get("type") == "result", serialize(reply)
    query = reply.find(QUERY)
    assert query is not None
    return int(query.get("seconds", ""))


def status(reply: Element) -> str | None:
    query = reply.find(QUERY)
    assert query is not None
    return query.text


async def follower(server: Server, owner: Client, jid: str) -> Client:
    """``jid`` online and subscribed to ``owner``'s presence (``from`` on the owner's side)."""
    client = await online(server, jid)
    await client.send(presence("subscribe", owner.jid.partition("/")[0]))
    await owner.send(presence("subscribed", client.jid.partition("/")[0]))
    client.take()
    owner.take()
    return client


async def test_a_contact_learns_when_the_last_session_ended_and_its_status(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await follower(server, alice, "bob@localhost/desk")
    # §5: an account with an available resource is active now.
    assert seconds(await last(bob, "alice@localhost")) == 0
    await alice.send(presence("unavailable", inner="<status>gone fishing</status>"))
    await gone(server, alice)
    await asyncio.sleep(WAIT)
    reply = await last(bob, "alice@localhost")
    assert seconds(reply) >= 1
    assert status(reply) == "gone fishing"


async def test_a_session_that_just_goes_leaves_no_status(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await follower(server, alice, "bob@localhost/desk")
    await alice.send(presence("unavailable", inner="<status>back soon</status>"))
    await alice.send(presence())  # available again: that status is over
    await gone(server, alice)
    reply = await last(bob, "alice@localhost")
    assert seconds(reply) >= 0 and status(reply) is None


async def test_a_hibernating_session_counts_from_when_its_connection_went(server: Server) -> None:
    """XEP-0198 §5: a phone off the network keeps its session waiting for resumption; it is not
    online for that, and becomes so again once it resumes."""
    alice = await online(server, "alice@localhost/phone")
    bob = await follower(server, alice, "bob@localhost/desk")
    await away_until_resumed(server, alice, bob)


async def away_until_resumed(server: Server, phone: Client, asker: Client) -> None:
    """``phone`` (on ``server``) enables resumption and its connection goes: ``asker`` learns it
    has been away since then; once it resumes, that it is online."""
    account, _, _ = phone.jid.partition("/")
    previd = (await enabled(phone)).id
    assert previd is not None
    await phone.close()
    await asyncio.sleep(WAIT)
    reply = await last(asker, account)
    assert seconds(reply) >= 1 and status(reply) is None
    back = await authenticated(server, account.partition("@")[0])
    back.take()
    await back.send(resume(previd, 0))
    assert seconds(await last(asker, account)) == 0


async def test_a_session_that_expires_from_hibernation_ended_when_its_connection_went(tmp_path: Path) -> None:
    """The recorded end is when the phone went away, not when the server gave up waiting for it;
    a number is taken for given up no sooner than before (docs/phone.md): that counts from the
    session's end."""
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await online(server, "alice@localhost/phone")
        assert (await enabled(alice)).id is not None
        ended = on_end(server, alice)
        went = time.time()
        await alice.close()
        hibernating = time.time()
        await wait(ended)
        module = server.modules[LastActivity.name]
        assert isinstance(module, LastActivity)
        await module.settled()
        raw = await server.storage.kv.get("localhost", "alice", STORE)
        assert raw is not None
        assert went <= json.loads(raw)["ended"] <= hibernating
        account = await server.storage.accounts.get("localhost", "alice")
        assert account is not None
        assert await module.idle_since(account) > hibernating


@contextmanager
def logged(about: str, first: asyncio.Event) -> Iterator[list[logging.LogRecord]]:
    """The records of warnings and errors of the module that mention ``about``, as they come;
    ``first`` is set at the first."""
    records: list[logging.LogRecord] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if about in record.getMessage():
                records.append(record)
                first.set()

    logger = logging.getLogger(LastActivity.__module__)
    handler = Handler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


async def ends_behind(server: Server, lock: AbstractAsyncContextManager[object], about: str) -> list[logging.LogRecord]:
    """Alice's session ends while ``lock`` is held, until the first warning or error of the
    module that mentions ``about``; then her end is stored, and the first record was a warning
    that it is tried again. The records."""
    module = server.modules[LastActivity.name]
    assert isinstance(module, LastActivity)
    alice = await online(server, "alice@localhost/phone")
    await module.settled()
    failed = asyncio.Event()
    with logged(about, failed) as records:
        async with lock:
            went = time.time()
            await alice.close()
            async with asyncio.timeout(60):
                await failed.wait()
        await module.settled()
    raw = await server.storage.kv.get("localhost", "alice", STORE)
    assert raw is not None, [r.getMessage() for r in records]
    assert went <= Ended.decode(raw).when <= records[0].created
    assert records[0].levelno == logging.WARNING, records[0].getMessage()
    return records


async def test_an_end_that_storage_fails_to_write_for_a_moment_is_written_again(tmp_path: Path) -> None:
    """The write of a session's end that fails (PostgreSQL holds it up past command_timeout,
    here behind a lock another connection holds) is made again a little later, and says so in
    the log: the account would otherwise look idle since its end before."""
    async with (postgres_schema() as (url, schema, admin),
                running(tmp_path, storage={"url": with_query(url, command_timeout="1")}) as server):
        await gone(server, await online(server, "alice@localhost/phone"))

        @asynccontextmanager
        async def kv_locked() -> AsyncIterator[None]:
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{schema}".kv IN EXCLUSIVE MODE')
                yield

        await ends_behind(server, kv_locked(), "alice@localhost")


async def test_an_end_that_sqlite_refuses_for_a_moment_is_written_again(tmp_path: Path) -> None:
    """As with PostgreSQL: SQLite gives up on its write lock, held by another connection, after
    its busy timeout ('database is locked'), and the write is made again once the lock is gone
    (every record counts: a failure that is not a StorageError is logged without the account)."""
    async with running(tmp_path) as server:
        @asynccontextmanager
        async def locked() -> AsyncIterator[None]:
            with write_locked(server.config.storage_url.removeprefix("sqlite://")):
                yield

        records = await ends_behind(server, locked(), "")
        assert "database is locked" in records[0].getMessage()


async def test_a_server_that_stops_makes_the_attempts_left_at_once_and_says_it_gave_up(tmp_path: Path) -> None:
    """The attempts are bounded: a server that stops while storage still refuses makes the
    attempts left without waiting between them, and the log says the end was given up."""
    async with (postgres_schema() as (url, schema, admin),
                running(tmp_path, storage={"url": with_query(url, command_timeout="1")}) as server):
        alice = await online(server, "alice@localhost/phone")
        module = server.modules[LastActivity.name]
        assert isinstance(module, LastActivity)
        await module.settled()
        failed = asyncio.Event()
        with logged("alice@localhost", failed) as records:
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{schema}".kv IN EXCLUSIVE MODE')
                await alice.close()
                async with asyncio.timeout(30):
                    await failed.wait()
                # As Server.stop stops it, once the sessions ended.
                await module.stop()
    assert [r.levelno for r in records] == [logging.WARNING] * (END_ATTEMPTS - 1) + [logging.ERROR]
    assert "given up" in records[-1].getMessage()


async def began(server: Server, user: str) -> float:
    """When ``user``'s latest session was recorded in use (BEGAN), once what is on its way is stored."""
    module = server.modules[LastActivity.name]
    assert isinstance(module, LastActivity)
    await module.settled()
    raw = await server.storage.kv.get("localhost", user, BEGAN)
    assert raw is not None
    return float(raw)


async def resumed(server: Server, phone: Client, previd: str | None) -> None:
    """``phone`` (stream management enabled, its session ``previd``) loses its connection and
    resumes its session."""
    assert previd is not None
    await phone.close()
    back = await authenticated(server, phone.jid.partition("@")[0])
    back.take()
    await back.send(resume(previd, 0))
    assert [el.tag for el in back.take()][:1] == [f"{{{SM}}}resumed"]


async def test_a_resumed_session_is_recorded_in_use(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """XEP-0198 §5: a phone kept alive by resumptions binds once and resumes for weeks; should
    its server be killed (no end recorded), its account must look in use until the last
    resumption, not idle since the bind, or the phone module could give its number away."""
    monkeypatch.setattr(last_module, "BEGAN_EVERY", 0.0)
    alice = await online(server, "alice@localhost/phone")
    previd = (await enabled(alice)).id
    bound = await began(server, "alice")
    before = time.time()
    await resumed(server, alice, previd)
    assert bound < before <= await began(server, "alice")


async def test_resumptions_are_recorded_at_most_once_in_a_while(server: Server) -> None:
    """Resuming is kept cheap: an account's use is written at most once per BEGAN_EVERY, here
    not again so soon after the bind."""
    alice = await online(server, "alice@localhost/phone")
    previd = (await enabled(alice)).id
    bound = await began(server, "alice")
    await resumed(server, alice, previd)
    assert await began(server, "alice") == bound


async def test_strangers_and_contacts_without_the_users_presence_are_forbidden(server: Server) -> None:
    """§4, RFC 6121 §2.1.2.5: only a subscription ``from`` or ``both`` lets a contact see it."""
    alice = await online(server, "alice@localhost/phone")
    carol = await online(server, "carol@localhost/desk")
    # Alice sees Carol's presence, not the other way round.
    await alice.send(presence("subscribe", "carol@localhost"))
    await carol.send(presence("subscribed", "alice@localhost"))
    assert seconds(await last(alice, "carol@localhost")) == 0
    dave = await online(server, "dave@localhost/desk")
    await gone(server, alice)
    for asker in (carol, dave):
        assert condition(await last(asker, "alice@localhost")) == "forbidden"


async def test_the_account_itself_learns_when_its_last_session_ended(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    await gone(server, phone)
    await asyncio.sleep(WAIT)
    # A new session that sent no presence yet is not available: the last end is the answer.
    laptop = await login(server, "alice@localhost/laptop")
    for to in ("alice@localhost", None):
        assert seconds(await last(laptop, to)) >= 1


async def test_only_the_end_of_the_last_session_is_recorded(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    desk = await online(server, "alice@localhost/desk")
    bob = await follower(server, phone, "bob@localhost/desk")
    await gone(server, phone)
    assert await server.storage.kv.get("localhost", "alice", STORE) is None
    assert seconds(await last(bob, "alice@localhost")) == 0
    await gone(server, desk)
    assert await server.storage.kv.get("localhost", "alice", STORE) is not None


async def test_a_session_replaced_on_its_resource_records_no_end(server: Server) -> None:
    """RFC 6120 §7.7.2.2: a new login on the resource replaces the session; the account never went."""
    await online(server, "alice@localhost/phone")
    await online(server, "alice@localhost/phone")
    module = server.modules[LastActivity.name]
    assert isinstance(module, LastActivity)
    await module.settled()
    assert await server.storage.kv.get("localhost", "alice", STORE) is None


async def test_the_session_of_a_deleted_account_leaves_nothing_for_the_next_one_of_its_name(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    assert await server.delete_account("localhost", "alice")
    server.end_account_sessions("localhost", "alice")
    await gone(server, alice)
    again = await login(server, "alice@localhost/phone")
    assert await server.storage.kv.get("localhost", "alice", STORE) is None
    assert condition(await last(again, None)) == "item-not-found"


async def test_an_account_that_does_not_exist_or_never_ended_a_session(server: Server) -> None:
    """RFC 6121 §8.5.1: service-unavailable for no account; item-not-found for nothing recorded."""
    alice = await login(server, "alice@localhost/phone")
    assert condition(await last(alice, "nobody@localhost")) == "service-unavailable"
    assert condition(await last(alice, "alice@localhost")) == "item-not-found"


async def test_the_domain_answers_with_its_uptime(server: Server) -> None:
    """§6: the seconds since the server started."""
    await asyncio.sleep(WAIT)
    alice = await login(server, "alice@localhost/phone")
    assert seconds(await last(alice, "localhost")) >= 1


async def test_a_query_to_a_full_jid_goes_to_the_client(server: Server) -> None:
    """§4: the client answers for itself (its idle time); the server does not."""
    alice = await online(server, "alice@localhost/phone")
    bob = await follower(server, alice, "bob@localhost/desk")
    alice.take()
    await bob.send(f"<iq type='get' id='idle' to='alice@localhost/phone'><query xmlns='{ns.LAST}'/></iq>")
    (got,) = await alice.expect()
    assert got.get("type") == "get" and got.get("from") == "bob@localhost/desk" and got.find(QUERY) is not None
    assert not [el for el in bob.take() if el.get("id") == "idle"]


async def test_the_end_survives_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        alice = await online(server, "alice@localhost/phone")
        await follower(server, alice, "bob@localhost/desk")
        await alice.send(presence("unavailable", inner="<status>on holiday</status>"))
        await gone(server, alice)
    await asyncio.sleep(WAIT)
    async with running(tmp_path) as server:
        bob = await login(server, "bob@localhost/desk")
        reply = await last(bob, "alice@localhost")
        assert seconds(reply) >= 1 and status(reply) == "on holiday"


async def test_disco_shows_last_activity_for_the_domain_and_accounts(server: Server) -> None:
    assert ns.LAST in info_of(await ask(server, disco(ns.DISCO_INFO))).features
    assert ns.LAST in info_of(await ask(server, disco(ns.DISCO_INFO, "alice@localhost"))).features
