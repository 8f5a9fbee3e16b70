"""XEP-0202: how far this device's clock is off the server's.

Messages read from the archive carry the server's time (XEP-0203, XEP-0313); live ones are
stamped on arrival. On a device whose clock is off (set by hand, a phone without network time)
the two kinds then interleave wrongly in a conversation, and "the last 30 days" of the archive
catch-up start at the wrong day. After each login the client asks the server's time and keeps
the offset in the store (:meth:`Store.now`), which stamps messages from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.payloads.entity_time import TIME, EntityTime, EntityTimeError, query
from ...xmpp.xml import element, qname
from ..errors import ClientError

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

# An error below this is left alone: a clock kept by network time is closer than one round trip
# over a mobile link can measure, and a correction that flips with every login would reorder
# messages that arrived in the same second.
TOLERANCE = timedelta(seconds=2)


class Clock:
    """Measures the offset after every login, in the background (the login does not wait)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._task: asyncio.Task[None] | None = None
        client.on_connect(self._on_connect)

    async def _on_connect(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._measure())

    async def _measure(self) -> None:
        try:
            offset = await self.measure()
        except ClientError as err:
            # A server without XEP-0202, or a link gone: the offset known so far stays.
            log.debug("the server's time is not known: %s", err)
            return
        except EntityTimeError as err:
            log.warning("the server's time could not be read: %s", err)
            return
        self.client.store.set_clock_offset(offset)

    async def measure(self) -> timedelta:
        """How far the server's clock is ahead of this device's, zero within what can be told."""
        sent = datetime.now(UTC)
        reply = await self.client.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": self.client.account.domain},
                                             children=[query()]))
        received = datetime.now(UTC)
        payload = reply.find(TIME)
        if payload is None:
            raise EntityTimeError("the server's answer holds no <time/>")
        told = EntityTime.from_xml(payload).when
        trip = received - sent
        offset = told - (sent + trip / 2)
        return offset if abs(offset) > max(TOLERANCE, trip) else timedelta()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
