"""Redis through Sentinel: the URL that names the sentinels, and clients that follow the primary.

``cluster.redis_url`` takes, besides ``redis://``, ``rediss://`` and ``unix://``::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]

The hosts are the sentinels (port 26379 by default), ``service`` the name they monitor the
primary under (``sentinel monitor <service> ...``), ``db`` the database number (0 by default).
The user and password are the primary's (``requirepass``, ACL users); ``sentinel_password`` is the
sentinels' own (``requirepass`` in sentinel.conf), when they have one.

A client made here asks the sentinels for the primary's address whenever it opens a connection
(redis-py's ``SentinelConnectionPool``), so after a failover its new connections go to the
promoted replica. Connections that stay open to the old primary are what the cluster bus checks
for (:func:`refresh_primary`, :func:`current_primary`, :func:`off_primary`): a primary that hangs
or is cut off from the sentinels keeps them open without an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

SCHEME = "redis+sentinel://"
DEFAULT_PORT = 26379

Address = tuple[str, int]


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[Address, ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service, database and passwords of a ``redis+sentinel://`` URL; ValueError
    with a sentence for the operator (that never repeats a password) when it is malformed."""
    if not url.startswith(SCHEME):
        raise ValueError(f"a Sentinel URL starts with {SCHEME}")
    rest, _, query = url[len(SCHEME):].partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_sentinel(item) for item in hosts.split(","))
    parts = path.split("/")
    service = unquote(parts[0])
    if not service:
        raise ValueError(f"name the service the sentinels monitor after the hosts: {SCHEME}host:26379/mymaster")
    db = 0
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"after the service name only a database number may follow (/{service}/0)")
    if len(parts) == 2:
        db = int(parts[1])
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"sentinel_password"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (known: sentinel_password)")
    sentinel_password = options.get("sentinel_password", [""])[-1] or None
    return SentinelTarget(sentinels, service, db, username, password, sentinel_password)


def _sentinel(item: str) -> Address:
    if not item:
        raise ValueError(f"list the sentinels as host:port separated by commas: {SCHEME}h1:26379,h2:26379/mymaster")
    try:
        parts = urlsplit(f"//{item}")
        port = parts.port
    except ValueError:
        raise ValueError(f"{item!r} is not a sentinel host:port") from None
    if not parts.hostname or parts.username is not None or parts.path:
        raise ValueError(f"{item!r} is not a sentinel host:port")
    return parts.hostname, port if port is not None else DEFAULT_PORT


class SentinelRedis(aioredis.Redis):
    """A client of the primary a :class:`Sentinel` names; closing it closes the sentinel clients too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def open_redis(url: str, timeout: float) -> aioredis.Redis:
    """A client of the Redis at ``url`` (raw replies, ``timeout`` on connects and replies): the
    one server of a ``redis://``, ``rediss://`` or ``unix://`` URL, or the primary the sentinels of a
    ``redis+sentinel://`` URL name at each new connection."""
    if not url.startswith(SCHEME):
        return aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    target = parse_sentinel_url(url)
    # The sentinels are asked one after the other until one names the primary: a machine that is
    # down (its Redis and its sentinel with it) must leave time to ask the others within ``timeout``.
    ask = timeout / (len(target.sentinels) + 1)
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": ask, "socket_timeout": ask, "password": target.sentinel_password,
        # One try per sentinel: redis-py would retry a dead one with backoff by default.
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(
        target.service, redis_class=SentinelRedis, db=target.db, username=target.username,
        password=target.password, socket_connect_timeout=timeout, socket_timeout=timeout,
    )
    return client


async def refresh_primary(client: aioredis.Redis) -> None:
    """Ask the sentinels for the primary now (nothing to ask for a client of one plain Redis). When
    it changed, the client's idle connections close, so its next command goes to the new one."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        await pool.get_master_address()  # type: ignore[no-untyped-call]


def current_primary(client: aioredis.Redis) -> Address | None:
    """The primary the sentinels named when the client last asked (None before it asked, and for
    a client of one plain Redis)."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    primary: Address | None = pool.master_address
    return primary


def off_primary(client: aioredis.Redis, connection: Connection | None) -> bool:
    """Whether ``connection`` stays open to a server the sentinels no longer name as the primary."""
    primary = current_primary(client)
    return primary is not None and connection is not None and (connection.host, connection.port) != primary


def reason(err: BaseException) -> str:
    """What went wrong, in one line (redis-py names every sentinel client in full when none of them
    names a primary)."""
    if isinstance(err, MasterNotFoundError):
        return f"{str(err).partition(' : ')[0]}: no sentinel answers, or they fail over now"
    return str(err) or type(err).__name__


def redact(url: str) -> str:
    """``url`` without its passwords, to name it in a log line or an error."""
    rest, _, _ = url.partition("?")
    scheme, sep, tail = rest.partition("://")
    if not sep:
        return rest
    authority, slash, path = tail.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}{':***' if colon else ''}@{hosts}"
    return f"{scheme}://{authority}{slash}{path}"
