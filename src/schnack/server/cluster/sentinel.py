"""Redis through Sentinel: the URL that names the sentinels, and clients that follow the primary.

``cluster.redis_url`` takes, besides ``redis://``, ``rediss://`` and ``unix://``::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]
    rediss+sentinel://...same...[?sentinel_password=...&ssl_ca_certs=PATH&ssl_check_hostname=false]

The hosts are the sentinels (port 26379 by default), ``service`` the name they monitor the
primary under (``sentinel monitor <service> ...``), ``db`` the database number (0 by default).
The user and password are the primary's (``requirepass``, ACL users); ``sentinel_password`` is the
sentinels' own (``requirepass`` in sentinel.conf), when they have one.

``rediss+sentinel://`` speaks TLS both to the sentinels and to the primary they name (their
``tls-port``), and checks their certificates against the CA bundle ``ssl_ca_certs`` (the system's
by default) and the host they are reached by. Sentinels name the primary by its address, so its
certificate must carry that IP address, unless ``ssl_check_hostname=false`` (the certificate is
then still checked against the CA). No client certificate is sent: the servers need
``tls-auth-clients no`` (or ``optional``).

A client made here asks the sentinels for the primary's address whenever it opens a connection
(redis-py's ``SentinelConnectionPool``), so after a failover its new connections go to the
promoted replica. Connections that stay open to the old primary are what the cluster bus checks
for (:func:`refresh_primary`, :func:`current_primary`, :func:`off_primary`): a primary that hangs
or is cut off from the sentinels keeps them open without an error.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

SCHEME = "redis+sentinel://"
TLS_SCHEME = "rediss+sentinel://"
DEFAULT_PORT = 26379
# The parameters of a URL of either scheme, and those only a TLS one takes.
PARAMETERS = ("sentinel_password",)
TLS_PARAMETERS = ("ssl_ca_certs", "ssl_check_hostname")

Address = tuple[str, int]


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` or ``rediss+sentinel://`` URL names."""

    sentinels: tuple[Address, ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    # TLS to the sentinels and the primary (rediss+sentinel://); the CA bundle (None: the
    # system's) and whether the certificates must name the host they are reached by.
    tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_check_hostname: bool = True


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names sentinels (``redis+sentinel://`` or ``rediss+sentinel://``)."""
    return url.startswith((SCHEME, TLS_SCHEME))


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service, database, passwords and TLS options of a ``redis+sentinel://`` or
    ``rediss+sentinel://`` URL; ValueError with a sentence for the operator (that never repeats a
    password) when it is malformed."""
    if not is_sentinel_url(url):
        raise ValueError(f"a Sentinel URL starts with {SCHEME} or {TLS_SCHEME}")
    tls = url.startswith(TLS_SCHEME)
    scheme = TLS_SCHEME if tls else SCHEME
    rest, _, query = url[len(scheme):].partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_sentinel(item, scheme) for item in hosts.split(","))
    parts = path.split("/")
    service = unquote(parts[0])
    if not service:
        raise ValueError(f"name the service the sentinels monitor after the hosts: {scheme}host:26379/mymaster")
    db = 0
    if len(parts) > 2 or (len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit())):
        raise ValueError(f"after the service name only a database number may follow (/{service}/0)")
    if len(parts) == 2:
        db = int(parts[1])
    options = {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}
    known = PARAMETERS + TLS_PARAMETERS if tls else PARAMETERS
    unknown = sorted(set(options) - set(known))
    if unknown and unknown[0] in TLS_PARAMETERS:
        raise ValueError(f"parameter {unknown[0]!r} is for TLS, which needs a {TLS_SCHEME} URL")
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(known)})")
    check_hostname = options.get("ssl_check_hostname", "true")
    if check_hostname not in ("true", "false"):
        raise ValueError(f"ssl_check_hostname is true or false, got {check_hostname!r}")
    return SentinelTarget(
        sentinels, service, db, username, password, options.get("sentinel_password") or None,
        tls=tls, ssl_ca_certs=options.get("ssl_ca_certs") or None, ssl_check_hostname=check_hostname == "true",
    )


def _sentinel(item: str, scheme: str) -> Address:
    if not item:
        raise ValueError(f"list the sentinels as host:port separated by commas: {scheme}h1:26379,h2:26379/mymaster")
    try:
        parts = urlsplit(f"//{item}")
        port = parts.port
    except ValueError:
        raise ValueError(f"{item!r} is not a sentinel host:port") from None
    if not parts.hostname or parts.username is not None or parts.path:
        raise ValueError(f"{item!r} is not a sentinel host:port")
    return parts.hostname, port if port is not None else DEFAULT_PORT


class SentinelsRefused(MasterNotFoundError):
    """No sentinel names a primary, and TLS with one of them failed (a certificate refused)."""


class _SentinelClient(aioredis.Redis):
    """A client of one sentinel that keeps why it could not ask it last time: redis-py's
    MasterNotFoundError names only the type of each sentinel's error."""

    failure: RedisError | None = None

    async def sentinel_masters(self) -> Any:
        try:
            masters = await super().sentinel_masters()
        except RedisError as err:
            self.failure = err
            raise
        self.failure = None
        return masters


class _Sentinel(Sentinel):
    """The sentinels of a URL, asked through :class:`_SentinelClient`s, so that a failed TLS
    handshake (another CA, a name the certificate does not carry) is named when no sentinel answers."""

    def __init__(self, sentinels: list[Address], sentinel_kwargs: dict[str, Any]) -> None:
        super().__init__([], sentinel_kwargs=sentinel_kwargs)
        self.sentinels = [_SentinelClient(host=host, port=port, **sentinel_kwargs) for host, port in sentinels]

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError as err:
            failures = (client.failure for client in self.sentinels if isinstance(client, _SentinelClient))
            refused = next(filter(None, map(_tls_failure, failures)), None)
            if refused is None:
                raise
            raise SentinelsRefused(f"No master found for {service_name!r}: TLS with the sentinels fails: {refused}") from err


def _tls_failure(err: BaseException | None) -> str | None:
    """What failed in the TLS handshake that ``err`` (redis-py's ConnectionError) came from, if it did."""
    while err is not None and not isinstance(err, ssl.SSLError):
        err = err.__cause__ or err.__context__
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {err.verify_message.rstrip('.')}"
    return None if err is None else str(err)


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
    ``redis+sentinel://`` or ``rediss+sentinel://`` URL name at each new connection."""
    if not is_sentinel_url(url):
        return aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    target = parse_sentinel_url(url)
    tls: dict[str, Any] = {}
    if target.tls:
        tls = {"ssl_ca_certs": target.ssl_ca_certs, "ssl_check_hostname": target.ssl_check_hostname}
    # The sentinels are asked one after the other until one names the primary: a machine that is
    # down (its Redis and its sentinel with it) must leave time to ask the others within ``timeout``.
    ask = timeout / (len(target.sentinels) + 1)
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": ask, "socket_timeout": ask, "password": target.sentinel_password,
        # One try per sentinel: redis-py would retry a dead one with backoff by default.
        "retry": Retry(NoBackoff(), 0),
        "ssl": target.tls, **tls,
    }
    sentinel = _Sentinel(list(target.sentinels), sentinel_options)
    client: aioredis.Redis = sentinel.master_for(
        target.service, redis_class=SentinelRedis, db=target.db, username=target.username,
        password=target.password, socket_connect_timeout=timeout, socket_timeout=timeout,
        connection_class=SentinelManagedSSLConnection if target.tls else SentinelManagedConnection, **tls,
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
    if isinstance(err, MasterNotFoundError) and not isinstance(err, SentinelsRefused):
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
