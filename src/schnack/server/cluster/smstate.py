"""Stream management resumption records shared by the nodes of a cluster (XEP-0198 §5).

A resumable session lives in the memory of the node that holds its connection: its outbound
queue, presence and module state cannot move to another node. What the cluster shares, in Redis,
is one small record per SM-ID: the account, the node that owns the session and, once the session
ended, the inbound count ``h`` it ended with. A client that comes back on another node (its node
was drained or died, the load balancer picked another one) then gets a clean ``<failed/>`` with
item-not-found from that node, and with the ``h`` of the ended session where it is known, so that it
sends again only what the old session did not handle. Nothing is lost either way: what the old
session had not delivered was archived before it was queued, and went to offline storage when the
session ended (or is found in the archive, when the node died; for an account whose archive
preference is 'never', XEP-0441, it is lost then, docs/deploy.md).

A session whose owner still runs (it hibernates there, or its connection is not known to be dead
yet) is ended by its owner on request: the node asked to resume it publishes the SM-ID on the
owner's channel and waits a moment for the record to show the final ``h``; the owner writes it
once the session's queue is in offline storage, so the new session finds it there at login.

Keys: ``{prefix}sm:{SM-ID}`` holds ``{"account", "node", "h"}`` as JSON, expiring after the
resumption time while the session lives and after :data:`ENDED_TTL` once it ended; the channel
``{prefix}sm-end:{node}`` carries the SM-IDs a node is asked to end. Failures to reach Redis are
logged and tolerated: without a record the answer is item-not-found without ``h``.

Behind Redis Sentinel (a ``redis+sentinel://`` or ``rediss+sentinel://`` URL, see sentinel.py) the
listener asks the sentinels each second which server is the primary, as the cluster bus does at
each heartbeat: after a failover the records go to the promoted replica and the node listens
there, not on an old primary that hangs or is cut off from the sentinels but keeps its
connections open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..config import Cluster
from .sentinel import off_primary, open_redis, reason, refresh_primary

log = logging.getLogger(__name__)

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
# How long the h of an ended session is kept for a client that comes back late.
ENDED_TTL = 3600
_OP_TIMEOUT = 1.0
# How long a node asked to resume another node's live session waits for it to end there.
_HANDOVER_WAIT = 2.0
_MAX_BACKOFF = 5.0
# Behind Sentinel, how often the listener asks the sentinels which server is the primary.
_FOLLOW_INTERVAL = 1.0

EndHandler = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class SmRecord:
    """Whose session an SM-ID names, on which node, and its inbound ``h`` once it ended."""

    account: str
    node: str
    h: int | None = None


class SmRecords:
    """The cluster's resumption records in Redis, and requests to end a session on its node."""

    def __init__(self, url: str, prefix: str, node: str) -> None:
        self._prefix = prefix
        self.node = node
        self._redis: aioredis.Redis = open_redis(url, _OP_TIMEOUT)
        self._listener: asyncio.Task[None] | None = None
        # The loop time the sentinels were last asked which server is the primary.
        self._followed = float("-inf")

    def _key(self, sm_id: str) -> str:
        return f"{self._prefix}sm:{sm_id}"

    async def put(self, sm_id: str, record: SmRecord, ttl: int) -> None:
        """Write the record of ``sm_id``, kept for ``ttl`` seconds."""
        value = json.dumps({"account": record.account, "node": record.node, "h": record.h})
        try:
            await asyncio.wait_for(self._redis.set(self._key(sm_id), value, ex=ttl), _OP_TIMEOUT)
        except _ERRORS as err:
            log.warning("could not record the stream management session %s in Redis: %s", sm_id, err)

    async def get(self, sm_id: str) -> SmRecord | None:
        """The record of ``sm_id``; None when there is none, or Redis cannot be reached."""
        try:
            value = await asyncio.wait_for(self._redis.get(self._key(sm_id)), _OP_TIMEOUT)
        except _ERRORS as err:
            log.warning("could not look up the stream management session %s in Redis: %s", sm_id, err)
            return None
        if value is None:
            return None
        try:
            data = json.loads(value)
            h = data["h"]
            return SmRecord(str(data["account"]), str(data["node"]), int(h) if h is not None else None)
        except (ValueError, KeyError, TypeError):
            log.error("unreadable stream management record for %s", sm_id)
            return None

    async def take_over(self, sm_id: str, owner: str) -> SmRecord | None:
        """Ask ``owner`` to end the session ``sm_id`` and wait (briefly) until its record shows
        the final ``h``; the record as it is then."""
        try:
            listening = await asyncio.wait_for(self._redis.publish(f"{self._prefix}sm-end:{owner}", sm_id),
                                               _OP_TIMEOUT)
        except _ERRORS as err:
            log.warning("could not ask node %s to end the session %s: %s", owner, sm_id, err)
            return None
        if not listening:
            # The owner is gone (killed): its sessions ended with it, their h unknown.
            return await self.get(sm_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _HANDOVER_WAIT
        record = await self.get(sm_id)
        while record is not None and record.h is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
            record = await self.get(sm_id)
        return record

    def listen(self, handler: EndHandler) -> None:
        """Call ``handler`` with every SM-ID another node asks this node to end; behind Sentinel,
        follow the primary the sentinels name meanwhile."""
        self._listener = asyncio.create_task(self._listen(handler))

    async def _listen(self, handler: EndHandler) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(f"{self._prefix}sm-end:{self.node}"), _OP_TIMEOUT)
                delay = 0.1
                # A primary that hangs or is cut off from the sentinels keeps this subscription open
                # after they promoted a replica, where the other nodes publish now.
                while not off_primary(self._redis, pubsub.connection):
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        try:
                            await handler(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))
                        except Exception:
                            log.exception("ending a stream management session on request failed")
                    await self._follow_primary()
                log.info("the Redis primary moved; listening for stream management end requests there")
            except _ERRORS as err:
                log.debug("the stream management channel is away (%s); listening again", err)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _follow_primary(self) -> None:
        """Behind Sentinel, at most once per :data:`_FOLLOW_INTERVAL`: ask the sentinels for the
        primary, so that the client's next commands go to a promoted replica (nothing to ask for
        one plain Redis)."""
        now = asyncio.get_running_loop().time()
        if now - self._followed < _FOLLOW_INTERVAL:
            return
        self._followed = now
        try:
            await asyncio.wait_for(refresh_primary(self._redis), _OP_TIMEOUT)
        except _ERRORS as err:
            # The cluster bus warns about it; the primary known so far may well be fine.
            log.debug("the sentinels name no Redis primary (%s); staying with the one known", reason(err))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._redis.aclose()


def open_records(config: Cluster) -> SmRecords | None:
    """The shared records in cluster mode; None for a single node, whose own memory suffices."""
    if config.redis_url is None:
        return None
    return SmRecords(config.redis_url, config.key_prefix, config.node_name)
