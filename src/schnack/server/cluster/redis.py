"""The Redis cluster bus (redis-py asyncio): a channel per node, the directory in hashes, TTL heartbeats.

Keys, under a prefix (``schnack:`` by default):

- ``hb:{node}``: the node's heartbeat, a string that expires after ``node_ttl``;
- ``nodes``: every node that joined, node -> its last heartbeat value;
- ``dir:{bare JID}``: the directory of one account, full JID -> node;
- ``sess:{node}``: the full JIDs a node registered, to drop them when it dies;
- ``info:{bare JID}``: what the holding node attached to each full JID (``set_info``), dropped with it;
- ``claim:{name}``: the node that owns a name (``claim``), valid while that node heartbeats;
- ``once:{name}``: a name marked by ``once``, expiring after its time;
- ``lock:{name}``: the holder of a lock (``lock``: its node and a token of its own), valid while
  that node heartbeats and for ``_LOCK_EXPIRY_MS`` at most.

Channels: ``to:{node}`` carries messages for one node, ``all`` the dead-node announcements.
Every change that touches more than one key runs as one Lua script, so a node that dies halfway
leaves no half-written entry. Each heartbeat also reaps nodes whose heartbeat key expired. The
directory reads and publishes that messages make and that are issued while others are on their
way share one pipeline, one round trip.

When Redis goes away, the node keeps serving its own clients: publishing fails (the caller stores
the stanza instead), directory writes and announcements are remembered locally, and the listener
reconnects with backoff. Once Redis answers again, the node writes its own sessions back into the
directory (a restarted Redis has forgotten them, and other nodes may have reaped this one
meanwhile) and publishes the announcements it could not. From half of ``node_ttl`` after its
last heartbeat that went through, the node is no member (``is_member``): the others declare it
dead after ``node_ttl``. A node that finds its heartbeat gone joins again as another process (a
new ``started``).

Behind Redis Sentinel (a ``redis+sentinel://`` URL, or ``rediss+sentinel://`` for TLS, see
sentinel.py) each heartbeat first asks the sentinels which server is the primary. When a failover
promoted a replica, the node recovers as after an outage: the promoted replica may lack the last
writes the old primary took, so the node writes its sessions there again, and it subscribes there
too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ..background import Background
from .bus import (
    BusUnavailable,
    ChangedHandler,
    Entry,
    MessageHandler,
    NodeDownHandler,
    NodeInfo,
    ReapedHandler,
    RecoveredHandler,
    ResubscribedHandler,
    bare_of,
    is_session,
)
from .messages import NODE_MESSAGES, BusMessageError, Changed, NodeDown, NodeMessage, decode, encode
from .sentinel import (
    Address,
    current_primary,
    is_sentinel_url,
    off_primary,
    open_redis,
    reason,
    redact,
    refresh_primary,
)

log = logging.getLogger(__name__)

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
_MAX_BACKOFF = 5.0

# KEYS: hb:{node}, nodes. ARGV: value, ttl in ms, node. Returns whether the heartbeat was still there.
_HEARTBEAT = """
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return existed
"""

# KEYS: dir:{bare}, sess:{node}, info:{bare}. ARGV: full JID, node.
_REGISTER = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: dir:{bare}, sess:{node}, info:{bare}. ARGV: full JID, node. Another node may have taken the JID over.
_UNREGISTER = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: hb:{node}, nodes, sess:{node}. ARGV: node, prefix. Drops a node whose heartbeat expired;
# returns, for the one caller that did it (so only that one announces the death), 1 followed by
# each dropped full JID and its info.
_REAP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
local out = {1}
for _, full in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local slash = string.find(full, '/', 1, true)
  local bare = slash and string.sub(full, 1, slash - 1) or full
  local key = ARGV[2] .. 'dir:' .. bare
  if redis.call('HGET', key, full) == ARGV[1] then
    redis.call('HDEL', key, full)
    local info = ARGV[2] .. 'info:' .. bare
    table.insert(out, full)
    table.insert(out, redis.call('HGET', info, full) or '')
    redis.call('HDEL', info, full)
  end
end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
return out
"""

# KEYS: dir:{bare}, info:{bare}. ARGV: full JID, node, info. Only the holding node writes it.
_SET_INFO = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

