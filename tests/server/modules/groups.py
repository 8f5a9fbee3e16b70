"""Helpers shared by the group chat (XEP-0045) module tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.xml import serialize

from ...harness import Client, running
from .messaging import login

MUC = "http://jabber.org/protocol/muc"
USER = f"{MUC}#user"
ADMIN = f"{MUC}#admin"
OWNER = f"{MUC}#owner"
SERVICE = "groups.localhost"
ROOM = f"family@{SERVICE}"
PRESENCE = f"{{{ns.CLIENT}}}presence"
MESSAGE = f"{{{ns.CLIENT}}}message"
IQ = f"{{{ns.CLIENT}}}iq"
OCCUPANT_ID = "{urn:xmpp:occupant-id:0}occupant-id"
STANZA_ID = f"{{{ns.SID}}}stanza-id"
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1'><key rid='2'>a2V5</key><iv>aXY=</iv></header>"
    "<payload>Y2lwaGVydGV4dA==</payload></encrypted>"
)
# Plaintext in examples keeps them short; the e2e policy does not cover groups anyway.
MODULES: dict[str, Any] = {"e2e": {"policy": "optional"}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, modules=MODULES) as srv:
        yield srv


async def online(server: Server, jid: str) -> Client:
    """A logged-in resource that sent initial presence (RFC 6121 §4.2), as group members are."""
    client = await login(server, jid)
    await client.send("<presence/>")
    client.take()
    return client


def join_xml(room: str, nick: str, history: str = "", password: str | None = None) -> str:
    secret = f"<password>{password}</password>" if password is not None else ""
    return f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{history}{secret}</x></presence>"


def statuses(el: Element) -> set[int]:
    return {int(s.get("code", "0")) for s in el.findall(f"{{{USER}}}x/{{{USER}}}status")}


def item(el: Element) -> Element:
    found = el.find(f"{{{USER}}}x/{{{USER}}}item")
    assert found is not None, serialize(el)
    return found


def of_kind(elements: list[Element], tag: str) -> list[Element]:
    return [el for el in elements if el.tag == tag]


def iq_reply(elements: list[Element], iq_id: str) -> Element:
    (found,) = [el for el in elements if el.tag == IQ and el.get("id") == iq_id]
    return found


async def join(client: Client, room: str, nick: str, history: str = "<history maxstanzas='0'/>") -> list[Element]:
    """Enter ``room`` and return what came back, up to and including the subject."""
    await client.send(join_xml(room, nick, history))
    out = client.take()
    assert any(el.tag == MESSAGE and el.find(f"{{{ns.CLIENT}}}subject") is not None for el in out) or any(
        el.get("type") == "error" for el in out), [serialize(e) for e in out]
    return out


async def create(client: Client, room: str = ROOM, nick: str = "owner", form: str = "") -> list[Element]:
    """Create ``room`` and submit its configuration (an instant room with ``form`` empty)."""
    out = await join(client, room, nick)
    assert 201 in statuses(of_kind(out, PRESENCE)[-1])
    await client.send(f"<iq type='set' id='config' to='{room}'><query xmlns='{OWNER}'>"
                      f"<x xmlns='jabber:x:data' type='submit'>{form}</x></query></iq>")
    answer = iq_reply(client.take(), "config")
    assert answer.get("type") == "result", serialize(answer)
    return out


def field(var: str, *values: str) -> str:
    return f"<field var='{var}'>{''.join(f'<value>{v}</value>' for v in values)}</field>"


async def set_affiliation(client: Client, jid: str, affiliation: str, room: str = ROOM, iq_id: str = "aff") -> Element:
    await client.send(f"<iq type='set' id='{iq_id}' to='{room}'><query xmlns='{ADMIN}'>"
                      f"<item jid='{jid}' affiliation='{affiliation}'/></query></iq>")
    return iq_reply(client.take(), iq_id)


async def private_group(server: Server, *members: str) -> list[Client]:
    """A configured private group at ROOM owned by the first user, every user in it."""
    owner = await online(server, f"{members[0]}@localhost/phone")
    await create(owner, nick=members[0])
    clients = [owner]
    for user in members[1:]:
        assert (await set_affiliation(owner, f"{user}@localhost", "member")).get("type") == "result"
        client = await online(server, f"{user}@localhost/phone")
        await join(client, ROOM, user)
        clients.append(client)
    for client in clients:
        client.take()
    return clients
