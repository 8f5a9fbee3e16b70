"""The server's side of the cluster bus: directory entries for its sessions, and stanzas across nodes.

Every bound session is registered in the directory under this node with its routing state
(:mod:`.directory`: available, priority, carbons, last presence), rewritten on ``session-changed``,
and unregistered when it closes. Any stanza, whatever its kind, crosses the bus as one
:class:`~.messages.Deliver` to the node that holds its recipient; RFC 6121 §8.5 then spans the
cluster:

- a message, presence or IQ to a full JID bound on another node goes to that node (§8.5.3.1),
  which hands it to the session; an IQ request whose resource is gone by then is answered with
  service-unavailable, which travels back the same way (RFC 6120 §8.2.3);
- a chat or normal message to a bare JID goes to the most available resources cluster-wide: those
  with the highest non-negative priority, wherever they are (§8.5.2.1.1); a headline to every
  available resource. With no available resource anywhere, it goes to one node that holds
  sessions of the account, which delivers or stores it offline, so that it is stored once.

Presence (RFC 6121 §3, §4) is in :mod:`.presence`, message carbons (XEP-0280) in :mod:`.carbons`,
group chat rooms in :mod:`.groups`, roster pushes (§2.1.6) in :mod:`.roster`, PEP notifications
(XEP-0163) in :mod:`.pep`, external components (XEP-0114) in :mod:`.components`.

A node asks another what only that one knows or may do (an operator's command for a room it
serves, say) with :meth:`ClusterNode.ask`: a :class:`~.messages.Request` of a topic that the
other node's module registered (:meth:`ClusterNode.serve`), answered by a
:class:`~.messages.Reply`, within a timeout; a node that is gone, or of a version before
requests (it drops them), does not answer, and the asker says so by its name.

Message handlers run at priority -90, after archiving and the other modules that see a message
first (on the sending node, against the shared storage) and before local delivery (-100). A node
that does not take a message (it died, and the directory names it until ``node_ttl``) holds no
resource that can receive it: the message goes to the account's resources elsewhere as if that
node's were gone (a chat or normal message to one of its full JIDs as one to the bare JID). When
the bus cannot carry a message at all (Redis is away) they pass, and local delivery stores it
offline: storage is the source of truth, the bus only a fast path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import serialize
from ..background import Background
from ..hooks import HANDLED, Handled
from ..modules.message import DELIVERED, message_type
from ..modules.offline import STORE as OFFLINE
from .bus import BusUnavailable, ClusterBus, NoAnswer
from .carbons import ClusterCarbons, delivered_elsewhere
from .components import ClusterComponents
from .directory import SESSION_CHANGED, SessionInfo, describe, read
from .groups import ClusterGroups
from .messages import Deliver, Done, NodeMessage, Reply, Request
from .pep import ClusterPep
from .presence import ClusterPresence
from .roster import ClusterRoster

if TYPE_CHECKING:
    from ..app import Server
    from ..sessions import Session

log = logging.getLogger(__name__)

PRIORITY = -90

# Answers a request's body (a JSON object) with the reply's (see ClusterNode.serve).
RequestHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ClusterNode:
    """Connects one server to the cluster through ``bus``."""

    def __init__(self, server: Server, bus: ClusterBus) -> None:
        self.server = server
        self.bus = bus
        hooks = server.hooks
        hooks.add("session-bound", self._bound)
        hooks.add("session-closed", self._closed)
        hooks.add(SESSION_CHANGED, self._changed)
        hooks.add("message/full", self.to_full, PRIORITY)
        hooks.add("message/bare", self.to_bare, PRIORITY)
        hooks.add("message/self", self.to_bare, PRIORITY)
        hooks.add("iq/full", self.to_full, PRIORITY)
        self.carbons = ClusterCarbons(self)
        self.presence = ClusterPresence(self)
        self.groups = ClusterGroups(self)
        self.roster = ClusterRoster(self)
        self.pep = ClusterPep(self)
        self.components = ClusterComponents(self)
        bus.subscribe(self.arrived)
        bus.on_node_down(self._node_down)
        bus.on_reaped(self.presence.reaped)
        bus.on_recovered(self.presence.rejoined)
        # Copies posted from code that cannot wait (a room's fan-out), sent in order by one task,
        # with the answers (Done) to the nodes that asked about a room's message in between.
        self._outbox: asyncio.Queue[tuple[JID, Element] | tuple[str, Done]] = asyncio.Queue()
        self._posting = 0
        self._sender: asyncio.Task[None] | None = None
        # Topic -> the handler answering other nodes' requests of it.
        self._served: dict[str, RequestHandler] = {}
        # Token of a request this node made -> (the node asked, the future its Reply resolves).
        self._waiting: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        # Requests from other nodes being answered: each in a task of its own, so that one that
        # takes a while (a room destroyed with its archive) holds up nothing else from the bus.
        self._answering = Background(log, "answering a request from another node failed")

    @property
    def name(self) -> str:
        """This node's name."""
        return self.bus.node

    async def start(self) -> None:
        """Join the cluster."""
        self.groups.start()
        await self.bus.start()
        self._sender = asyncio.create_task(self._send_posted())

    async def stop(self) -> None:
        """Send what is posted, then leave the cluster, taking this node's directory entries along."""
        if self._sender is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._outbox.join(), 5)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        await self._answering.stop()
        await self.components.written()
        await self.bus.stop()

    # --- the directory ---------------------------------------------------------------------------

    async def _bound(self, session: Session) -> None:
        await self.bus.register(str(session.jid), self.name)
        await self._changed(session)

    async def _closed(self, session: Session) -> None:
        self.groups.forget_session(session.jid)
        await self.bus.unregister(str(session.jid))

    async def _changed(self, session: Session) -> None:
        if not session.closed:
            await self.bus.set_info(str(session.jid), describe(session))

    async def remote(self, bare: JID) -> list[SessionInfo]:
        """The sessions of account ``bare`` on other nodes, as the directory shows them."""
        if self.bus.alone():
            return []
        entries = await self.bus.entries(str(bare))
        return [read(full, entry) for full, entry in entries.items() if entry.node != self.name]

    async def stored(self, bare: JID) -> None:
        """A message for ``bare`` was stored offline here: when the account has sessions on other
        nodes, they hear of it (``announce`` of the store ``offline``) and hand it to those that can
        take it (:class:`.recovery.BusRecovery`). One may have raised its priority while the message
        was routed, after the delivery its new priority brought had read storage (XEP-0160 §2)."""
        if await self.remote(bare):
            await self.bus.announce(OFFLINE, str(bare))

    async def _node_down(self, node: str) -> None:
        log.warning("cluster node %s is gone; messages to its sessions go to offline storage", node)
        for asked, reply in self._waiting.values():
            if asked == node and not reply.done():
                reply.set_exception(NoAnswer(node, "is gone"))
        await self.groups.node_down(node)

    # --- sending ---------------------------------------------------------------------------------

    async def forward(self, node: str, stanza: Stanza | Element, to: JID | str, *, copy: bool = False,
                      ask: str = "", mark: str = "") -> bool:
        """Publish a stanza for ``to`` to ``node``; False when no live node took it. With ``ask``,
        ``node`` answers with :class:`Done` once it has handled the stanza; ``mark`` numbers a
        room's copy (:attr:`Deliver.mark`)."""
        el = stanza.el if isinstance(stanza, Stanza) else stanza
        message = Deliver(str(to), el.get("from", ""), serialize(el, None), copy, ask, mark)
        return await self.bus.publish(node, message)

    def post(self, to: JID, el: Element) -> None:
        """Send ``el`` to the session ``to`` on whichever node holds it, in the order posted, without
        waiting; dropped when no node does (like a copy for a session that is gone)."""
        self._posting += 1
        self._outbox.put_nowait((to, el))

    @property
    def posting(self) -> bool:
        """Whether posted stanzas are still on their way (what follows them must queue up behind)."""
        return self._posting > 0

    async def sent(self) -> None:
        """Return once everything posted so far has been sent on (or found unreachable)."""
        if self._sender is not None:
            await self._outbox.join()

    async def answer(self, node: str, done: Done) -> None:
        """Publish ``done`` to ``node`` after everything posted before (a room's fan-out and
        replies), so that the asker hears of the message last."""
        if self.posting:
            self._posting += 1
            self._outbox.put_nowait((node, done))
        elif not await self.bus.publish(node, done):
            log.info("node %s no longer waits for the answer %s", node, done.token)

    async def _send_posted(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            # A room's fan-out posts one copy per occupant: one directory lookup per account will do.
            where: dict[JID, dict[str, str]] = {}
            for item in batch:
                try:
                    await self._send_one(item, where)
                finally:
                    # Still posting until it is out: what the room sends next without posting (the
                    # end of an archive query after its results, a Done after the fan-out) would
                    # otherwise be published beside it and could overtake it.
                    self._posting -= 1
                    self._outbox.task_done()

    async def _send_one(self, item: tuple[JID, Element] | tuple[str, Done], where: dict[JID, dict[str, str]]) -> None:
        """Send one posted item: an answer to the node that asked, or a copy to its session's node."""
        if isinstance(item[1], Done):
            with contextlib.suppress(Exception):
                await self.bus.publish(str(item[0]), item[1])
            return
        to, el = item
        assert isinstance(to, JID)
        if self.groups.cut_off(to, el):
            return
        reached = False
        mark = self.groups.mark(to, el)
        try:
            if to.bare not in where:
                where[to.bare] = await self.bus.lookup(str(to.bare))
            node = where[to.bare].get(str(to))
            if node == self.name:
                # The session came here since it was posted.
                reached = self._hand(to, el)
            elif node is not None:
                reached = await self.forward(node, el, to, copy=True, mark=mark)
        except Exception as err:
            log.warning("could not pass a stanza for %s to its node: %s", to, err)
        if not reached:
            await self.groups.lost(to, el)

    def _hand(self, to: JID, el: Element) -> bool:
        """Hand ``el`` to the session ``to`` here; False when it is not here (any more)."""
        session = self.server.sessions.get(to)
        if session is None or session.closed:
            return False
        session.send(el)
        return True

    # --- requests to other nodes -------------------------------------------------------------------

    def serve(self, topic: str, handler: RequestHandler) -> None:
        """Answer other nodes' requests of ``topic`` with ``handler``."""
        self._served[topic] = handler

    async def ask(self, node: str, topic: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """``node``'s reply to a request of ``topic`` with ``body``; :class:`NoAnswer` when it does
        not take the request or does not answer within ``timeout`` seconds."""
        token = f"{self.name}:{secrets.token_hex(12)}"
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (node, reply)
        try:
            if not await self.bus.publish(node, Request(token, topic, body)):
                raise NoAnswer(node, "did not take the request (it is gone, or the cluster bus is away)")
            return await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise NoAnswer(node, f"did not answer within {timeout:g} s (it may run a version that does not "
                           "know the request, or be busy: what was asked may be done yet)") from None
        finally:
            self._waiting.pop(token, None)

    async def ask_all(self, topic: str, body: dict[str, Any],
                      timeout: float) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Every other live node's reply to a request of ``topic`` with ``body``, asked all at once:
        the replies by node, and why each node that gave none did not; :class:`BusUnavailable`
        when the live nodes cannot be read."""
        if self.bus.alone():
            return {}, {}
        try:
            live = await self.bus.nodes()
        except Exception as err:
            # Whatever the backend raises (Redis away, a timeout): the caller can only say so.
            raise BusUnavailable(f"the live nodes cannot be read: {err}") from err
        others = sorted(node for node in live if node != self.name)
        outcomes = await asyncio.gather(*(self.ask(node, topic, body, timeout) for node in others),
                                        return_exceptions=True)
        replies: dict[str, dict[str, Any]] = {}
        silent: dict[str, str] = {}
        for node, outcome in zip(others, outcomes, strict=True):
            if isinstance(outcome, NoAnswer):
                silent[node] = str(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                replies[node] = outcome
        return replies, silent

    async def _answer(self, request: Request) -> None:
        """Answer another node's request with the handler of its topic."""
        handler = self._served.get(request.topic)
        body: dict[str, Any]
        if handler is None:
            body = {"ok": False, "error": f"node {self.name} does not serve {request.topic!r} requests"}
        else:
            try:
                body = await handler(request.body)
            except Exception:
                log.exception("a %s request from node %s failed", request.topic, request.asker)
                body = {"ok": False, "error": f"node {self.name} failed on the request; its log says why"}
        if not await self.bus.publish(request.asker, Reply(request.token, body)):
            log.info("node %s no longer waits for the reply %s", request.asker, request.token)

    # --- messages and IQs --------------------------------------------------------------------------

    async def to_full(self, stanza: Stanza, origin: Session | None) -> Handled | None:
        """RFC 6121 §8.5.3.1 across nodes: the resource is connected, just not here.

        A chat or normal message for a resource that is connected nowhere goes on as one to the
        bare JID (§8.5.3.2.1, as the message module does), so the account's resources on other
        nodes get it.
        """
        to = stanza.to
        assert to is not None
        if self.groups.keep_refusal(stanza):
            return HANDLED
        if self.server.sessions.get(to) is not None:
            return None
        if self.posting and stanza.from_ is not None and self.groups.hosts(stanza.from_):
            # A room's reply (the end of an archive query, an error) comes after what it posted.
            self.post(to, stanza.el)
            return HANDLED
        node = None if self.bus.alone() else (await self.bus.lookup(str(to.bare))).get(str(to))
        if node is None or node == self.name:
            if stanza.kind == "message" and message_type(stanza) in ("chat", "normal"):
                return await self._to_account(stanza, to.bare)
            return None
        if not await self.forward(node, stanza, to):
            log.info("node %s did not take a stanza for %s; handling it here", node, to)
            if stanza.kind == "message" and message_type(stanza) in ("chat", "normal"):
                # Its node died (the directory names it until node_ttl): connected nowhere then.
                return await self._to_account(stanza, to.bare, frozenset({node}))
            return None
        if stanza.kind == "message":
            await self._delivered(stanza, [], frozenset({str(to)}))
        return HANDLED

    async def to_bare(self, stanza: Stanza, origin: Session | None) -> Handled | None:
        """RFC 6121 §8.5.2.1.1 across nodes, for messages to an account with sessions elsewhere."""
        bare = stanza.to.bare if stanza.to is not None else (origin.jid.bare if origin is not None else None)
        if bare is None:
            return None
        return await self._to_account(stanza, bare)

    async def _to_account(self, stanza: Stanza, bare: JID, dead: frozenset[str] = frozenset()) -> Handled | None:
        """§8.5.2.1.1 among the account's resources on every node but the ``dead`` ones (those that
        did not take a message: they hold no session that can receive it); ``dead`` grows with
        each node that does not take its share, and the choice is made again without it."""
        kind = message_type(stanza)
        if kind not in ("chat", "normal", "headline"):
            return None  # groupchat and error messages to an account: the message module's rules
        if stanza.to is None:
            stanza.set_to(bare)
        remote = [r for r in await self.remote(bare) if r.node not in dead]
        if not remote:
            return None
        local = [s for s in self.server.sessions.resources(bare) if s.available and s.priority >= 0 and not s.closed]
        reachable = [r for r in remote if r.reachable]
        if kind == "headline":
            there = reachable  # §8.5.2.1.1 (4): every available resource
        elif local or reachable:
            top = max([s.priority for s in local] + [r.priority for r in reachable])
            local = [s for s in local if s.priority == top]
            there = [r for r in reachable if r.priority == top]
        else:
            # Nobody available: one node that holds sessions decides, so it is stored once (§8.5.2.2.1).
            node = min(r.node for r in remote)
            if await self.forward(node, stanza, bare):
                return HANDLED
            return await self._to_account(stanza, bare, dead | {node})
        if not there:
            return None  # only resources here: the message module delivers to them
        taken = {r.jid: await self.forward(r.node, stanza, r.jid) for r in there}
        got = frozenset(jid for jid, ok in taken.items() if ok)
        if not got:
            if local:
                return None  # the message module delivers to the resources here
            return await self._to_account(stanza, bare, dead | {r.node for r in there})
        for session in local:
            session.send(stanza.el)
        await self._delivered(stanza, local, got)
        return HANDLED

    async def _delivered(self, stanza: Stanza, sessions: Sequence[Session], elsewhere: frozenset[str]) -> None:
        """``message/delivered`` for a message delivered (also) on other nodes, naming those resources."""
        hooks = self.server.hooks
        if not hooks.has(DELIVERED):
            return
        with delivered_elsewhere(elsewhere):
            await hooks.fire_all(DELIVERED, stanza, sessions)

    # --- what arrives ------------------------------------------------------------------------------

    async def arrived(self, message: NodeMessage) -> None:
        """Take a stanza another node routed here: for a room this node owns, or for sessions here;
        or the answer to a stanza this node asked about; or another node's request, or the reply
        to one of this node's."""
        if isinstance(message, Request):
            self._answering.spawn(self._answer(message))
            return
        if isinstance(message, Reply):
            waiting = self._waiting.get(message.token)
            if waiting is not None and not waiting[1].done():
                waiting[1].set_result(message.body)
            return
        if isinstance(message, Done):
            refusal = None
            if message.refusal:
                try:
                    refusal = parse_frame(message.refusal.encode(), self.server.config.limits.max_stanza_size)
                except StreamError as err:
                    # Unanswered, the asker times out and its client sends the message again.
                    log.error("dropping an answer from the bus whose refusal does not parse: %s", err)
                    return
            self.groups.done(message.token, refusal)
            return
        try:
            el = parse_frame(message.xml.encode(), self.server.config.limits.max_stanza_size)
            stanza = Stanza.parse(el)
            to = JID.parse(message.to)
        except (StreamError, StanzaError, JIDError) as err:
            log.error("dropping a stanza from the bus that does not parse: %s", err)
            return
        if message.mark and not await self._in_order(stanza, to, message.mark):
            return
        if self.groups.hosts(to):
            await self.groups.arrived(stanza, message.ask)
        elif to.domain in self.server.config.components:
            await self.components.arrived(stanza)
        elif to.local is None:
            log.error("dropping a bus delivery for %s, which is no account", to)
        elif stanza.kind == "presence":
            self.presence.arrived(stanza, to)
        elif to.resource is not None:
            await self._to_session(stanza, to, copy=message.copy)
        elif stanza.kind == "message":
            await self._to_account_here(stanza, to)
        elif stanza.kind == "iq" and stanza.type in ("result", "error"):
            # The answer to a request a module of this node made from the account (a push
            # publish), which came in on the node the answering component is linked to.
            await self.server.router.route(stanza, None)
        else:
            log.error("dropping a bus delivery of an IQ request to the bare JID %s", to)

    async def _in_order(self, stanza: Stanza, to: JID, mark: str) -> bool:
        """Whether a room's numbered copy (any kind) goes on to the session ``to``: it is here, and
        no copy before it went missing (see :mod:`.groups`)."""
        session = self.server.sessions.get(to)
        if session is None or session.closed:
            return False
        return await self.groups.in_order(to, stanza, mark)

    async def _to_session(self, stanza: Stanza, to: JID, *, copy: bool) -> None:
        """RFC 6121 §8.5.3.1 on the node that holds the session; §8.5.3.2 when it went meanwhile."""
        session = self.server.sessions.get(to)
        if session is not None and not session.closed:
            session.send(stanza.el)
        elif stanza.kind == "iq" and stanza.type in ("get", "set") and not copy:
            await self.server.router.send(stanza.error(StanzaError("service-unavailable", "that resource is gone")))
        elif stanza.kind == "message" and not copy and message_type(stanza) in ("chat", "normal"):
            await self._offline(stanza)

    async def _to_account_here(self, stanza: Stanza, to: JID) -> None:
        """RFC 6121 §8.5.2.1.1 among this node's resources, or offline storage (§8.5.2.2.1)."""
        available = [s for s in self.server.sessions.resources(to) if s.available and s.priority >= 0 and not s.closed]
        if message_type(stanza) != "headline" and available:
            top = max(s.priority for s in available)
            available = [s for s in available if s.priority == top]
        if not available:
            if message_type(stanza) != "headline":
                await self._offline(stanza)
                await self._delivered(stanza, [], frozenset())
            return
        for session in available:
            session.send(stanza.el)
        await self._delivered(stanza, available, frozenset())

    async def _offline(self, stanza: Stanza) -> None:
        # Gone between the lookup and now: offline storage, as for any account without a resource.
        if await self.server.hooks.fire("message/offline", stanza) is None:
            log.info("a message for %s crossed the bus but nobody could take it", stanza.to)
