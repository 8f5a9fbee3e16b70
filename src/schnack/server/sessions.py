"""Client sessions and the registry of who is connected (RFC 6120 §7, RFC 6121 §4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar
from xml.etree.ElementTree import Element

from ..xmpp.errors import StreamError
from ..xmpp.jid import JID

T = TypeVar("T")

Forward = Callable[[Element], None]
# A stage of a session's output: it gets each element and the next stage, and passes the element
# on (at once, later, or never) by calling that.
OutputStage = Callable[[Element, Forward], None]


class Transport(Protocol):
    """What a session needs from its connection: send an element, close the stream."""

    def send(self, el: Element) -> None: ...

    def close(self, error: StreamError | None = None) -> None: ...


class _Link:
    """An output stage joined to what comes after it: a session's output runs through the
    :meth:`send` of a chain of these. Every session holds one per stage, and a link with its bound
    method takes 112 bytes where a closure with its two cells takes 288; calling the method costs
    about as much as calling the closure (``__call__`` would cost 50 ns more per stage)."""

    __slots__ = ("forward", "stage")

    def __init__(self, stage: OutputStage, forward: Forward) -> None:
        self.stage = stage
        self.forward = forward

    def send(self, el: Element) -> None:
        self.stage(el, self.forward)


class Session:
    """A bound client resource (RFC 6120 §7).

    Modules keep their per-session state in a typed slot (:meth:`slot`), never in ad-hoc fields.
    """

    __slots__ = (
        "_send",
        "_slots",
        "_stages",
        "available",
        "closed",
        "id",
        "interested",
        "jid",
        "peer",
        "presence",
        "priority",
        "secure",
        "transport",
    )  # fmt: skip

    def __init__(self, jid: JID, transport: Transport, *, id: str, secure: bool, peer: str) -> None:
        self.jid = jid
        self.transport = transport
        self.id = id
        self.secure = secure
        self.peer = peer
        # RFC 6121 §4.2: available once initial presence was sent; interested once the roster was asked for.
        self.available = False
        self.interested = False
        self.presence: Element | None = None
        self.priority = 0
        self.closed = False
        self._slots: dict[type, object] = {}
        self._stages: list[tuple[int, int, OutputStage]] = []
        self._send: Forward = self._to_transport

    @property
    def username(self) -> str:
        """The account's localpart."""
        assert self.jid.local is not None
        return self.jid.local

    @property
    def host(self) -> str:
        """The account's domain."""
        return self.jid.domain

    def send(self, el: Element) -> None:
        """Queue ``el`` for the client, through the output stages; a closed session drops what
        reaches the transport (callers route offline first)."""
        self._send(el)

    def _to_transport(self, el: Element) -> None:
        if not self.closed:
            self.transport.send(el)

    def add_output_stage(self, stage: OutputStage, priority: int = 0) -> None:
        """Put ``stage`` in the way of everything sent to this client; higher priority sees it first.

        Modules that hold back, count or queue a session's output (client state indication,
        stream management) do it here, so each sees what the stages before it let through.
        """
        self._stages.append((-priority, len(self._stages), stage))
        self._stages.sort(key=lambda entry: entry[:2])
        send: Forward = self._to_transport
        for _, _, each in reversed(self._stages):
            send = _Link(each, send).send
        self._send = send

    def close(self, error: StreamError | None = None) -> None:
        """Close the client's stream, with a stream error if given."""
        self.transport.close(error)

    def slot(self, cls: type[T]) -> T:
        """The instance of ``cls`` kept for this session, created on first use."""
        try:
            return self._slots[cls]  # type: ignore[return-value]
        except KeyError:
            value = self._slots[cls] = cls()
            return value

    def __repr__(self) -> str:
        return f"<Session {self.jid} {self.peer}>"


class SessionRegistry:
    """Every bound session of this node, by bare JID and resource."""

    def __init__(self) -> None:
        self._by_bare: dict[JID, dict[str, Session]] = {}
        self._count = 0

    def add(self, session: Session) -> Session | None:
        """Register ``session``; return the session it replaces on the same full JID, if any."""
        resources = self._by_bare.setdefault(session.jid.bare, {})
        assert session.jid.resource is not None
        old = resources.get(session.jid.resource)
        resources[session.jid.resource] = session
        if old is None:
            self._count += 1
        return old

    def remove(self, session: Session) -> bool:
        """Unregister ``session`` if it is still the one bound to its full JID."""
        bare = session.jid.bare
        resources = self._by_bare.get(bare)
        if not resources or resources.get(session.jid.resource or "") is not session:
            return False
        del resources[session.jid.resource or ""]
        if not resources:
            del self._by_bare[bare]
        self._count -= 1
        return True

    def get(self, jid: JID) -> Session | None:
        """The session bound to full JID ``jid``."""
        resources = self._by_bare.get(jid.bare)
        return resources.get(jid.resource or "") if resources else None

    def resources(self, bare: JID) -> list[Session]:
        """All sessions of the account ``bare``."""
        resources = self._by_bare.get(bare)
        return list(resources.values()) if resources else []

    def is_online(self, bare: JID) -> bool:
        """Whether the account has any bound session."""
        return bare in self._by_bare

    def __iter__(self) -> Iterator[Session]:
        for resources in list(self._by_bare.values()):
            yield from list(resources.values())

    def __len__(self) -> int:
        return self._count
