"""RFC 6121 §4.6: where a session sent directed presence, which the presence module keeps and
the modules that withdraw or follow it (blocking, carbons) read."""

from __future__ import annotations

from dataclasses import dataclass

from ...xmpp.jid import JID


@dataclass(slots=True)
class Directed:
    """Per session: where it sent directed available presence (RFC 6121 §4.6).

    Replaced, not changed, when presence is directed somewhere: most sessions never direct any,
    and the empty frozenset is shared where an empty set would cost 216 bytes per session.
    """

    to: frozenset[JID] = frozenset()
