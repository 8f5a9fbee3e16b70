"""Helpers shared by the message, offline, e2e and archive module tests."""

from __future__ import annotations

import contextlib
import sqlite3
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.xml import serialize

from ...harness import Client, add_user, connect

# An OMEMO-shaped payload: the server routes it without looking inside.
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1'><key rid='2'>a2V5</key><iv>aXY=</iv></header>"
    "<payload>cGF5bG9hZA==</payload></encrypted>"
)
FALLBACK = "<body>I sent you an OMEMO encrypted message but your client doesn't seem to support that.</body>"
# The modules under test, without the roster and presence modules: these tests set what initial
# presence sets (RFC 6121 §4.2) themselves, so that routing is checked on its own.
ROUTING_ONLY = {"disable": ["roster", "presence", "e2e"]}


def unresourced(server: Server) -> None:
    """Take every archived item's resource away, as for items archived before resources were kept
    (SQLite migration 0007)."""
    url = server.config.storage_url
    assert url.startswith("sqlite:///")
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
        db.execute("UPDATE archive SET with_resource = NULL")
        db.commit()


def condition(el: Element) -> str:
    """The defined condition of an error stanza."""
    assert el.get("type") == "error", serialize(el)
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag != f"{{{ns.STANZA_ERRORS}}}text")


def error_text(el: Element) -> str | None:
    """The human-readable text of an error stanza."""
    return el.findtext(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}text")


def session_of(client: Client) -> Session:
    session = client.stream.session
    assert session is not None
    return session


def announce(client: Client, priority: int = 0) -> Session:
    """What the presence module records when a resource sends initial presence (RFC 6121 §4.2)."""
    session = session_of(client)
    session.available = True
    session.priority = priority
    return session


async def login(server: Server, jid: str) -> Client:
    """Connect ``jid``, creating its account first if needed."""
    local, _, rest = jid.partition("@")
    host = rest.partition("/")[0]
    if await server.storage.accounts.get(host, local) is None:
        await add_user(server, local, host=host)
    return await connect(server, jid)


def chat(to: str | None, text: str = "hi", kind: str | None = "chat", id: str = "m1", extra: str = "") -> str:
    """A message with a body, of type ``kind`` (None: no type attribute)."""
    attrs = (f" to='{to}'" if to else "") + (f" type='{kind}'" if kind else "")
    return f"<message id='{id}'{attrs}><body>{text}</body>{extra}</message>"


def body(el: Element) -> str | None:
    return el.findtext(f"{{{ns.CLIENT}}}body")
