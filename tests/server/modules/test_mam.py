"""XEP-0313 message archive: what is archived, stanza-ids, queries, paging, filters, preferences,
metadata, retention and errors, on in-memory streams (XML in, XML out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules.mam import SCAN_MOST, STORE, Mam, now
from schnack.server.storage import RosterItem, open_storage
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm
from schnack.xmpp.payloads.forward import format_stamp
from schnack.xmpp.payloads.mam import Fin, Metadata, Prefs, Result
from schnack.xmpp.payloads.rsm import ResultSet
from schnack.xmpp.xml import serialize

from ...harness import Client, add_user, running, xml
from ..storage.conftest import storage_url  # noqa: F401 (a fixture)
from .messaging import FALLBACK, OMEMO, announce, body, chat, condition, login, unresourced

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
XDATA = "jabber:x:data"
SID = f"{{{ns.SID}}}stanza-id"
RESULT = f"{{{MAM}}}result"
FIN = f"{{{MAM}}}fin"
H = "localhost"


# The default modules; plaintext bodies keep the examples short.
MODULES: dict[str, Any] = {"e2e": {"policy": "optional"}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, modules=MODULES) as srv:
        yield srv


async def online(server: Server, jid: str) -> Client:
    client = await login(server, jid)
    announce(client)
    return client


async def archived(server: Server, user: str) -> list[tuple[str, str, Element]]:
    """(id, with, message) of every message in ``user``'s archive, oldest first."""
    page = await server.storage.archive.query(H, user, STORE)
    return [(item.id, item.with_jid, parse_frame(item.payload, 10**7)) for item in page.items]


def stanza_ids(el: Element) -> list[tuple[str | None, str | None]]:
    return [(sid.get("by"), sid.get("id")) for sid in el.findall(SID)]


def form(**fields: str | list[str]) -> str:
    """A MAM query form; field names with '_' stand for '-'."""
    parts = [f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"]
    for name, value in fields.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"<field var='{name.replace('_', '-')}'>{''.join(f'<value>{v}</value>' for v in values)}</field>")
    return f"<x xmlns='{XDATA}' type='submit'>{''.join(parts)}</x>"


def rsm(max: int | None = None, after: str | None = None, before: str | None = None) -> str:
    parts = [f"<max>{max}</max>" if max is not None else ""]
    if after is not None:
        parts.append(f"<after>{after}</after>")
    if before is not None:
        parts.append(f"<before>{before}</before>" if before else "<before/>")
    return f"<set xmlns='{RSM}'>{''.join(parts)}</set>"


def _only(el: Element, tag: str) -> Element:
    (found,) = el.findall(tag)
    return found


class Answer:
    """The results and the fin of one archive query."""

    def __init__(self, results: list[Element], iq: Element) -> None:
        self.wrappers = results
        self.iq = iq
        self.results = [Result.from_xml(_only(el, RESULT)) for el in results]
        fin = iq.find(FIN)
        self.fin = Fin.from_xml(fin) if fin is not None else None

    @property
    def ids(self) -> list[str]:
        return [result.id for result in self.results]

    @property
    def bodies(self) -> list[str | None]:
        return [body(result.forwarded.stanza) for result in self.results]

    @property
    def complete(self) -> bool:
        assert self.fin is not None, xml(self.iq)
        return self.fin.complete

    @property
    def rsm(self) -> ResultSet:
        assert self.fin is not None, xml(self.iq)
        return self.fin.rsm


async def ask(client: Client, payload: str = "", *, queryid: str | None = "q1", to: str | None = None,
              attrs: str = "") -> Answer:
    """Send a MAM query; collect the result messages up to the IQ answer."""
    address = f" to='{to}'" if to else ""
    qid = f" queryid='{queryid}'" if queryid else ""
    await client.send(f"<iq type='set' id='mam1'{address}><query xmlns='{MAM}'{qid}{attrs}>{payload}</query></iq>")
    got = client.take()
    assert got and got[-1].tag == f"{{{ns.CLIENT}}}iq", [xml(el) for el in got]
    *results, iq = got
    assert iq.get("id") == "mam1"
    return Answer(results, iq)


async def iq(client: Client, body_xml: str, kind: str = "get", to: str | None = None) -> Element:
    address = f" to='{to}'" if to else ""
    await client.send(f"<iq type='{kind}' id='i1'{address}>{body_xml}</iq>")
    (reply,) = client.take()
    return reply


async def conversation(server: Server, n: int) -> tuple[Client, Client, list[str]]:
    """Alice sends bob ``n`` messages "m0", "m1", ...; returns both and bob's archive ids."""
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    for i in range(n):
        await alice.send(chat("bob@localhost", f"m{i}", id=f"id{i}"))
    bob.take()
    return alice, bob, [item_id for item_id, _, _ in await archived(server, "bob")]


async def fill(server: Server, user: str, entries: list[tuple[float, str]]) -> list[str]:
    """Archive messages for ``user`` directly: (timestamp, contact) each, bodies "e0", "e1", ..."""
    ids = []
    for i, (stamp, contact) in enumerate(entries):
        message = f"<message xmlns='jabber:client' from='{contact}/r' to='{user}@{H}' type='chat'><body>e{i}</body></message>"
        ids.append(await server.storage.archive.append(H, user, STORE, stamp, contact, message.encode(), resource="r"))
    return ids



# --- what is archived, and the stanza-id --------------------------------------------------------


