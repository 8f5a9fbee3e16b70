"""XEP-0198 stream management on server-to-server streams: no stanza lost when a link breaks.

Sending side (:class:`Unacked`, used by :mod:`.outbound`): once the peer answered ``<enable/>``
with ``<enabled/>`` (§3; no resumption between servers), every stanza written is counted and
kept until the peer acknowledges it (§4). ``<r/>`` goes out after ``[s2s] ack_after_stanzas``
unacknowledged stanzas, or ``ack_after_seconds`` after the first one, as on client streams. A
peer that leaves an ``<r/>`` unanswered for ``ack_timeout`` has a dead connection: it is cut,
and the route sends what was not acknowledged again on a new one.

Receiving side (:mod:`.inbound`): ``h`` counts a stanza once the router returned from it, so
whatever the router stores for it (offline storage, the archive) is written before the peer can
see it acknowledged, as on client streams (modules/sm.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from ...xmpp.payloads.sm import MODULUS, HandledCountError, Request, newly_acknowledged
from ...xmpp.stanza import Stanza
from ..config import S2s
from .wire import Wire

log = logging.getLogger(__name__)


class Unacked:
    """§4 on one outgoing stream: the stanzas sent and not yet acknowledged, oldest first."""

    def __init__(self, wire: Wire, config: S2s, on_timeout: Callable[[], None]) -> None:
        self.wire = wire
        self.config = config
        self.stanzas: deque[Stanza] = deque()
        # Stanzas sent since <enable/> (mod 2^32), what the peer's h is compared with.
        self.sent = 0
        # Stanzas the peer acknowledged on this stream: whether it got anywhere.
        self.acknowledged = 0
        self.requested = False
        self._on_timeout = on_timeout
        self._ask_timer: asyncio.TimerHandle | None = None
        self._ack_deadline: asyncio.TimerHandle | None = None

    def send(self, stanza: Stanza) -> None:
        """Write ``stanza``, keep it until acknowledged, and ask for an ack when it is time."""
        self.wire.send(stanza.el)
        self.stanzas.append(stanza)
        self.sent = (self.sent + 1) % MODULUS
        self._want_ack()

    def acknowledge(self, h: int) -> None:
        """§4: the peer handled ``h`` stanzas; those leave the queue. Raises HandledCountError
        when ``h`` is more than was sent."""
        count = newly_acknowledged(h, self.sent, len(self.stanzas))
        if count is None:
            raise HandledCountError(h, self.sent)
        for _ in range(count):
            self.stanzas.popleft()
        self.acknowledged += count
        self.requested = False
        if self._ack_deadline is not None:
            self._ack_deadline.cancel()
            self._ack_deadline = None
        self._want_ack()

    def request(self) -> None:
        """Send ``<r/>`` now (unless one is pending or nothing is unacknowledged); the answer is
        due within ``ack_timeout``."""
        if self._ask_timer is not None:
            self._ask_timer.cancel()
            self._ask_timer = None
        if self.requested or not self.stanzas or self.wire.closing:
            return
        self.requested = True
        self.wire.send(Request().to_xml())
        self._ack_deadline = asyncio.get_running_loop().call_later(self.config.ack_timeout, self._timed_out)

    def _want_ack(self) -> None:
        if self.requested or not self.stanzas:
            return
        if len(self.stanzas) >= self.config.ack_after_stanzas:
            self.request()
        elif self._ask_timer is None:
            self._ask_timer = asyncio.get_running_loop().call_later(self.config.ack_after_seconds, self.request)

    def _timed_out(self) -> None:
        self._ack_deadline = None
        log.info("s2s peer %s did not acknowledge within %g s; the connection counts as dead",
                 self.wire.peer, self.config.ack_timeout)
        self._on_timeout()

    def close(self) -> list[Stanza]:
        """The stream ended: stop the timers; what was not acknowledged, oldest first."""
        for timer in (self._ask_timer, self._ack_deadline):
            if timer is not None:
                timer.cancel()
        self._ask_timer = self._ack_deadline = None
        left = list(self.stanzas)
        self.stanzas.clear()
        return left
