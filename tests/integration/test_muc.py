"""Groups on real sockets, driven by slixmpp's XEP-0045 and XEP-0313 plugins.

A private group of three exchanges OMEMO-shaped messages (no body: the archive keeps nothing but
ciphertext); a non-member is refused, an outcast stays out, a kicked member gets nothing more,
a member added later reads the history from the room's archive; a public room works the way a
plain client (poezio) uses it; rooms and affiliations survive a restart on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ClientXMPP
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from schnack.server.app import Server
from schnack.xmpp import ns

from ..harness import add_user, running
from ..server.storage.conftest import postgres_schema

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
FALLBACK = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."
PLUGINS = ("xep_0004", "xep_0030", "xep_0045", "xep_0059", "xep_0199", "xep_0203", "xep_0297", "xep_0313",
           "xep_0359")
ROOM = JID("family@groups.localhost")
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1001'><key rid='2002'>a2V5</key>"
    "<iv>aXZpdml2aXZpdml2</iv></header><payload>{payload}</payload></encrypted>"
)


class Member:
    """A slixmpp client with the MUC plugin that keeps the groupchat messages it gets."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, PASSWORD)
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in PLUGINS:
            self.xmpp.register_plugin(plugin)
        self.muc = self.xmpp.plugin["xep_0045"]
        self.groupchat: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        # slixmpp's message events want a body; OMEMO messages may have none.
        self.xmpp.register_handler(Callback("AnyGroupchat", MatchXPath(f"{{{ns.CLIENT}}}message"), self._groupchat))
        self.xmpp.add_event_handler("groupchat_presence", self.presences.put_nowait)

    def _groupchat(self, msg: Any) -> None:
        if msg["type"] == "groupchat" and msg.xml.find(f"{{{ns.CLIENT}}}subject") is None:
            self.groupchat.put_nowait(msg)

    async def start(self) -> None:
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(30):
            await self.started.wait()
        self.xmpp.send_presence()
        await self.sync()

    async def sync(self) -> None:
        """Everything sent before on this stream has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=30)

    async def join(self, nick: str, room: JID = ROOM, **history: Any) -> Any:
        async with asyncio.timeout(30):
            return await self.muc.join_muc_wait(room, nick, timeout=30, **history)

    async def create(self, nick: str, room: JID = ROOM, **fields: Any) -> None:
        """Create the room, then submit its configuration form with ``fields`` changed."""
        presence, *_ = await self.join(nick, room, maxstanzas=0)
        assert 201 in presence["muc"]["status_codes"]
        form = await self.muc.get_room_config(room)
        for var, value in fields.items():
            form.field[f"muc#roomconfig_{var}"]["value"] = value
        await self.muc.set_room_config(room, form)

    def say_encrypted(self, secret: str, room: JID = ROOM, fallback: str | None = None) -> None:
        msg = self.xmpp.make_message(mto=room, mtype="groupchat", mbody=fallback)
        msg.xml.append(ET.fromstring(OMEMO.format(payload=secret)))
        msg.xml.append(ET.fromstring("<store xmlns='urn:xmpp:hints'/>"))
        msg.send()

    async def next_groupchat(self) -> Any:
        async with asyncio.timeout(30):
            return await self.groupchat.get()

    async def history(self, room: JID = ROOM) -> list[Any]:
        found = []
        async with asyncio.timeout(60):
            async for result in self.xmpp.plugin["xep_0313"].iterate(jid=room, rsm={"max": 2}):
                found.append(result)
        return found

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def members() -> AsyncIterator[list[Member]]:
    made: list[Member] = []
    yield made
    for member in made:
        await member.stop()


async def member(server: Server, made: list[Member], user: str) -> Member:
    if await server.storage.accounts.get("localhost", user) is None:
        await add_user(server, user, PASSWORD)
    each = Member(server, f"{user}@localhost/phone")
    made.append(each)
    await each.start()
    return each


def secret_of(msg: Any) -> str | None:
    return msg.xml.findtext(f"{{{ns.OMEMO_LEGACY}}}encrypted/{{{ns.OMEMO_LEGACY}}}payload")  # type: ignore[no-any-return]


async def private_group(server: Server, made: list[Member], *users: str) -> list[Member]:
    owner = await member(server, made, users[0])
    await owner.create(users[0], roomname="Family")
    for user in users[1:]:
        await owner.muc.set_affiliation(ROOM, "member", jid=JID(f"{user}@localhost"))
    group = [owner]
    for user in users[1:]:
        each = await member(server, made, user)
        await each.join(user, maxstanzas=0)
        group.append(each)
    return group


async def test_a_private_group_of_three(live_server: Server, members: list[Member]) -> None:
    group = await private_group(live_server, members, "alice", "bob", "carol")
    info = await group[1].xmpp.plugin["xep_0030"].get_info(jid=ROOM)
    features = set(info["disco_info"]["features"])
    assert {"muc_membersonly", "muc_nonanonymous", "muc_persistent", "muc_hidden"} <= features
    for n, sender in enumerate(group):
        sender.say_encrypted(f"c2VjcmV0{n}")
        for receiver in group:
            msg = await receiver.next_groupchat()
            assert msg["from"] == JID(f"{ROOM}/{('alice', 'bob', 'carol')[n]}")
            assert secret_of(msg) == f"c2VjcmV0{n}" and msg["body"] == ""
            assert msg["stanza_id"]["by"] == ROOM
    page = await live_server.storage.archive.query("groups.localhost", "family", "muc")
    assert len(page.items) == 3
    for n, item in enumerate(page.items):
        assert f"c2VjcmV0{n}".encode() in item.payload and b"<body" not in item.payload


async def test_a_non_member_is_refused_and_an_outcast_stays_out(live_server: Server, members: list[Member]) -> None:
    alice, _bob = await private_group(live_server, members, "alice", "bob")
    await alice.muc.set_affiliation(ROOM, "outcast", jid=JID("eve@localhost"))
    mallory = await member(live_server, members, "mallory")
    with pytest.raises(PresenceError) as refused:
        await mallory.join("mallory")
    assert refused.value.condition == "registration-required"
    eve = await member(live_server, members, "eve")
    with pytest.raises(PresenceError) as banned:
        await eve.join("eve")
    assert banned.value.condition == "forbidden"
    with pytest.raises(IqError) as archive:
        await eve.xmpp.plugin["xep_0313"].get_fields(jid=ROOM, timeout=30)
    assert archive.value.condition == "forbidden"


async def test_a_kicked_member_receives_nothing_more(live_server: Server, members: list[Member]) -> None:
    alice, bob, carol = await private_group(live_server, members, "alice", "bob", "carol")
    await alice.muc.set_role(ROOM, "bob", "none", reason="time out")
    async with asyncio.timeout(30):
        while True:
            presence = await bob.presences.get()
            if presence["type"] == "unavailable":
                break
    assert {307, 110} <= set(presence["muc"]["status_codes"])
    carol.say_encrypted("YWZ0ZXI=")
    assert secret_of(await alice.next_groupchat()) == "YWZ0ZXI="
    await bob.sync()
    await carol.sync()
    assert bob.groupchat.empty()


async def test_a_later_member_reads_the_history_from_the_archive(live_server: Server, members: list[Member]) -> None:
    alice, bob = await private_group(live_server, members, "alice", "bob")
    for n in range(5):
        (alice, bob)[n % 2].say_encrypted(f"b2xk{n}", fallback=FALLBACK)
    for _ in range(5):
        await alice.next_groupchat()
    await alice.muc.set_affiliation(ROOM, "member", jid=JID("carol@localhost"))
    carol = await member(live_server, members, "carol")
    results = await carol.history()
    assert [secret_of(r["mam_result"]["forwarded"]["stanza"]) for r in results] == [f"b2xk{n}" for n in range(5)]
    _, _, _, history = await carol.join("carol", maxstanzas=2)
    assert [secret_of(m) for m in history] == ["b2xk3", "b2xk4"]


async def test_a_public_room_the_way_poezio_uses_it(live_server: Server, members: list[Member]) -> None:
    lobby = JID("lobby@groups.localhost")
    alice = await member(live_server, members, "alice")
    await alice.create("Alice", lobby, publicroom=True, membersonly=False, whois="moderators",
                       roomname="Lobby")
    items = await alice.xmpp.plugin["xep_0030"].get_items(jid=JID("groups.localhost"))
    assert [(str(i[0]), i[2]) for i in items["disco_items"]["items"]] == [("lobby@groups.localhost", "Lobby")]
    alice.muc.set_subject(lobby, "Welcome!")
    bob = await member(live_server, members, "bob")
    presence, subject, occupants, _ = await bob.join("Bob", lobby, maxstanzas=10)
    assert subject["subject"] == "Welcome!"
    assert [str(p["from"]) for p in occupants] == ["lobby@groups.localhost/Alice", "lobby@groups.localhost/Bob"]
    assert presence["muc"]["role"] == "participant" and presence["muc"]["jid"] == JID("bob@localhost/phone")
    seen_by_bob = occupants[0]
    assert not seen_by_bob["muc"]["jid"]  # semi-anonymous
    bob.xmpp.send_message(mto=lobby, mbody="hello everyone", mtype="groupchat")
    msg = await alice.next_groupchat()
    assert msg["body"] == "hello everyone" and msg["from"] == JID(f"{lobby}/Bob")
    await bob.muc.set_self_nick(lobby, "Robert", timeout=30)
    assert bob.muc.get_our_jid_in_room(lobby) == f"{lobby}/Robert"
    bob.muc.leave_muc(lobby, "Robert")
    await bob.sync()
    assert alice.muc.get_roster(lobby) == ["Alice"]


async def _survives_a_restart(tmp_path: Path, url: str) -> None:
    made: list[Member] = []
    async with running(tmp_path, listen=True, storage={"url": url}) as first:
        try:
            alice, _bob = await private_group(first, made, "alice", "bob")
            alice.say_encrypted("YmVmb3Jl", fallback=FALLBACK)
            await alice.next_groupchat()
        finally:
            for each in made:
                await each.stop()
    made.clear()
    async with running(tmp_path, listen=True, storage={"url": url}) as second:
        try:
            bob = await member(second, made, "bob")
            presence, _, _, history = await bob.join("bob", maxstanzas=5)
            assert 201 not in presence["muc"]["status_codes"] and presence["muc"]["affiliation"] == "member"
            assert [secret_of(m) for m in history] == ["YmVmb3Jl"]
            carol = await member(second, made, "carol")
            with pytest.raises(PresenceError) as refused:
                await carol.join("carol")
            assert refused.value.condition == "registration-required"
        finally:
            for each in made:
                await each.stop()


async def test_rooms_survive_a_restart_on_sqlite(tmp_path: Path) -> None:
    await _survives_a_restart(tmp_path, f"sqlite:///{tmp_path / 'groups.db'}")


async def test_rooms_survive_a_restart_on_postgres(tmp_path: Path) -> None:
    async with postgres_schema() as (url, _, _):
        await _survives_a_restart(tmp_path, url)
