"""Which nodes a resource wants notifications for: XEP-0163 §4 "+notify" through XEP-0115 caps.

A client announces its capabilities as a hash in its presence (``<c/>``); the features behind
the hash include ``<node>+notify`` for each node it wants (XEP-0163 §4.2). The server learns
them by asking the client itself for disco#info of ``<caps node>#<ver>`` (XEP-0115 §6.2),
checks that the answer hashes to ``ver`` (§5.4), and keeps it by ``ver``, so that each version
of each client is asked once.

A resource without caps, or whose caps are not (yet) known, gets every notification: it may
not filter, and losing an OMEMO device list update costs more than an unwanted one. In a
cluster, a resource on another node is judged by the caps in its directory entry against what
this node learnt from its own clients (most resources run a version some client here runs too).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ....xmpp import ns
from ....xmpp.payloads.caps import C, Caps, CapsError, compute_ver
from ....xmpp.payloads.disco import INFO, DiscoInfo
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from ...hooks import HANDLED, Handled

if TYPE_CHECKING:
    from ...sessions import Session

log = logging.getLogger(__name__)

# Versions remembered; each is a client release, so a few thousand cover any deployment.
_KNOWN = 4096
_IQ = qname(ns.CLIENT, "iq")


def caps_of(presence: Element | None) -> Caps | None:
    """The XEP-0115 caps a presence announces; None without (or with legacy, unhashed) caps."""
    if presence is None:
        return None
    c = presence.find(C)
    if c is None:
        return None
    try:
        return Caps.from_xml(c)
    except CapsError:
        return None


class Interests:
    """The +notify features of client versions, learnt by asking clients (XEP-0115 §6.2)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # ver -> the +notify nodes, or None when the answer could not be verified.
        self._known: OrderedDict[str, frozenset[str] | None] = OrderedDict()
        self._asking: dict[str, asyncio.Task[None]] = {}
        self._answers: dict[str, tuple[str, asyncio.Future[Element]]] = {}

    def wants(self, session: Session, node: str) -> bool:
        """Whether ``session`` gets notifications of ``node`` (XEP-0163 §4.2)."""
        return self.wants_by(session.presence, node)

    def wants_by(self, presence: Element | None, node: str) -> bool:
        """Whether a resource whose last presence is ``presence`` gets notifications of ``node``
        (for a resource on another cluster node, whose caps this node may have learnt from its own)."""
        caps = caps_of(presence)
        if caps is None:
            return True
        nodes = self._known.get(caps.ver)
        return nodes is None or node in nodes

    def learn(self, session: Session, caps: Caps | None) -> asyncio.Task[None] | None:
        """Start asking ``session`` about ``caps`` unless known; the task to await, if any."""
        if caps is None or caps.ver in self._known:
            if caps is not None:
                self._known.move_to_end(caps.ver)
            return None
        task = self._asking.get(caps.ver)
        if task is None:
            task = asyncio.create_task(self._ask(session, caps))
            self._asking[caps.ver] = task
            task.add_done_callback(lambda _: self._asking.pop(caps.ver, None))
        return task

    async def _ask(self, session: Session, caps: Caps) -> None:
        query_id = f"caps-{secrets.token_urlsafe(9)}"
        answer: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._answers[query_id] = (str(session.jid), answer)
        query = element(INFO, {"node": caps.disco_node})
        session.send(element(_IQ, {"type": "get", "id": query_id, "from": session.host, "to": str(session.jid)},
                             children=[query]))
        try:
            async with asyncio.timeout(self._timeout):
                reply = await answer
        except TimeoutError:
            log.info("no disco#info answer from %s for caps %s", session.jid, caps.ver)
            return
        finally:
            self._answers.pop(query_id, None)
        self._remember(caps, self._notify_nodes(session, caps, reply))

    def _notify_nodes(self, session: Session, caps: Caps, reply: Element) -> frozenset[str] | None:
        """The +notify nodes of a verified answer (XEP-0115 §5.4); None when it does not verify."""
        query = reply.find(INFO)
        if reply.get("type") != "result" or query is None:
            return None
        try:
            info = DiscoInfo.from_xml(query)
            verified = compute_ver(info, caps.hash) == caps.ver
        except ValueError:  # DiscoError, CapsError and DataFormError are ValueErrors
            verified = False
        if not verified:
            log.info("caps %s of %s do not match its disco#info", caps.ver, session.jid)
            return None
        suffix = "+notify"
        return frozenset(f[: -len(suffix)] for f in info.features if f.endswith(suffix))

    def _remember(self, caps: Caps, nodes: frozenset[str] | None) -> None:
        self._known[caps.ver] = nodes
        while len(self._known) > _KNOWN:
            self._known.popitem(last=False)

    async def answer(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        """The result or error of a disco#info query this server sent (route ``iq/host``)."""
        pending = self._answers.get(stanza.id or "")
        if pending is None or stanza.type not in ("result", "error"):
            return None
        asker, answer = pending
        if str(stanza.from_) != asker:
            return None
        if not answer.done():
            answer.set_result(stanza.el)
        return HANDLED

    async def stop(self) -> None:
        """Stop asking (the server stops)."""
        for task in list(self._asking.values()):
            task.cancel()
        await asyncio.gather(*self._asking.values(), return_exceptions=True)
