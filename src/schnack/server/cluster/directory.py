"""What the cluster directory says about a session: the routing state its node attaches to it.

Every node attaches to each of its sessions' directory entries (``ClusterBus.set_info``) what other
nodes need to route for it: whether it is available (RFC 6121 §4.2), its priority (§4.7.2.3, for
bare-JID delivery, §8.5.2.1.1), whether it enabled carbons (XEP-0280 §4), its last available
presence (for probes, §4.3.2, and for the caps that filter PEP notifications, XEP-0163 §4.2),
whether it asked for the roster (an interested resource gets roster pushes, §2.1.6), where it
sent directed presence (so that the node that reaps a dead node can retract it, §4.6.3), since
when it hibernates, its connection gone (XEP-0198 §5: for XEP-0357 push on other nodes and for
last activity, XEP-0012), and the push registrations it holds. The node writes it again whenever
one of these changes (the event ``session-changed``), so the directory lags a session's own node
by one bus write at most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...xmpp.xml import serialize
from ..modules.carbons import CarbonsState
from ..modules.directed import Directed
from ..modules.push import PushSession
from ..modules.sm import SmState
from .bus import Entry

if TYPE_CHECKING:
    from ..sessions import Session

SESSION_CHANGED = "session-changed"


@dataclass(frozen=True)
class SessionInfo:
    """A session as the directory shows it to other nodes."""

    jid: str
    node: str
    available: bool = False
    priority: int = 0
    carbons: bool = False
    presence: str = ""
    interested: bool = False
    directed: tuple[str, ...] = ()
    push: tuple[str, ...] = ()
    # When it began to hibernate (time.time()); None while a connection holds it.
    hibernating_since: float | None = None

    @property
    def hibernating(self) -> bool:
        return self.hibernating_since is not None

    @property
    def reachable(self) -> bool:
        """Whether a message to the bare JID may go to it (RFC 6121 §8.5.2.1.1: non-negative priority)."""
        return self.available and self.priority >= 0


def describe(session: Session) -> str:
    """The info a node attaches to ``session``'s directory entry."""
    presence = serialize(session.presence, None) if session.available and session.presence is not None else ""
    info: dict[str, object] = {"a": session.available, "p": session.priority,
                               "c": session.slot(CarbonsState).enabled, "x": presence}
    # Written only when set, so that the common entry stays short.
    if session.interested:
        info["i"] = True
    directed = session.slot(Directed).to
    if directed:
        info["d"] = sorted(map(str, directed))
    push = session.slot(PushSession).keys
    if push:
        info["k"] = sorted(push)
    hibernating_since = session.slot(SmState).hibernating_since
    if hibernating_since is not None:
        info["h"] = hibernating_since
    return json.dumps(info, separators=(",", ":"))


def read(full_jid: str, entry: Entry) -> SessionInfo:
    """A directory entry as a :class:`SessionInfo`; an entry without (readable) info is a session
    that has not sent initial presence yet."""
    try:
        data = json.loads(entry.info) if entry.info else {}
        directed, push = data.get("d", []), data.get("k", [])
        if not isinstance(directed, list) or not isinstance(push, list):
            raise TypeError("directed presence or push registrations are not a list")
        hibernating_since = data.get("h")
        return SessionInfo(full_jid, entry.node, bool(data.get("a", False)), int(data.get("p", 0)),
                           bool(data.get("c", False)), str(data.get("x", "")), bool(data.get("i", False)),
                           tuple(map(str, directed)), tuple(map(str, push)),
                           None if hibernating_since is None else float(hibernating_since))
    except (ValueError, TypeError, AttributeError):
        return SessionInfo(full_jid, entry.node)