async def test_message_archived_for_both_and_stamped_for_the_recipient(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost", "hello", id="h1"))
    (got,) = bob.take()
    assert alice.take() == []
    [(bob_id, bob_with, bob_copy)] = await archived(server, "bob")
    [(alice_id, alice_with, alice_copy)] = await archived(server, "alice")
    # §3.5: the recipient learns where the message is stored; the contact never sees the sender's id.
    assert stanza_ids(got) == [("bob@localhost", bob_id)]
    assert alice_id != bob_id
    assert (bob_with, alice_with) == ("alice@localhost", "bob@localhost")
    for copy in (bob_copy, alice_copy):
        assert body(copy) == "hello" and copy.get("id") == "h1"
        assert copy.get("from") == "alice@localhost/phone" and copy.get("to") == "bob@localhost"
        assert copy.findall(SID) == []


async def test_a_message_counts_as_handled_once_both_copies_are_committed(server: Server, tmp_path: Path) -> None:
    """The copies are committed while the message goes on, not before: whenever alice's stream
    counts a message as handled (what an <r/> would be answered with), both archives hold it, as
    another connection to the database reads them."""
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    reader = await open_storage(f"sqlite:///{tmp_path / 'data' / 'schnack.db'}")
    seen: list[tuple[int, int, int]] = []
    try:
        for n in range(20):
            await alice.send(chat("bob@localhost/laptop", f"hello {n}"), finished=False)
            handled = alice.stream.stanzas_handled
            seen.append((handled, await reader.archive.count(H, "alice", STORE),
                         await reader.archive.count(H, "bob", STORE)))
        await alice.stream.finished()
        assert alice.stream.stanzas_handled == 20
    finally:
        await reader.close()
    assert all(handled <= mine and handled <= theirs for handled, mine, theirs in seen), seen
    assert len(bob.take()) == 20
    sent = await archived(server, "alice")
    assert [body(copy) for _id, _with, copy in sent] == [f"hello {n}" for n in range(20)]
    assert [stanza_ids(copy) for _id, _with, copy in await archived(server, "bob")] == [[]] * 20


async def test_forged_stanza_ids_are_stripped(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    forged = (f"<stanza-id xmlns='{ns.SID}' by='bob@localhost' id='forged-1'/>"
              f"<stanza-id xmlns='{ns.SID}' by='BOB@LOCALHOST' id='forged-2'/>"
              f"<stanza-id xmlns='{ns.SID}' by='alice@localhost' id='forged-3'/>"
              f"<stanza-id xmlns='{ns.SID}' by='room@muc.example.org' id='theirs'/>")  # fmt: skip
    await alice.send(chat("bob@localhost", "trust me", extra=forged))
    (got,) = bob.take()
    [(bob_id, _, bob_copy)] = await archived(server, "bob")
    assert stanza_ids(got) == [("room@muc.example.org", "theirs"), ("bob@localhost", bob_id)]
    [(_, _, alice_copy)] = await archived(server, "alice")
    assert stanza_ids(alice_copy) == stanza_ids(bob_copy) == [("room@muc.example.org", "theirs")]
    # Stripped even when the message is not archived.
    state = f"<active xmlns='http://jabber.org/protocol/chatstates'/>{forged}"
    await alice.send(f"<message to='bob@localhost' type='chat'>{state}</message>")
    (got,) = bob.take()
    assert stanza_ids(got) == [("room@muc.example.org", "theirs")]


async def test_offline_message_is_archived_and_carries_its_stanza_id(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await add_user(server, "bob")
    await alice.send(chat("bob@localhost", "while you were out", id="o1"))
    [(bob_id, _, _)] = await archived(server, "bob")
    laptop = await login(server, "bob@localhost/laptop")
    session = announce(laptop)
    await server.hooks.fire_all("presence-initial", session)
    (got,) = laptop.take()
    assert body(got) == "while you were out"
    assert stanza_ids(got) == [("bob@localhost", bob_id)]
    # Offline delivery emptied the offline store; the archive keeps the message for other devices.
    phone = await online(server, "bob@localhost/phone")
    answer = await ask(phone)
    assert answer.ids == [bob_id] and answer.bodies == ["while you were out"]


async def test_a_message_refused_for_a_full_mailbox_is_in_no_archive(tmp_path: Path) -> None:
    """§6: the sender was told the message was not taken (the offline store is full), so neither
    archive keeps it, nor a second copy when the sender tries again."""
    async with running(tmp_path, modules={**MODULES, "offline": {"max_messages": 1}}) as server:
        alice = await online(server, "alice@localhost/phone")
        await add_user(server, "bob")
        await alice.send(chat("bob@localhost", "fits", id="m1"))
        alice.take()
        for attempt in range(2):
            await alice.send(chat("bob@localhost", "does not fit", id=f"m{attempt + 2}"))
            (error,) = alice.take()
            assert condition(error) == "service-unavailable"
        await server.router.withdrawn()
        assert [body(message) for _, _, message in await archived(server, "bob")] == ["fits"]
        assert [body(message) for _, _, message in await archived(server, "alice")] == ["fits"]


WITH_BODY = "<body>x</body>"
STATE = "<active xmlns='http://jabber.org/protocol/chatstates'/>"


@pytest.mark.parametrize(("kind", "payload", "kept"), [
    ("chat", WITH_BODY, True),
    ("normal", WITH_BODY, True),
    (None, WITH_BODY, True),
    ("chat", OMEMO, True),
    ("chat", f"{OMEMO}{FALLBACK}", True),
    ("chat", "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>eA==</payload></encrypted>", True),
    ("chat", "<openpgp xmlns='urn:xmpp:openpgp:0'>eA==</openpgp>", True),
    ("chat", "<x xmlns='jabber:x:encrypted'>eA==</x>", True),
    ("chat", "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>", True),
    ("chat", "<propose xmlns='urn:xmpp:jingle-message:0' id='c1'/>", True),
    ("normal", "<x xmlns='jabber:x:conference' jid='room@muc.example.org'/>", True),
    ("chat", "<reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>\U0001f44d</reaction></reactions>", True),
    ("chat", "<reactions xmlns='urn:xmpp:reactions:0' id='m1'/>", True),
    ("chat", "<retract xmlns='urn:xmpp:message-retract:1' id='m1'/>", True),
    ("chat", STATE, False),
    ("chat", "<received xmlns='urn:xmpp:receipts' id='m1'/>", False),
    ("chat", f"{STATE}<store xmlns='urn:xmpp:hints'/>", True),
    ("chat", f"{WITH_BODY}<no-store xmlns='urn:xmpp:hints'/>", False),
    ("chat", f"{WITH_BODY}<no-permanent-store xmlns='urn:xmpp:hints'/>", False),
    ("chat", f"{WITH_BODY}<store xmlns='urn:xmpp:hints'/><no-store xmlns='urn:xmpp:hints'/>", False),
    ("headline", WITH_BODY, False),
    ("error", WITH_BODY, False),
])  # fmt: skip
async def test_what_is_archived(server: Server, kind: str | None, payload: str, kept: bool) -> None:
    alice = await online(server, "alice@localhost/phone")
    await online(server, "bob@localhost/laptop")
    attrs = f" type='{kind}'" if kind else ""
    await alice.send(f"<message to='bob@localhost'{attrs}>{payload}</message>")
    assert len(await archived(server, "bob")) == int(kept)
    assert len(await archived(server, "alice")) == int(kept)


async def test_groupchat_to_a_user_is_not_archived(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await online(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost", "to a user", kind="groupchat"))
    assert condition(alice.take()[0]) == "service-unavailable"
    assert await archived(server, "bob") == [] and await archived(server, "alice") == []


async def test_no_archive_for_an_account_that_does_not_exist(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send(chat("ghost@localhost", "anyone?"))
    assert condition(alice.take()[0]) == "service-unavailable"
    assert await server.storage.archive.count(H, "ghost", STORE) == 0


async def test_directed_message_to_a_resource(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost/laptop", "just you"))
    (got,) = bob.take()
    [(bob_id, _, copy)] = await archived(server, "bob")
    assert stanza_ids(got) == [("bob@localhost", bob_id)]
    assert copy.get("to") == "bob@localhost/laptop"
    assert len(await archived(server, "alice")) == 1


@pytest.mark.parametrize("to", [None, "alice@localhost", "alice@localhost/laptop"])
async def test_message_to_own_account_archived_once(server: Server, to: str | None) -> None:
    phone = await online(server, "alice@localhost/phone")
    laptop = await online(server, "alice@localhost/laptop")
    await phone.send(chat(to, "note to self"))
    [(item_id, with_jid, copy)] = await archived(server, "alice")
    assert with_jid == "alice@localhost"
    assert copy.get("to") == (to or "alice@localhost")
    got = laptop.take()
    assert [stanza_ids(el) for el in got] == [[("alice@localhost", item_id)]]
    phone.take()
    # §4.1.1: 'with' set to the account itself finds what it sent itself.
    answer = await ask(phone, form(**{"with": "alice@localhost"}))
    assert answer.ids == [item_id]


async def test_server_message_to_a_user_is_archived(server: Server) -> None:
    bob = await online(server, "bob@localhost/laptop")
    await server.router.send(parse_frame(
        b"<message xmlns='jabber:client' from='localhost' to='bob@localhost'><body>maintenance at 5</body></message>",
        10**6,
    ))
    (got,) = bob.take()
    [(item_id, with_jid, _)] = await archived(server, "bob")
    assert with_jid == "localhost" and stanza_ids(got) == [("bob@localhost", item_id)]


# --- queries: results, paging, filters -----------------------------------------------------------


async def test_query_returns_forwarded_messages_and_fin(server: Server) -> None:
    before = datetime.now(UTC)
    alice, bob, ids = await conversation(server, 3)
    await bob.send(chat("alice@localhost", "reply", id="r1"))
    ids = [item_id for item_id, _, _ in await archived(server, "bob")]
    answer = await ask(bob)
    assert answer.ids == ids
    assert answer.bodies == ["m0", "m1", "m2", "reply"]
    for wrapper in answer.wrappers:
        # §4.2: results come from the archive (the account's bare JID) to the querying resource.
        assert wrapper.get("from") == "bob@localhost" and wrapper.get("to") == "bob@localhost/laptop"
    first, *_, last = answer.results
    assert first.queryid == "q1"
    assert first.forwarded.stanza.get("from") == "alice@localhost/phone"
    assert last.forwarded.stanza.get("to") == "alice@localhost"
    assert first.forwarded.stamp is not None and before <= first.forwarded.stamp <= datetime.now(UTC)
    assert answer.iq.get("type") == "result" and answer.iq.get("to") == "bob@localhost/laptop"
    assert answer.complete
    assert answer.rsm == ResultSet(first=ids[0], last=ids[-1])
    assert [body(el) for el in alice.take()] == ["reply"]  # and no results


async def test_query_without_queryid_and_to_own_bare_jid(server: Server) -> None:
    _, bob, ids = await conversation(server, 1)
    answer = await ask(bob, queryid=None, to="bob@localhost")
    assert answer.ids == ids and answer.results[0].queryid is None
    assert answer.iq.get("from") == "bob@localhost"


async def test_empty_archive(server: Server) -> None:
    bob = await online(server, "bob@localhost/laptop")
    answer = await ask(bob, rsm(max=10))
    assert answer.results == [] and answer.complete and answer.rsm == ResultSet()


async def test_paging_forwards(server: Server) -> None:
    _, bob, ids = await conversation(server, 10)
    pages: list[list[str]] = []
    completes = []
    after = None
    while True:
        answer = await ask(bob, rsm(max=4, after=after))
        pages.append(answer.ids)
        completes.append(answer.complete)
        if answer.complete:
            break
        after = answer.rsm.last
        assert after == answer.ids[-1] and answer.rsm.first == answer.ids[0]
    assert pages == [ids[0:4], ids[4:8], ids[8:10]]
    assert completes == [False, False, True]


async def test_paging_backwards_from_the_last_page(server: Server) -> None:
    _, bob, ids = await conversation(server, 10)
    answer = await ask(bob, rsm(max=4, before=""))
    # §4.3.3: the newest page, still in chronological order.
    assert answer.ids == ids[6:] and not answer.complete
    assert answer.bodies == ["m6", "m7", "m8", "m9"]
    answer = await ask(bob, rsm(max=4, before=answer.rsm.first))
    assert answer.ids == ids[2:6] and not answer.complete
    answer = await ask(bob, rsm(max=4, before=answer.rsm.first))
    assert answer.ids == ids[:2] and answer.complete


@pytest.mark.parametrize("before", ["<before>\n</before>", "<before> </before>", "<before>\n  \t</before>"])
async def test_a_before_of_white_space_asks_for_the_last_page(server: Server, before: str) -> None:
    """XEP-0059 §2.5: a client that indents its XML still asks for the last page; no id is
    white space."""
    _, bob, ids = await conversation(server, 5)
    answer = await ask(bob, f"<set xmlns='{RSM}'>\n  <max>2</max>\n  {before}\n</set>")
    assert answer.ids == ids[3:] and not answer.complete


async def test_an_after_of_white_space_is_a_bad_request(server: Server) -> None:
    """XEP-0059 §2.2: <after/> names an item; without one it means nothing, indented or not."""
    _, bob, _ = await conversation(server, 2)
    for after in ("<after/>", "<after>\n</after>"):
        answer = await ask(bob, f"<set xmlns='{RSM}'><max>2</max>{after}</set>")
        assert condition(answer.iq) == "bad-request" and answer.results == []


async def test_flip_page_reverses_the_order_only(server: Server) -> None:
    _, bob, ids = await conversation(server, 5)
    answer = await ask(bob, rsm(max=3, before="") + "<flip-page/>")
    assert answer.ids == [ids[4], ids[3], ids[2]]
    assert (answer.rsm.first, answer.rsm.last) == (ids[2], ids[4])
    assert not answer.complete


async def test_unknown_paging_id_is_item_not_found(server: Server) -> None:
    _, bob, ids = await conversation(server, 2)
    other = await online(server, "carol@localhost/x")
    carol_ids = await fill(server, "carol", [(1.0, "dave@localhost")])
    for payload in (rsm(after="nope"), rsm(before="nope"), rsm(after=carol_ids[0]),
                    form(after_id="nope"), form(before_id="nope"), form(ids=[ids[0], "nope"])):
        answer = await ask(bob, payload)
        assert condition(answer.iq) == "item-not-found", payload
        assert answer.results == []
    assert (await ask(other, rsm(after=ids[0]))).iq.get("type") == "error"


async def test_unknown_paging_id_is_item_not_found_in_a_time_window_without_messages(server: Server) -> None:
    # §4.3 and §4.1.3: the id is unknown, whatever the window holds.
    _, bob, _ = await conversation(server, 2)
    later = form(start="2099-01-01T00:00:00Z")
    for payload in (later + rsm(max=5, after="nope"), later + rsm(max=5, before="nope"),
                    form(start="2099-01-01T00:00:00Z", after_id="nope"),
                    form(end="2000-01-01T00:00:00Z", before_id="nope")):
        answer = await ask(bob, payload)
        assert condition(answer.iq) == "item-not-found", payload
        assert answer.results == []


async def test_filter_with_bare_and_full_jid(server: Server) -> None:
    await add_user(server, "bob")
    ids = await fill(server, "bob", [(100.0 + i, ("alice@localhost", "carol@localhost")[i % 2]) for i in range(6)])
    bob = await online(server, "bob@localhost/laptop")
    answer = await ask(bob, form(**{"with": "carol@localhost"}))
    assert answer.ids == ids[1::2] and answer.complete
    # A full JID matches only messages to or from that resource (§4.1.1).
    await add_user(server, "alice")
    await bob.send(chat("alice@localhost/tablet", "to the tablet"))
    assert bob.take() == []
    tablet_id = (await archived(server, "bob"))[-1][0]
    answer = await ask(bob, form(**{"with": "alice@localhost/tablet"}))
    assert answer.ids == [tablet_id] and answer.complete
    answer = await ask(bob, form(**{"with": "alice@localhost/r"}) + rsm(max=2))
    assert answer.ids == ids[0:4:2] and not answer.complete
    answer = await ask(bob, form(**{"with": "alice@localhost/r"}) + rsm(max=2, after=answer.rsm.last))
    assert answer.ids == [ids[4]] and answer.complete
    answer = await ask(bob, form(**{"with": "alice@localhost/r"}) + rsm(max=2, before=""))
    assert answer.ids == ids[2:6:2] and not answer.complete
    assert (await ask(bob, form(**{"with": "nobody@localhost/x"}))).ids == []


@pytest.mark.parametrize("kept", ["resources", "before resources were kept"])
async def test_filter_full_jid_reads_past_one_batch(server: Server, kept: str) -> None:
    # One resource's messages are found among many of the contact's, by their resource or, for
    # those archived before resources were kept, batch after batch.
    await add_user(server, "bob")
    ids = await fill(server, "bob", [(100.0 + i, "alice@localhost") for i in range(1200)])
    message = ("<message xmlns='jabber:client' from='alice@localhost/rare' to='bob@localhost' type='chat'>"
               "<body>rare</body></message>")  # fmt: skip
    rare = await server.storage.archive.append(H, "bob", STORE, 2000.0, "alice@localhost", message.encode(),
                                               resource="rare")
    if kept != "resources":
        unresourced(server)
    bob = await online(server, "bob@localhost/laptop")
    rare_form = form(**{"with": "alice@localhost/rare"})
    for paging in (rsm(max=5), rsm(max=5, before="")):
        answer = await ask(bob, rare_form + paging)
        assert answer.ids == [rare] and answer.bodies == ["rare"] and answer.complete
    answer = await ask(bob, rare_form + rsm(max=5, before=rare))
    assert answer.ids == [] and answer.complete
    answer = await ask(bob, form(**{"with": "alice@localhost/r"}) + rsm(max=3, before=ids[700]))
    assert answer.ids == ids[697:700] and not answer.complete
    # XEP-0059 §2.7: the number alone, of all the batches.
    answer = await ask(bob, rare_form + rsm(max=0))
    assert answer.results == [] and answer.rsm == ResultSet(count=1) and not answer.complete
    answer = await ask(bob, form(**{"with": "alice@localhost/r"}) + rsm(max=0))
    assert answer.results == [] and answer.rsm == ResultSet(count=1200)


async def rare_among_many(server: Server) -> str:
    """bob's archive: one message from alice's resource 'rare', then SCAN_MOST + 50 from 'r'; the
    rare one's id."""
    await add_user(server, "bob")
    message = ("<message xmlns='jabber:client' from='alice@localhost/rare' to='bob@localhost' type='chat'>"
               "<body>rare</body></message>")  # fmt: skip
    rare = await server.storage.archive.append(H, "bob", STORE, 50.0, "alice@localhost", message.encode(),
                                               resource="rare")
    others = b"<message xmlns='jabber:client' from='alice@localhost/r' to='bob@localhost' type='chat'/>"
    await asyncio.gather(*(server.storage.archive.append(H, "bob", STORE, 100.0 + i, "alice@localhost", others,
                                                         resource="r")
                           for i in range(SCAN_MOST + 50)))  # fmt: skip
    return rare


async def test_filter_full_jid_finds_its_messages_among_any_number(server: Server) -> None:
    """§4.1.1: the archive keeps each message's contact resource, so a full JID's messages are
    found by it, however many of the contact's messages come between: pages in both directions
    and their number are exact."""
    rare = await rare_among_many(server)
    bob = await online(server, "bob@localhost/laptop")
    rare_form = form(**{"with": "alice@localhost/rare"})
    answer = await ask(bob, rare_form + rsm(max=5, before=""))
    assert answer.ids == [rare] and answer.bodies == ["rare"] and answer.complete
    answer = await ask(bob, rare_form + rsm(max=0))
    assert answer.results == [] and answer.rsm == ResultSet(count=1)
    answer = await ask(bob, form(**{"with": "alice@localhost/r"}) + rsm(max=0))
    assert answer.rsm == ResultSet(count=SCAN_MOST + 50)
    answer = await ask(bob, form(**{"with": "alice@localhost/r"}) + rsm(max=3, after=rare))
    assert len(answer.ids) == 3 and not answer.complete
    assert (await ask(bob, rare_form + rsm(max=5, after=rare))).ids == []


async def test_filter_full_jid_examines_a_bounded_number_of_messages(server: Server) -> None:
    """§4.1.1: of the messages archived before resources were kept, a full JID's are looked for
    among at most SCAN_MOST a query, or any client could have the server read and parse a whole
    archive again and again. Matches found by then are the page, incomplete (XEP-0059 §2.6, to
    page on); none is policy-violation (RFC 6120 §8.3.3.12), which narrowing the query by time
    avoids."""
    rare = await rare_among_many(server)
    unresourced(server)
    bob = await online(server, "bob@localhost/laptop")
    rare_form = form(**{"with": "alice@localhost/rare"})
    narrow = (f"the archive reads at most {SCAN_MOST} messages for a query with a full JID: narrow it by "
              "time (start, end) or ask with the bare JID")
    # Newest first, and for the count, the rare message lies beyond the bound.
    for paging in (rsm(max=5, before=""), rsm(max=0)):
        answer = await ask(bob, rare_form + paging)
        assert condition(answer.iq) == "policy-violation", xml(answer.iq)
        error = answer.iq.find(f"{{{ns.CLIENT}}}error")
        assert error is not None and error.get("type") == "modify"
        assert error.findtext(f"{{{ns.STANZA_ERRORS}}}text") == narrow
        assert answer.results == []
    # Oldest first it is found, and the page is incomplete; paging on finds none within the bound.
    answer = await ask(bob, rare_form + rsm(max=5))
    assert answer.ids == [rare] and answer.bodies == ["rare"] and not answer.complete
    assert (answer.rsm.first, answer.rsm.last) == (rare, rare)
    answer = await ask(bob, rare_form + rsm(max=5, after=rare))
    assert condition(answer.iq) == "policy-violation" and answer.results == []
    # Narrowed by time, or asked by bare JID, the query gets its answer.
    answer = await ask(bob, form(**{"with": "alice@localhost/rare", "end": "1970-01-01T00:01:00Z"}) + rsm(before=""))
    assert answer.ids == [rare] and answer.complete
    answer = await ask(bob, form(**{"with": "alice@localhost"}) + rsm(max=0))
    assert answer.rsm.count == SCAN_MOST + 51


async def test_each_copy_keeps_the_contacts_resource(server: Server) -> None:
    """§4.1.1: each copy is archived with the resource of the contact's address as the message
    has it (none for a bare JID), by which a query with the contact's full JID finds it."""
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost", "to bob", id="a"))
    await bob.send(chat("alice@localhost/phone", "to the phone", id="b"))
    alice.take()
    bob.take()
    for user, kept in (("alice", [("bob@localhost", ""), ("bob@localhost", "laptop")]),
                       ("bob", [("alice@localhost", "phone"), ("alice@localhost", "phone")])):
        items = (await server.storage.archive.query(H, user, STORE)).items
        assert [(item.with_jid, item.resource) for item in items] == kept, user
    assert (await ask(bob, form(**{"with": "alice@localhost/phone"}))).bodies == ["to bob", "to the phone"]
    assert (await ask(alice, form(**{"with": "bob@localhost/laptop"}))).bodies == ["to the phone"]


async def test_filter_own_full_jid_finds_that_resources_messages_with_everyone(server: Server) -> None:
    """§4.1.1: a full JID matches the messages to or from it, and one of the account's own
    resources exchanges messages with contacts, not only with its siblings."""
    phone = await online(server, "alice@localhost/phone")
    laptop = await online(server, "alice@localhost/laptop")
    bob = await online(server, "bob@localhost/pc")
    await phone.send(chat("bob@localhost", "from the phone", id="a"))
    await laptop.send(chat("bob@localhost", "from the laptop", id="b"))
    await bob.send(chat("alice@localhost/phone", "to the phone", id="c"))
    await bob.send(chat("alice@localhost", "to alice", id="d"))
    await laptop.send(chat("alice@localhost/phone", "note to the phone", id="e"))
    await phone.send(chat("alice@localhost/laptop", "note to the laptop", id="f"))
    for client in (phone, laptop, bob):
        client.take()
    expected = ["from the phone", "to the phone", "note to the phone", "note to the laptop"]
    answer = await ask(phone, form(**{"with": "alice@localhost/phone"}))
    assert answer.bodies == expected and answer.complete
    answer = await ask(phone, form(**{"with": "alice@localhost/phone"}) + rsm(max=2, before=""))
    assert answer.bodies == expected[2:] and not answer.complete
    answer = await ask(phone, form(**{"with": "alice@localhost/phone"}) + rsm(max=0))
    assert answer.rsm == ResultSet(count=4)


async def test_filter_start_and_end(server: Server) -> None:
    await add_user(server, "bob")
    base = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    ids = await fill(server, "bob", [(base + 60 * i, "alice@localhost") for i in range(6)])
    bob = await online(server, "bob@localhost/laptop")
    # Both ends are inclusive (§4.1.2); any time zone may be used.
    answer = await ask(bob, form(start="2024-05-01T00:01:00Z", end="2024-05-01T02:03:00+02:00"))
    assert answer.ids == ids[1:4]
    assert (await ask(bob, form(start="2024-05-01T00:04:30.5Z"))).ids == ids[5:]
    assert (await ask(bob, form(end="2024-04-30T23:59:59Z"))).ids == []
    answer = await ask(bob, form(start="2024-05-01T00:01:00Z") + rsm(max=2, before=""))
    assert answer.ids == ids[4:] and not answer.complete
    stamps = [r.forwarded.stamp for r in (await ask(bob)).results]
    assert stamps == [datetime.fromtimestamp(base + 60 * i, UTC) for i in range(6)]


@pytest.mark.parametrize("stored", [1714521600.1234567, 1714521600.1234563])
async def test_a_message_is_found_by_the_stamp_it_is_shown_with(server: Server, stored: float) -> None:
    # §4.1.2: start and end compare with the stamp a result shows, to the microsecond, also for a
    # message kept at a finer time (as archived before times were kept to the microsecond).
    await add_user(server, "bob")
    ids = await fill(server, "bob", [(stored + offset, "alice@localhost") for offset in (-1e-6, 0.0, 1e-6)])
    bob = await online(server, "bob@localhost/laptop")
    stamps = [result.forwarded.stamp for result in (await ask(bob)).results]
    assert len(set(stamps)) == 3
    for i, stamp in enumerate(stamps):
        assert stamp is not None
        shown = format_stamp(stamp)
        assert (await ask(bob, form(start=shown, end=shown))).ids == [ids[i]], shown
        assert (await ask(bob, form(start=shown))).ids == ids[i:], shown
        assert (await ask(bob, form(end=shown))).ids == ids[: i + 1], shown
    metadata = Metadata.from_xml((await iq(bob, f"<metadata xmlns='{MAM}'/>"))[0])
    assert metadata.end is not None
    assert (await ask(bob, form(start=format_stamp(metadata.end.stamp)))).ids == ids[2:]


async def test_a_message_is_kept_at_the_time_it_is_shown_with(server: Server) -> None:
    # §5 and §4.1.2: the time archived is the one the results show, to the microsecond.
    _, bob, _ = await conversation(server, 10)
    results = (await ask(bob)).results
    stamps = [result.forwarded.stamp for result in results]
    kept = [item.timestamp for item in (await server.storage.archive.query(H, "bob", STORE)).items]
    assert [stamp.timestamp() if stamp is not None else None for stamp in stamps] == kept
    for result in results:
        assert result.forwarded.stamp is not None
        shown = format_stamp(result.forwarded.stamp)
        same = [other.id for other in results if other.forwarded.stamp == result.forwarded.stamp]
        assert (await ask(bob, form(start=shown, end=shown))).ids == same, shown


def test_the_archived_time_is_the_clock_to_the_microsecond() -> None:
    # The float nearest a whole microsecond, as round(t, 6) makes it, and no earlier or later
    # than the clock around it.
    before = round(time.time(), 6) - 1e-6
    stamps = [now() for _ in range(1000)]
    after = round(time.time(), 6) + 1e-6
    assert all(stamp == round(stamp, 6) and before <= stamp <= after for stamp in stamps)


async def test_time_window_paged_with_rsm(server: Server) -> None:
    # §4.1.2 with XEP-0059: a client pages through a window forwards with <after/> and backwards
    # with <before/>; <fin/> is complete on the page that reaches the window's end. The message
    # archived last (stamped by a clock behind) falls within the window and comes last.
    await add_user(server, "bob")
    base = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    entries = [(base + 60 * i, ("alice@localhost", "carol@localhost")[i % 2]) for i in range(10)]
    ids = await fill(server, "bob", [*entries, (base + 150, "alice@localhost")])
    window = [*ids[2:8], ids[10]]
    bob = await online(server, "bob@localhost/laptop")
    times = form(start="2024-05-01T00:02:00Z", end="2024-05-01T00:07:00Z")
    pages: list[list[str]] = []
    last: str | None = None
    while True:
        answer = await ask(bob, times + rsm(max=3, after=last))
        pages.append(answer.ids)
        if answer.complete:
            break
        last = answer.ids[-1]
    assert pages == [window[:3], window[3:6], window[6:]]
    answer = await ask(bob, times + rsm(max=4, before=""))
    assert answer.ids == window[3:] and not answer.complete
    answer = await ask(bob, times + rsm(max=4, before=answer.ids[0]))
    assert answer.ids == window[:3] and answer.complete
    answer = await ask(bob, form(start="2024-05-01T00:02:00Z", end="2024-05-01T00:07:00Z", **{"with": "carol@localhost"})
                       + rsm(max=2, after=window[0]))
    assert answer.ids == [ids[3], ids[5]] and not answer.complete
    answer = await ask(bob, times + rsm(max=0))
    assert answer.ids == [] and answer.rsm.count == 7


async def test_a_query_naming_more_ids_than_a_page_holds_is_a_policy_violation(
        tmp_path: Path, storage_url: str) -> None:  # noqa: F811
    """§4.1.3 'ids', on both backends: a query may name at most ``max_page_size`` ids (so that
    all it finds fit one page); more, even more than SQLite binds in one statement (32,766 by
    default, 250,000 as Debian builds it), in a stanza that a raised ``max_stanza_size`` lets
    in, is policy-violation (RFC 6120 §8.3.3.12), not a storage failure."""
    modules: dict[str, Any] = {**MODULES, "mam": {"max_page_size": 10_000}}
    async with running(tmp_path, modules=modules, storage={"url": storage_url},
                       limits={"max_stanza_size": 16 * 1024 * 1024}) as server:
        _, bob, ids = await conversation(server, 3)
        most = ids * 3333 + ids[:1]
        answer = await ask(bob, form(ids=most))
        assert answer.ids == ids and answer.complete
        for named in (ids * 86_000, most + ids[:1]):
            answer = await ask(bob, form(ids=named))
            assert condition(answer.iq) == "policy-violation", xml(answer.iq)
            assert answer.iq.findtext(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}text") == \
                "a query may name at most 10000 ids"


async def test_extended_ids_after_id_before_id(server: Server) -> None:
    _, bob, ids = await conversation(server, 8)
    answer = await ask(bob, form(ids=[ids[5], ids[1]]))
    assert answer.ids == [ids[1], ids[5]] and answer.complete
    answer = await ask(bob, form(after_id=ids[1], before_id=ids[6]))
    assert answer.ids == ids[2:6] and answer.complete
    # before-id bounds the set without paging backwards (§7 of the implementation notes).
    answer = await ask(bob, form(before_id=ids[6]) + rsm(max=2))
    assert answer.ids == ids[:2] and not answer.complete
    answer = await ask(bob, form(before_id=ids[6]) + rsm(max=2, after=answer.rsm.last))
    assert answer.ids == ids[2:4]
    answer = await ask(bob, form(after_id=ids[3]) + rsm(max=2, before=""))
    assert answer.ids == ids[6:] and not answer.complete
    answer = await ask(bob, form(after_id=ids[3]) + rsm(max=2, before=answer.rsm.first))
    assert answer.ids == ids[4:6] and answer.complete
    # Both after-id and RSM after: the later one bounds.
    answer = await ask(bob, form(after_id=ids[5]) + rsm(after=ids[2]))
    assert answer.ids == ids[6:]
    answer = await ask(bob, form(after_id=ids[2]) + rsm(after=ids[5]))
    assert answer.ids == ids[6:]
    answer = await ask(bob, form(before_id=ids[2]) + rsm(before=ids[5]))
    assert answer.ids == ids[:2]


async def test_after_id_and_before_id_bound_the_count(server: Server) -> None:
    """§4.1.3: after-id and before-id bound the result set, and XEP-0059 §2.6's count is that
    set's size; RSM's after and before only page through it."""
    _, bob, ids = await conversation(server, 8)
    for fields, count in (({"after_id": ids[3]}, 4), ({"before_id": ids[6]}, 6),
                          ({"after_id": ids[1], "before_id": ids[6]}, 4), ({}, 8)):
        answer = await ask(bob, form(**fields) + rsm(max=0))
        assert answer.rsm == ResultSet(count=count), fields
        answer = await ask(bob, form(**fields) + rsm(max=0, after=ids[4]))
        assert answer.rsm.count == count, fields
    answer = await ask(bob, form(**{"after_id": ids[1], "with": "alice@localhost/phone"}) + rsm(max=0))
    assert answer.rsm.count == 6


async def test_page_size_limit(tmp_path: Path) -> None:
    modules: dict[str, Any] = {**MODULES, "mam": {"max_page_size": 3}}
    async with running(tmp_path, modules=modules) as server:
        _, bob, ids = await conversation(server, 5)
        answer = await ask(bob)
        assert answer.ids == ids[:3] and not answer.complete
        answer = await ask(bob, rsm(max=100, after=ids[2]))
        assert answer.ids == ids[3:] and answer.complete
        answer = await ask(bob, rsm(max=0))
        assert answer.ids == [] and answer.rsm.count == 5 and not answer.complete


async def test_count_on_request(server: Server) -> None:
    # XEP-0059 §2.6: max 0 asks for the number of matching messages alone.
    await add_user(server, "bob")
    await fill(server, "bob", [(100.0 + i, ("alice@localhost", "carol@localhost")[i % 3 == 0]) for i in range(7)])
    bob = await online(server, "bob@localhost/laptop")
    answer = await ask(bob, rsm(max=0))
    assert answer.results == [] and answer.rsm == ResultSet(count=7)
    answer = await ask(bob, form(**{"with": "carol@localhost"}) + rsm(max=0))
    assert answer.rsm.count == 3
    # A full JID counts the messages to or from that resource alone (§4.1.1).
    answer = await ask(bob, form(**{"with": "carol@localhost/r"}) + rsm(max=0))
    assert answer.results == [] and answer.rsm == ResultSet(count=3) and not answer.complete
    answer = await ask(bob, form(**{"with": "carol@localhost/elsewhere"}) + rsm(max=0))
    assert answer.rsm == ResultSet(count=0) and answer.complete


async def test_form_discovery(server: Server) -> None:
    bob = await online(server, "bob@localhost/laptop")
    reply = await iq(bob, f"<query xmlns='{MAM}'/>")
    assert reply.get("type") == "result"
    x = reply.find(f"{{{MAM}}}query/{{{XDATA}}}x")
    assert x is not None
    parsed = DataForm.from_xml(x)
    assert parsed.form_type == MAM
    assert {f.var for f in parsed.fields} >= {"with", "start", "end", "before-id", "after-id", "ids"}


@pytest.mark.parametrize(("payload", "expected"), [
    (form(start="last tuesday"), "bad-request"),
    (form(**{"with": "@localhost"}), "jid-malformed"),
    (form(**{"include-groupchat": "true"}), "feature-not-implemented"),
    (f"<x xmlns='{XDATA}' type='form'/>", "bad-request"),
    (f"<set xmlns='{RSM}'><max>-5</max></set>", "bad-request"),
    (f"<set xmlns='{RSM}'><max>5</max><index>10</index></set>", "feature-not-implemented"),
])  # fmt: skip
async def test_bad_queries(server: Server, payload: str, expected: str) -> None:
    bob = await online(server, "bob@localhost/laptop")
    answer = await ask(bob, payload)
    assert condition(answer.iq) == expected and answer.results == []


async def test_another_users_archive_is_forbidden(server: Server) -> None:
    await conversation(server, 1)
    mallory = await online(server, "mallory@localhost/x")
    answer = await ask(mallory, to="bob@localhost")
    assert condition(answer.iq) == "forbidden" and answer.results == []
    for payload, kind in ((f"<prefs xmlns='{MAM}'/>", "get"), (f"<metadata xmlns='{MAM}'/>", "get"),
                          (f"<prefs xmlns='{MAM}' default='never'/>", "set")):
        assert condition(await iq(mallory, payload, kind, to="bob@localhost")) == "forbidden"


async def test_account_features(server: Server) -> None:
    bob = await online(server, "bob@localhost/laptop")
    reply = await iq(bob, f"<query xmlns='{ns.DISCO_INFO}'/>", to="bob@localhost")
    features = {f.get("var") for f in reply.iter(f"{{{ns.DISCO_INFO}}}feature")}
    assert {MAM, f"{MAM}#extended", ns.SID} <= features


# --- metadata, preferences, retention, deletion -------------------------------------------------


async def test_metadata(server: Server) -> None:
    bob = await online(server, "bob@localhost/laptop")
    reply = await iq(bob, f"<metadata xmlns='{MAM}'/>")
    assert Metadata.from_xml(reply[0]) == Metadata()
    ids = await fill(server, "bob", [(1000.0, "a@localhost"), (2000.0, "b@localhost"), (3000.0, "a@localhost")])
    metadata = Metadata.from_xml((await iq(bob, f"<metadata xmlns='{MAM}'/>"))[0])
    assert metadata.start is not None and metadata.end is not None
    assert (metadata.start.id, metadata.start.stamp.timestamp()) == (ids[0], 1000.0)
    assert (metadata.end.id, metadata.end.stamp.timestamp()) == (ids[2], 3000.0)


async def test_preferences_default_and_set(server: Server) -> None:
    bob = await online(server, "bob@localhost/laptop")
    reply = await iq(bob, f"<prefs xmlns='{MAM}'/>")
    assert Prefs.from_xml(reply[0]) == Prefs("always")
    new = (f"<prefs xmlns='{MAM}' default='never'><always><jid>carol@localhost</jid></always>"
           "<never><jid>alice@localhost</jid></never></prefs>")  # fmt: skip
    reply = await iq(bob, new, "set")
    assert reply.get("type") == "result"
    assert serialize(reply[0]) == serialize(Prefs.from_xml(parse_frame(new.encode(), 10**6)).to_xml())
    assert Prefs.from_xml((await iq(bob, f"<prefs xmlns='{MAM}'/>"))[0]) == Prefs.from_xml(reply[0])
    alice = await online(server, "alice@localhost/phone")
    carol = await online(server, "carol@localhost/phone")
    dave = await online(server, "dave@localhost/phone")
    for sender in (alice, carol, dave):
        await sender.send(chat("bob@localhost", f"from {sender.jid}"))
    assert [body(m) for _, _, m in await archived(server, "bob")] == ["from carol@localhost/phone"]
    # Each archive follows its owner's preferences: the senders keep theirs.
    assert len(await archived(server, "alice")) == 1
    # Not getting a stanza-id tells the client the message is not archived.
    assert [stanza_ids(el) == [] for el in bob.take()] == [True, False, True]
    await bob.send(chat("alice@localhost", "outgoing to a never contact"))
    await bob.send(chat("carol@localhost", "outgoing to an always contact"))
    assert [body(m) for _, _, m in await archived(server, "bob")][1:] == ["outgoing to an always contact"]


async def test_preferences_roster_default(server: Server) -> None:
    bob = await online(server, "bob@localhost/laptop")
    await iq(bob, f"<prefs xmlns='{MAM}' default='roster'/>", "set")
    await server.storage.roster.set_item(H, "bob", RosterItem("alice@localhost", subscription="both"))
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "stranger@localhost/x")
    await alice.send(chat("bob@localhost", "friend"))
    await stranger.send(chat("bob@localhost", "spam"))
    await bob.send(chat("stranger@localhost", "who are you?"))
    assert [body(m) for _, _, m in await archived(server, "bob")] == ["friend"]


@pytest.mark.parametrize(("payload", "expected"), [
    (f"<prefs xmlns='{MAM}' default='sometimes'/>", "bad-request"),
    (f"<prefs xmlns='{MAM}'/>", "bad-request"),
    (f"<prefs xmlns='{MAM}' default='always'><always><jid>a@@b</jid></always></prefs>", "jid-malformed"),
])  # fmt: skip
async def test_bad_preferences(server: Server, payload: str, expected: str) -> None:
    bob = await online(server, "bob@localhost/laptop")
    assert condition(await iq(bob, payload, "set")) == expected
    assert Prefs.from_xml((await iq(bob, f"<prefs xmlns='{MAM}'/>"))[0]) == Prefs("always")


async def test_default_policy_option(tmp_path: Path) -> None:
    modules: dict[str, Any] = {**MODULES, "mam": {"default_policy": "never"}}
    async with running(tmp_path, modules=modules) as server:
        alice = await online(server, "alice@localhost/phone")
        bob = await online(server, "bob@localhost/laptop")
        await alice.send(chat("bob@localhost"))
        assert stanza_ids(bob.take()[0]) == []
        assert await archived(server, "bob") == [] and await archived(server, "alice") == []
        assert Prefs.from_xml((await iq(bob, f"<prefs xmlns='{MAM}'/>"))[0]) == Prefs("never")


async def test_retention_purges_old_messages(tmp_path: Path) -> None:
    modules: dict[str, Any] = {**MODULES, "mam": {"retention_days": 7}}
    async with running(tmp_path, modules=modules) as server:
        await add_user(server, "bob")
        await add_user(server, "alice")
        now = time.time()
        bob_ids = await fill(server, "bob", [(now - 10 * 86400, "a@x"), (now - 8 * 86400, "a@x"), (now - 86400, "a@x")])
        await fill(server, "alice", [(now - 30 * 86400, "b@x")])
        mam = server.modules["mam"]
        assert isinstance(mam, Mam)
        assert await mam.purge() == 3
        assert [item_id for item_id, _, _ in await archived(server, "bob")] == bob_ids[2:]
        assert await archived(server, "alice") == []


async def test_archive_and_preferences_go_with_the_account(server: Server) -> None:
    _, bob, _ = await conversation(server, 3)
    await iq(bob, f"<prefs xmlns='{MAM}' default='never'/>", "set")
    await server.delete_account(H, "bob")
    assert await server.storage.archive.count(H, "bob", STORE) == 0
    await add_user(server, "bob")
    bob = await online(server, "bob@localhost/laptop")
    assert Prefs.from_xml((await iq(bob, f"<prefs xmlns='{MAM}'/>"))[0]) == Prefs("always")
    assert (await ask(bob)).results == []