# KEYS: dir:{bare}, info:{bare}. ARGV: prefix. Live entries as full JID, node, info triples.
_ENTRIES = """
local out = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if redis.call('EXISTS', ARGV[1] .. 'hb:' .. entries[i + 1]) == 1 then
    table.insert(out, entries[i])
    table.insert(out, entries[i + 1])
    table.insert(out, redis.call('HGET', KEYS[2], entries[i]) or '')
  end
end
return out
"""

# KEYS: claim:{name}. ARGV: node, prefix. The owner while it heartbeats, else this node.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[2] .. 'hb:' .. owner) == 1 then return owner end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

# KEYS: claim:{name}. ARGV: prefix. The owner while it heartbeats, else nothing (claims nothing).
_PEEK = """
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[1] .. 'hb:' .. owner) == 1 then return owner end
return false
"""

# KEYS: dir:{bare}. ARGV: prefix. The entries whose node still heartbeats.
_LOOKUP = """
local out = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if redis.call('EXISTS', ARGV[1] .. 'hb:' .. entries[i + 1]) == 1 then
    table.insert(out, entries[i])
    table.insert(out, entries[i + 1])
  end
end
return out
"""

# KEYS: sess:{node}. ARGV: node, prefix, then full JIDs. Rewrites this node's own entries.
_RESYNC = """
for _, full in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local slash = string.find(full, '/', 1, true)
  local bare = slash and string.sub(full, 1, slash - 1) or full
  local key = ARGV[2] .. 'dir:' .. bare
  if redis.call('HGET', key, full) == ARGV[1] then redis.call('HDEL', key, full) end
end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV do
  local full = ARGV[i]
  local slash = string.find(full, '/', 1, true)
  local bare = slash and string.sub(full, 1, slash - 1) or full
  redis.call('HSET', ARGV[2] .. 'dir:' .. bare, full, ARGV[1])
  redis.call('SADD', KEYS[1], full)
end
return #ARGV - 2
"""


