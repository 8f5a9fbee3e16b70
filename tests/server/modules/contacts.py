"""Helpers shared by the roster and presence module tests: roster IQs, presence, what arrived."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.hooks import HANDLED, Handled
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.roster import QUERY, RosterItem, RosterQuery
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import serialize

from ...harness import Client, running

IQ = f"{{{ns.CLIENT}}}iq"
PRESENCE = f"{{{ns.CLIENT}}}presence"


async def roster(client: Client, ver: str | None = None) -> Element:
    """Ask for the roster (RFC 6121 §2.2); return the result."""
    attrs = f" ver='{ver}'" if ver is not None else ""
    await client.send(f"<iq type='get' id='get1'><query xmlns='{ns.ROSTER}'{attrs}/></iq>")
    (result,) = client.take()
    assert result.get("type") == "result" and result.get("id") == "get1", serialize(result)
    return result


async def items_of(client: Client) -> dict[str, RosterItem]:
    """The client's roster as the server returns it, by contact JID."""
    query = (await roster(client)).find(QUERY)
    assert query is not None
    return {str(item.jid): item for item in RosterQuery.from_xml(query).items}


def set_item(jid: str, name: str | None = None, groups: tuple[str, ...] = (), extra: str = "") -> str:
    """A roster set for one item; ``extra`` goes into the item's start tag."""
    name_attr = f" name='{name}'" if name is not None else ""
    group_xml = "".join(f"<group>{group}</group>" for group in groups)
    return (
        f"<iq type='set' id='set1'><query xmlns='{ns.ROSTER}'>"
        f"<item jid='{jid}'{name_attr}{extra}>{group_xml}</item></query></iq>"
    )


def remove_item(jid: str) -> str:
    return set_item(jid, extra=" subscription='remove'")


def presence(kind: str | None = None, to: str | None = None, inner: str = "") -> str:
    attrs = (f" to='{to}'" if to else "") + (f" type='{kind}'" if kind else "")
    return f"<presence{attrs}>{inner}</presence>"


def pushes(elements: list[Element]) -> list[tuple[str, RosterItem]]:
    """The roster pushes among ``elements``: (version, item) each, checked for their shape (§2.1.6)."""
    found = []
    for el in elements:
        query = el.find(QUERY)
        if el.tag != IQ or el.get("type") != "set" or query is None:
            continue
        assert el.get("from") is None, serialize(el)
        assert el.get("id")
        parsed = RosterQuery.from_xml(query)
        (item,) = parsed.items
        assert parsed.ver is not None
        found.append((parsed.ver, item))
    return found


def presences(elements: list[Element]) -> list[Element]:
    return [el for el in elements if el.tag == PRESENCE]


def kinds(elements: list[Element]) -> list[tuple[str | None, str | None, str | None]]:
    """(type, from, to) of each presence among ``elements``."""
    return [(el.get("type"), el.get("from"), el.get("to")) for el in presences(elements)]


def only_item(elements: list[Element]) -> RosterItem:
    """The item of the single roster push among ``elements``."""
    (push,) = pushes(elements)
    return push[1]


@contextlib.asynccontextmanager
async def federated(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Server, list[Element]]]:
    """A server with ``[s2s] enabled`` and what it sends to other servers, caught just before
    the s2s package would take it (so no other server is needed)."""
    async with running(tmp_path, s2s={"enabled": True}, **overrides) as server:
        sent: list[Element] = []

        async def capture(stanza: Stanza, _origin: Session | None) -> Handled:
            sent.append(stanza.el)
            return HANDLED

        for kind in ("message", "presence", "iq"):
            server.hooks.add(f"{kind}/remote", capture, -999)
        yield server, sent


async def arrive(server: Server, stanza: str) -> None:
    """Route ``stanza`` (jabber:client, with 'from' and 'to') as one another server sent."""
    name, attributes = stanza.removeprefix("<").split(" ", 1)
    el = parse_frame(f"<{name} xmlns='{ns.CLIENT}' {attributes}".encode(), 1 << 20)
    await server.router.route(Stanza.parse(el), None)
