"""XEP-0085: Chat State Notifications (v2.1, ``http://jabber.org/protocol/chatstates``).

One of five empty elements (§2): ``active``, ``composing``, ``paused``, ``inactive``, ``gone``;
a message carries at most one (§5.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import Element

from ..xml import element, qname, split

NS = "http://jabber.org/protocol/chatstates"
STATES = ("active", "composing", "paused", "inactive", "gone")

State = Literal["active", "composing", "paused", "inactive", "gone"]


class ChatStateError(ValueError):
    """Not a chat state of XEP-0085 §2."""


@dataclass(frozen=True)
class ChatState:
    """§2: the sender's participation in the conversation."""

    state: State

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ChatStateError(f"{self.state!r} is not a chat state (one of {', '.join(STATES)})")

    @classmethod
    def from_xml(cls, el: Element) -> ChatState:
        namespace, local = split(el.tag)
        if namespace != NS or local not in STATES:
            raise ChatStateError(f"expected a chat state, got {el.tag}")
        state: State = local  # type: ignore[assignment]
        return cls(state)

    def to_xml(self) -> Element:
        return element(qname(NS, self.state))

    @classmethod
    def find(cls, message: Element) -> ChatState | None:
        """The chat state a message carries (§5.6: the first one, should there be several)."""
        for child in message:
            if split(child.tag)[0] == NS:
                try:
                    return cls.from_xml(child)
                except ChatStateError:
                    return None
        return None