# KEYS: lock:{name}. ARGV: holder (node/token), prefix, expiry in ms. Takes the lock unless a
# node that still heartbeats holds it; 1 if taken.
_LOCK = """
local held = redis.call('GET', KEYS[1])
if held then
  local node = string.match(held, '^(.*)/[^/]*$')
  if node and redis.call('EXISTS', ARGV[2] .. 'hb:' .. node) == 1 then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

# KEYS: lock:{name}. ARGV: holder. Lets go of the lock if that holder has it.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# How long a lock is held at most: far longer than the storage steps a lock keeps apart, so that
# only a node that lost track of one (its task gone without letting go) holds it that long.
_LOCK_EXPIRY_MS = 30_000
# A node waiting for a lock asks again after the first pause, doubled each time up to the second.
_LOCK_RETRY = (0.002, 0.05)


# A command waiting for its round trip: the script it runs (or _PUBLISH), its keys and arguments,
# and the caller.
_Queued = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]
_PUBLISH = "publish"


def _answer(waiting: asyncio.Future[Any], outcome: Any) -> None:
    if not waiting.done():
        if isinstance(outcome, BaseException):
            waiting.set_exception(outcome)
        else:
            waiting.set_result(outcome)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class ClusterUnavailable(ConnectionError):
    """Redis could not be reached when the node started."""


class RedisBus:
    """A cluster node on Redis."""

    def __init__(self, url: str, node: str, *, prefix: str = "schnack:", heartbeat_interval: float = 1.0,
                 node_ttl: float = 5.0, op_timeout: float = 2.0, address: str = "") -> None:
        self._url = url
        self._address = address
        self._node = node
        self._prefix = prefix
        self._interval = heartbeat_interval
        self._ttl = node_ttl
        self._op_timeout = op_timeout
        # Raw replies: a stray non-UTF-8 publish must reach decode() and be dropped there, not
        # break the subscriber's connection.
        self._redis: aioredis.Redis = open_redis(url, op_timeout)
        # The primary the sentinels named when this node last wrote (None without Sentinel).
        self._primary: Address | None = None
        self._sentinel = is_sentinel_url(url)
        self._sentinels_away = False
        self._scripts = {name: self._redis.register_script(body) for name, body in (
            ("heartbeat", _HEARTBEAT), ("register", _REGISTER), ("unregister", _UNREGISTER),
            ("reap", _REAP), ("lookup", _LOOKUP), ("resync", _RESYNC), ("set_info", _SET_INFO),
            ("entries", _ENTRIES), ("claim", _CLAIM), ("peek", _PEEK), ("lock", _LOCK), ("unlock", _UNLOCK),
        )}
        # The commands of messages (directory reads, publishes) waiting to go out, and the task
        # sending them.
        self._queued: list[_Queued] = []
        self._sender: asyncio.Task[None] | None = None
        self._handlers: list[MessageHandler] = []
        self._down_handlers: list[NodeDownHandler] = []
        self._changed_handlers: list[ChangedHandler] = []
        self._reaped_handlers: list[ReapedHandler] = []
        # Called once Redis is back after an outage.
        self._recovered_handlers: list[RecoveredHandler] = []
        self._resubscribed_handlers: list[ResubscribedHandler] = []
        # Reaped and recovered handlers run in tasks of their own, so that a long one never
        # delays a heartbeat.
        self._handling = Background(log, "a cluster bus handler failed")
        # What this node attached to its sessions, written back with them after Redis returns.
        self._infos: dict[str, str] = {}
        # Changes (store, account) announced while Redis was out of reach: announced once it is back.
        self._unannounced: set[tuple[str, str]] = set()
        # This node's sessions, kept here so the directory can be rebuilt after Redis comes back.
        self._local: set[str] = set()
        self._dirty = False
        self._lost = False
        # Until then (after Redis came back, maybe empty), claims only read: the owners claim
        # their names anew first (reclaim), so that no name gets a second owner.
        self._settling_until = 0.0
        self._started = time.time()
        # Until then (time.monotonic()) no other node can have taken this one for dead: half of
        # node_ttl after its last heartbeat that went through was sent.
        self._member_until = 0.0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._joined = False
        self.resyncs = 0

    @property
    def node(self) -> str:
        """This node's name."""
        return self._node

    @property
    def started(self) -> float:
        """When this node last joined: made, or back after its heartbeat was gone (its heartbeat says so)."""
        return self._started

    def is_member(self) -> bool:
        """Whether this node's last heartbeat that reached Redis was sent within half of ``node_ttl``."""
        return self._joined and not self._stopping and time.monotonic() < self._member_until

    @property
    def prefix(self) -> str:
        """The prefix of this cluster's keys and channels."""
        return self._prefix

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await asyncio.wait_for(self._scripts[script](keys=keys, args=args), self._op_timeout)

    async def _queue(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script that only reads (lookup, entries), or publish (``_PUBLISH``, the channel
        and the data), within ``op_timeout``.

        Every message asks the directory and many cross the bus, and most of a call's CPU is the
        Redis client's own path through it, not the command: the commands issued while others are
        on their way go out together, as one pipeline in one round trip, in the order they were
        issued and each after it was (so a read sees every write that came before it).
        """
        waiting: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((script, keys, args, waiting))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_queued())
        async with asyncio.timeout(self._op_timeout):
            return await waiting

    async def _send_queued(self) -> None:
        try:
            while self._queued:
                batch = [command for command in self._queued if not command[3].done()]
                self._queued = []
                if batch:
                    await self._pipeline(batch)
        finally:
            self._sender = None
            batch, self._queued = self._queued, []
            for *_command, waiting in batch:
                _answer(waiting, RedisError("the cluster bus stopped"))

    async def _pipeline(self, batch: list[_Queued]) -> None:
        """Send ``batch`` as one pipeline, and answer each caller."""
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _waiting in batch:
            if script == _PUBLISH:
                pipe.publish(keys[0], args[0])
            else:
                pipe.evalsha(self._scripts[script].sha, len(keys), *keys, *args)
        try:
            async with asyncio.timeout(self._op_timeout):
                replies = await pipe.execute(raise_on_error=False)
        except _ERRORS as err:
            for *_command, waiting in batch:
                _answer(waiting, err)
            return
        except asyncio.CancelledError as err:
            for *_command, waiting in batch:
                _answer(waiting, RedisError(f"the command was cancelled: {err}"))
            raise
        for (script, keys, args, waiting), reply in zip(batch, replies, strict=True):
            outcome = reply
            if isinstance(reply, NoScriptError):
                # Redis restarted and forgot the scripts: the script object loads it again.
                try:
                    outcome = await self._call(script, keys, args)
                except _ERRORS as err:
                    outcome = err
            _answer(waiting, outcome)

    async def start(self) -> None:
        """Heartbeat once (failing if Redis is unreachable), then listen and heartbeat in the background."""
        try:
            await self._beat()
        except _ERRORS as err:
            await self._redis.aclose()
            raise ClusterUnavailable(f"cannot reach Redis at {redact(self._url)}: {reason(err)}") from None
        self._joined = True
        subscribed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._listen(subscribed)), asyncio.create_task(self._heartbeats())]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(subscribed.wait(), self._op_timeout * 2)

    async def stop(self, *, leave: bool = True) -> None:
        """Stop; ``leave`` drops this node and its sessions from the directory at once."""
        # asyncio.wait_for before Python 3.12 swallows a cancellation that arrives as its operation
        # completes: the loops check this too, or stop() could wait for them forever.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._handling.stop()
        if not self._joined:
            return
        self._joined = False
        if leave:
            try:
                await asyncio.wait_for(self._redis.delete(self._key("hb", self._node)), self._op_timeout)
                await self._call("reap", [self._key("hb", self._node), self._key("nodes"),
                                          self._key("sess", self._node)], [self._node, self._prefix])
            except _ERRORS as err:
                log.warning("could not leave the cluster cleanly (entries expire by TTL): %s", err)
        await self._redis.aclose()

    async def _known_nodes(self) -> list[str]:
        names = await asyncio.wait_for(self._redis.hkeys(self._key("nodes")), self._op_timeout)
        return [_text(name) for name in names]

    def _info(self) -> str:
        sessions = sum(1 for full_jid in self._local if is_session(full_jid))
        return json.dumps({"sessions": sessions, "components": len(self._local) - sessions,
                           "started": self._started, "address": self._address})

    async def _heartbeat(self) -> bool:
        """Write this node's heartbeat; whether the one before was still there."""
        return bool(await self._call("heartbeat", [self._key("hb", self._node), self._key("nodes")],
                                     [self._info(), int(self._ttl * 1000), self._node]))

    async def _beat(self) -> None:
        """Heartbeat; rewrite the directory if it may have lost this node; reap dead nodes."""
        await self._follow_primary()
        # The heartbeat expires node_ttl after it reached Redis, so no sooner than after it was sent.
        sent = time.monotonic()
        existed = await self._heartbeat()
        # The heartbeat may have reconnected, to a primary the sentinels named in the meantime.
        self._note_primary()
        if not existed and self._joined:
            # Redis restarted, or this node's heartbeat expired (cut off from Redis, or a stall,
            # longer than node_ttl): the others may have reaped it and taken its claims meanwhile,
            # so it recovers as after an outage (settles, writes its sessions back, reclaims what
            # it owns), and joins as another process: the claims in storage that name it as it
            # was are dead to every node, to itself too (cluster/claims.py).
            if not self._lost:
                log.warning("this node's heartbeat was gone from Redis; joining again as another process")
            self._lost = True
            self._started = time.time()
            sent = time.monotonic()
            await self._heartbeat()
        self._member_until = sent + self._ttl / 2
        # Redis came back: the claims may be gone too.
        if self._lost:
            # Long enough for every other node to notice too (a heartbeat may be stuck in a
            # connect and a command timeout) and to reclaim what it owns.
            self._settling_until = time.monotonic() + self._ttl + 2 * self._op_timeout + self._interval
        if not existed or self._dirty:
            self._dirty = False
            try:
                await self._call("resync", [self._key("sess", self._node)],
                                 [self._node, self._prefix, *sorted(self._local)])
                await self._write_infos()
            except BaseException:
                self._dirty = True
                raise
            self.resyncs += 1
        if self._lost:
            self._lost = False
            log.info("Redis is back; %d sessions and component links of this node written to the directory",
                     len(self._local))
            if self._unannounced:
                self._handling.spawn(self._announce_again())
            for recovered in list(self._recovered_handlers):
                self._handling.spawn(recovered())
        known = await self._known_nodes()
        others = [n for n in known if n != self._node]
        if not others:
            return
        beats = await asyncio.wait_for(self._redis.mget([self._key("hb", n) for n in others]), self._op_timeout)
        for node, beat in zip(others, beats, strict=True):
            if beat is not None:
                continue
            reaped = await self._call("reap", [self._key("hb", node), self._key("nodes"), self._key("sess", node)],
                                      [node, self._prefix])
            if reaped:
                log.warning("cluster node %s stopped heartbeating; its sessions are gone", node)
                dropped = dict(zip(map(_text, reaped[1::2]), map(_text, reaped[2::2]), strict=True))
                for handler in list(self._reaped_handlers):
                    self._handling.spawn(handler(node, dropped))
                await asyncio.wait_for(self._redis.publish(self._key("all"), encode(NodeDown(node))),
                                       self._op_timeout)

    async def _write_infos(self) -> None:
        """Write back what this node attached to its sessions, in one round trip."""
        if not self._infos:
            return
        pipe = self._redis.pipeline(transaction=False)
        for full, info in list(self._infos.items()):
            bare = bare_of(full)
            await self._scripts["set_info"](keys=[self._key("dir", bare), self._key("info", bare)],
                                            args=[full, self._node, info], client=pipe)
        await asyncio.wait_for(pipe.execute(), self._op_timeout)

    async def _follow_primary(self) -> None:
        """Behind Sentinel: move to the primary the sentinels name now."""
        if not self._sentinel:
            return
        try:
            await asyncio.wait_for(refresh_primary(self._redis), self._op_timeout)
        except _ERRORS as err:
            # The primary may well be fine: keep using it, as without Sentinel.
            if not self._sentinels_away:
                self._sentinels_away = True
                log.warning("the sentinels name no Redis primary (%s); staying with the one known", reason(err))
            return
        if self._sentinels_away:
            self._sentinels_away = False
            log.info("the sentinels name a Redis primary again")
        self._note_primary()

    def _note_primary(self) -> None:
        """Recover as after an outage when the primary is another one than at the last heartbeat:
        the old one may have taken writes it never passed on to the promoted replica."""
        primary = current_primary(self._redis)
        if primary is None or primary == self._primary:
            return
        if self._primary is not None:
            log.warning("Redis failover: the primary moved from %s:%d to %s:%d; writing this node's sessions "
                        "there again", *self._primary, *primary)
            self._lost = True
            self._dirty = True
        self._primary = primary

    def _lose(self, err: BaseException) -> None:
        self._dirty = True
        if not self._lost:
            self._lost = True
            log.warning("lost Redis (%s); serving local sessions only until it is back", reason(err))

    async def _heartbeats(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self._beat()
            except _ERRORS as err:
                self._lose(err)

    async def _listen(self, subscribed: asyncio.Event) -> None:
        """Read this node's channel and the broadcast channel; reconnect with backoff."""
        delay = 0.1
        while not self._stopping:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(self._key("to", self._node), self._key("all")),
                                       self._op_timeout)
                if subscribed.is_set():
                    for resubscribed in list(self._resubscribed_handlers):
                        resubscribed()
                subscribed.set()
                delay = 0.1
                if self._lost:
                    self._wake.set()
                # A primary that hangs or is cut off from the sentinels keeps this subscription open
                # after they promoted a replica, where nobody publishes any more.
                while not self._stopping and not off_primary(self._redis, pubsub.connection):
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._handle(message["data"])
                if not self._stopping:
                    log.info("the Redis primary moved; subscribing on the new one")
            except _ERRORS as err:
                self._lose(err)
                self._wake.set()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _handle(self, data: bytes) -> None:
        try:
            message = decode(data)
        except BusMessageError as err:
            log.error("dropping a bus message: %s", err)
            return
        try:
            if isinstance(message, NODE_MESSAGES):
                for handler in list(self._handlers):
                    await handler(message)
            elif isinstance(message, Changed):
                if message.node != self._node:
                    for changed in list(self._changed_handlers):
                        changed(message.store, message.account)
            elif message.node == self._node:
                # Reaped during a partition: write this node's sessions back at the next heartbeat.
                self._dirty = True
                self._wake.set()
            else:
                for down in list(self._down_handlers):
                    await down(message.node)
        except Exception:
            log.exception("a cluster bus handler failed")

    async def publish(self, node: str, message: NodeMessage) -> bool:
        """Publish to ``node``'s channel; False when nobody listens there or Redis is unreachable."""
        try:
            receivers = await self._queue(_PUBLISH, [self._key("to", node)], [encode(message)])
        except _ERRORS as err:
            self._lose(err)
            return False
        return bool(receivers)

    def subscribe(self, handler: MessageHandler) -> None:
        """Call ``handler`` for every message to this node."""
        self._handlers.append(handler)

    async def announce(self, store: str, account: str) -> None:
        """Publish the change on the channel every node reads; one that cannot be published is
        published once Redis answers again, since Redis may have been out of reach of this node
        alone, and the others, noticing no outage, would keep what they keep for good."""
        try:
            await self._queue(_PUBLISH, [self._key("all")], [encode(Changed(self._node, store, account))])
        except _ERRORS as err:
            self._unannounced.add((store, account))
            self._lose(err)

    async def _announce_again(self) -> None:
        changes, self._unannounced = self._unannounced, set()
        for store, account in sorted(changes):
            await self.announce(store, account)

    def on_changed(self, handler: ChangedHandler) -> None:
        """Call ``handler`` for every change another node announces."""
        self._changed_handlers.append(handler)

    def on_node_down(self, handler: NodeDownHandler) -> None:
        """Call ``handler`` when another node is declared dead."""
        self._down_handlers.append(handler)

    def on_recovered(self, handler: RecoveredHandler) -> None:
        """Call ``handler`` each time Redis answers again after an outage (after the resync)."""
        self._recovered_handlers.append(handler)

    def on_resubscribed(self, handler: ResubscribedHandler) -> None:
        """Call ``handler`` when this node subscribes again after its subscription broke (Redis
        restarted, the connection dropped, a failover moved the primary)."""
        self._resubscribed_handlers.append(handler)

    async def register(self, full_jid: str, node: str) -> None:
        """Record ``full_jid`` on ``node``; while Redis is away, only locally until it returns."""
        if node == self._node:
            self._local.add(full_jid)
            self._infos.pop(full_jid, None)
        bare = bare_of(full_jid)
        try:
            await self._call("register", [self._key("dir", bare), self._key("sess", node), self._key("info", bare)],
                             [full_jid, node])
        except _ERRORS as err:
            self._lose(err)

    async def unregister(self, full_jid: str) -> None:
        """Forget ``full_jid`` if this node holds it."""
        self._local.discard(full_jid)
        self._infos.pop(full_jid, None)
        bare = bare_of(full_jid)
        try:
            await self._call("unregister", [self._key("dir", bare), self._key("sess", self._node),
                                            self._key("info", bare)], [full_jid, self._node])
        except _ERRORS as err:
            self._lose(err)

    async def lookup(self, bare_jid: str) -> dict[str, str]:
        """The live sessions of ``bare_jid``; none known while Redis is unreachable."""
        try:
            flat = await self._queue("lookup", [self._key("dir", bare_jid)], [self._prefix])
        except _ERRORS as err:
            self._lose(err)
            return {}
        return dict(zip(map(_text, flat[::2]), map(_text, flat[1::2]), strict=True))

    async def set_info(self, full_jid: str, info: str) -> None:
        """Attach ``info`` to this node's entry for ``full_jid``; kept locally while Redis is away."""
        if full_jid not in self._local:
            return
        self._infos[full_jid] = info
        bare = bare_of(full_jid)
        try:
            await self._call("set_info", [self._key("dir", bare), self._key("info", bare)], [full_jid, self._node, info])
        except _ERRORS as err:
            self._lose(err)

    async def entries(self, bare_jid: str) -> dict[str, Entry]:
        """The live sessions of ``bare_jid`` with their info; none known while Redis is unreachable."""
        try:
            flat = await self._queue("entries", [self._key("dir", bare_jid), self._key("info", bare_jid)],
                                     [self._prefix])
        except _ERRORS as err:
            self._lose(err)
            return {}
        return {_text(flat[i]): Entry(_text(flat[i + 1]), _text(flat[i + 2])) for i in range(0, len(flat), 3)}

    def alone(self) -> bool:
        """Never: other nodes may join at any time, and only Redis knows of them."""
        return False

    def away(self) -> bool:
        """Whether a command failed and no heartbeat has reached Redis since."""
        return self._lost

    def on_reaped(self, handler: ReapedHandler) -> None:
        """Call ``handler`` when this node reaped a dead node."""
        self._reaped_handlers.append(handler)

    async def claim(self, name: str) -> str:
        """The live owner of ``name``; this node when it is unowned or its owner dead.
        :class:`BusUnavailable` while Redis is unreachable, and for an unowned name for a while
        after it came back (``node_ttl`` plus the time the other nodes may need to notice; its
        owner may not have reclaimed it yet): owning it here then could make two owners."""
        # Lost and not yet noticed back: Redis may just have returned empty, as when settling.
        settling = self._lost or time.monotonic() < self._settling_until
        try:
            if settling:
                owner = await self._call("peek", [self._key("claim", name)], [self._prefix])
            else:
                owner = await self._call("claim", [self._key("claim", name)], [self._node, self._prefix])
        except _ERRORS as err:
            self._lose(err)
            raise BusUnavailable(f"Redis is unreachable: {err}") from None
        if owner is None:
            raise BusUnavailable(f"the owner of {name} is not known yet after Redis came back")
        return _text(owner)

    async def reclaim(self, name: str) -> str:
        """Claim ``name`` again after an outage, as its owner before it (no settling time)."""
        try:
            owner = await self._call("claim", [self._key("claim", name)], [self._node, self._prefix])
        except _ERRORS as err:
            self._lose(err)
            raise BusUnavailable(f"Redis is unreachable: {err}") from None
        return _text(owner)

    async def once(self, name: str, ttl: float) -> bool:
        """Mark ``name`` unless it is marked (SET NX with an expiry, one step); True while Redis is
        unreachable."""
        try:
            marked = await asyncio.wait_for(
                self._redis.set(self._key("once", name), self._node, nx=True, px=max(1, int(ttl * 1000))),
                self._op_timeout)
        except _ERRORS as err:
            self._lose(err)
            return True
        return bool(marked)

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """Hold ``name`` against the other nodes while the block runs; without it while Redis is
        unreachable."""
        key, holder = self._key("lock", name), f"{self._node}/{secrets.token_hex(8)}"
        held = await self._take(key, holder)
        try:
            yield
        finally:
            if held:
                # Let go even when the block was cancelled: the others would wait for the expiry.
                await asyncio.shield(self._let_go(key, holder))

    async def _take(self, key: str, holder: str) -> bool:
        """Wait until the lock is this holder's; False when Redis cannot be reached."""
        pause, longest = _LOCK_RETRY
        while True:
            try:
                if await self._call("lock", [key], [holder, self._prefix, _LOCK_EXPIRY_MS]):
                    return True
            except _ERRORS as err:
                self._lose(err)
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    async def _let_go(self, key: str, holder: str) -> None:
        try:
            await self._call("unlock", [key], [holder])
        except _ERRORS as err:
            self._lose(err)

    async def nodes(self) -> dict[str, NodeInfo]:
        """The live nodes with their counts of sessions and of components' links at their last
        heartbeat (a node of a release before the links were counted apart shows none)."""
        known = await self._known_nodes()
        if not known:
            return {}
        beats = await asyncio.wait_for(self._redis.mget([self._key("hb", n) for n in known]), self._op_timeout)
        result: dict[str, NodeInfo] = {}
        for node, beat in zip(known, beats, strict=True):
            if beat is None:
                continue
            try:
                info = json.loads(beat)
                result[node] = NodeInfo(node, int(info["sessions"]), float(info["started"]),
                                        str(info.get("address", "")), int(info.get("components", 0)))
            except (ValueError, KeyError, TypeError):
                log.error("node %s has an unreadable heartbeat", node)
        return result
