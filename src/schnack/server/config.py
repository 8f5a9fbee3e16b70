"""The server configuration: one TOML file, checked completely at start.

Every section is a dataclass; fields carry their bounds in ``metadata`` (``min``, ``max``,
``choices``) and a wrong value fails with a :class:`ConfigError` naming the key, e.g.
``limits.idle_timeout: must be at least 10, got 0``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..xmpp.jid import JID, JIDError

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the one line shown to the operator."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


def bounded(default: Any, *, min: float | None = None, max: float | None = None,
            choices: tuple[Any, ...] | None = None, help: str = "") -> Any:
    """A dataclass field with bounds that :func:`parse_section` checks."""
    meta = {"min": min, "max": max, "choices": choices, "help": help}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(key, value, args[0])
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        return [_convert(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a path string, got {type(value).__name__}")
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, f"must be a whole number, got {value!r}")
    if tp in (str, float, bool, int) and not isinstance(value, tp):
        raise ConfigError(key, f"must be a {_type_name(tp)}, got {type(value).__name__}")
    return value


def parse_section(cls: type[T], table: Any, prefix: str, sections: Collection[str] = ()) -> T:
    """Build dataclass ``cls`` from a TOML table, checking names, types and bounds; the tables
    named in ``sections`` are known too, and left to their own parsers."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError(prefix, "must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in table:
        if name not in fields and name not in sections:
            known = ", ".join(sorted(fields)) or "none"
            if sections:
                known += f", and the sections {', '.join(f'[{section}]' for section in sorted(sections))}"
            what = "section" if isinstance(table[name], dict) else "key"
            raise ConfigError(f"{prefix}.{name}" if prefix else name, f"unknown {what} (known: {known})")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            continue
        key = f"{prefix}.{name}" if prefix else name
        value = _convert(key, table[name], hints[name])
        meta = f.metadata
        if meta.get("choices") is not None and value not in meta["choices"]:
            allowed = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(key, f"must be one of {allowed}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            # TOML allows nan and inf; nan passes every bound check, inf makes a timeout endless.
            raise ConfigError(key, f"must be a finite number, got {value}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if meta.get("min") is not None and value < meta["min"]:
                raise ConfigError(key, f"must be at least {meta['min']}, got {value}")
            if meta.get("max") is not None and value > meta["max"]:
                raise ConfigError(key, f"must be at most {meta['max']}, got {value}")
        values[name] = value
    return cls(**values)


@dataclass(frozen=True)
class Listen:
    """Where the server listens; each entry is ``host:port`` (``[::]:5222`` for IPv6)."""

    c2s: list[str] = bounded(["0.0.0.0:5222"], help="client port with STARTTLS (RFC 6120)")
    c2s_tls: list[str] = bounded(["0.0.0.0:5223"], help="client port with direct TLS (XEP-0368)")
    http: list[str] = bounded(["0.0.0.0:5280"], help="HTTP with WebSocket at /xmpp-websocket")
    https: list[str] = bounded(["0.0.0.0:5281"], help="HTTPS with WebSocket at /xmpp-websocket")
    component: list[str] = bounded([], help="external components (XEP-0114, plain TCP: keep it on 127.0.0.1)")
    s2s: list[str] = bounded(["0.0.0.0:5269"], help="other servers (RFC 6120 s2s), bound only when [s2s] enabled")
    proxy_from: list[str] = bounded(
        [], help="addresses or networks (10.0.1.0/24) of TCP balancers that send a PROXY header (v1 or v2) "
        "on the c2s, c2s_tls, http and https ports"
    )


@dataclass(frozen=True)
class Component:
    """An external component (XEP-0114) that may connect for one domain, e.g. a push app server."""

    secret: str = bounded("", help="the shared secret of the handshake")


@dataclass(frozen=True)
class Limits:
    """Per-connection limits (RFC 6120 §13.12)."""

    max_stanza_size: int = bounded(262_144, min=10_000, max=16 * 1024 * 1024)
    max_stanza_size_unauthenticated: int = bounded(10_000, min=4_096, max=262_144)
    bytes_per_second: int = bounded(262_144, min=1_024, help="sustained read rate per connection")
    burst_bytes: int = bounded(1_048_576, min=10_000)
    idle_timeout: float = bounded(600.0, min=10, help="close a connection silent for this long")
    keepalive_interval: float = bounded(60.0, min=5, help="keepalive (whitespace, or a WebSocket ping) after this much silence")
    auth_timeout: float = bounded(30.0, min=1, help="time to authenticate after connecting")
    max_resources: int = bounded(64, min=1, max=10_000, help="sessions per account")
    max_write_buffer: int = bounded(4 * 1024 * 1024, min=65_536, help="unsent bytes before a reader is cut")
    failed_logins_per_account: int = bounded(5, min=1, help="per minute before throttling")
    failed_logins_per_ip: int = bounded(20, min=1, help="per minute before throttling")


@dataclass(frozen=True)
class Tls:
    """Certificate and key in PEM; when both are unset a self-signed pair is made in data_dir."""

    cert: Path | None = bounded(None)
    key: Path | None = bounded(None)
    require_c2s: bool = bounded(True, help="refuse login without TLS on the STARTTLS port")


@dataclass(frozen=True)
class Storage:
    """Where data lives: ``sqlite:///path``, or ``postgresql://user@host/db``."""

    url: str = bounded("", help="default: SQLite in data_dir")


@dataclass(frozen=True)
class Cluster:
    """Cluster mode: nodes on one PostgreSQL database that meet on Redis (see server/cluster/)."""

    redis_url: str | None = bounded(
        None, help="redis://host:port/db, or redis+sentinel://host:port,host:port/service/db "
        "(rediss:// and rediss+sentinel:// for TLS); unset runs a single node"
    )
    node_name: str = bounded("", help="unique in the cluster; default: hostname-pid")
    key_prefix: str = bounded("schnack:", help="prefix of every Redis key and channel")
    heartbeat_interval: float = bounded(1.0, min=0.1, max=60, help="seconds between heartbeats")
    node_ttl: float = bounded(5.0, min=0.5, max=600, help="a node silent this long is declared dead")
    public_address: str = bounded(
        "", help="host:port where clients reach this node; other nodes send clients here when they drain"
    )


@dataclass(frozen=True)
class S2s:
    """Server-to-server federation (RFC 6120 s2s, XEP-0220 dialback, XEP-0178 SASL EXTERNAL)."""

    enabled: bool = bounded(False, help="talk to other XMPP servers (needed for public push app servers)")
    hosts: dict[str, str] = bounded({}, help="domain -> host:port, used instead of DNS")
    dns_servers: list[str] = bounded([], help="DNS servers (address or address:port) for SRV lookups; default: the system's")
    verify: bool = bounded(True, help="check peer certificates; SASL EXTERNAL when valid, else dialback")
    ca_file: Path | None = bounded(None, help="extra trusted CA certificates (PEM) besides the system's")
    dialback_secret: str = bounded("", help="XEP-0185 key secret; default: made once and kept in storage")
    connect_timeout: float = bounded(30.0, min=1, max=600,
                                     help="seconds to connect to each server of a domain tried, and to authenticate")
    idle_timeout: float = bounded(300.0, min=10, help="close an outgoing connection unused this long")
    max_queue: int = bounded(1000, min=1, max=1_000_000,
                             help="stanzas waiting per domain while connecting, or sent and not yet acknowledged")
    ack_after_stanzas: int = bounded(5, min=1, max=1000, help="XEP-0198: ask for an ack after this many stanzas")
    ack_after_seconds: float = bounded(1.0, min=0.01, max=300, help="or this long after the first unacknowledged one")
    ack_timeout: float = bounded(30.0, min=0.1, max=600, help="no ack this long after asking: the connection is dead")
    retry_window: float = bounded(300.0, min=0.1, max=86400,
                                  help="keep reconnecting this long to resend unacknowledged stanzas, then bounce them")


@dataclass(frozen=True)
class Config:
    """The whole configuration; module options stay raw until the modules parse them."""

    domains: list[str]
    data_dir: Path
    storage_url: str
    listen: Listen
    limits: Limits
    tls: Tls
    modules: dict[str, dict[str, Any]]
    log_level: str = "info"
    source: Path | None = None
    components: dict[str, Component] = field(default_factory=dict)
    cluster: Cluster = field(default_factory=Cluster)
    s2s: S2s = field(default_factory=S2s)


@dataclass(frozen=True)
class _Top:
    domains: list[str] = bounded(["localhost"])
    data_dir: Path = bounded(Path("data"))
    log_level: str = bounded("info", choices=("debug", "info", "warning", "error"))


DEFAULT_MODULES = (
    "roster", "presence", "message", "offline", "iq", "disco", "version", "time", "ping", "last", "vcard",
    "private", "e2e", "blocking", "carbons", "pep", "sm", "csi", "mam", "bookmarks", "push", "fast",
    "upload", "avatar_conversion", "vcard4", "muc", "webclient",
)  # fmt: skip


def _modules(table: Any) -> dict[str, dict[str, Any]]:
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError("modules", "must be a table")
    enable = _convert("modules.enable", table.get("enable", []), list[str])
    disable = _convert("modules.disable", table.get("disable", []), list[str])
    from .modules import BUILTIN  # the module table imports this file

    for i, name in enumerate(disable):
        if name not in BUILTIN:
            # A typo here would silently leave the module on.
            raise ConfigError(f"modules.disable[{i}]", f"no such module {name!r} (known: {', '.join(sorted(BUILTIN))})")
    names = [m for m in (*DEFAULT_MODULES, *enable) if m not in disable]
    options: dict[str, dict[str, Any]] = {name: {} for name in dict.fromkeys(names)}
    for name, value in table.items():
        if name in ("enable", "disable"):
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"modules.{name}", "must be a table of that module's options")
        if name not in options:
            raise ConfigError(f"modules.{name}", "options given for a module that is not enabled")
        options[name] = value
    return options


# The tables at the top of the file, each read by its own parser below.
_SECTIONS = frozenset({"listen", "limits", "tls", "storage", "modules", "components", "cluster", "s2s"})


def build(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Check a parsed TOML document and build the configuration."""
    top = parse_section(_Top, data, "", _SECTIONS)
    if not top.domains:
        raise ConfigError("domains", "must name at least one domain")
    domains = []
    for i, name in enumerate(top.domains):
        try:
            jid = JID.parse(name)
        except JIDError as err:
            raise ConfigError(f"domains[{i}]", f"{name!r} is not a valid domain: {err}") from None
        if jid.local is not None or jid.resource is not None:
            raise ConfigError(f"domains[{i}]", f"{name!r} is not a bare domain")
        domains.append(jid.domain)
    data_dir = top.data_dir if top.data_dir.is_absolute() else base_dir / top.data_dir
    # Made when first needed; a file in its place would fail every command with an OS error.
    for place in (data_dir, *data_dir.parents):
        if place.exists():
            if not place.is_dir():
                raise ConfigError("data_dir", f"{place} is not a directory")
            break
    storage = parse_section(Storage, data.get("storage"), "storage")
    url = storage.url or f"sqlite:///{data_dir / 'schnack.db'}"
    if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError("storage.url", f"must start with sqlite:// or postgresql://, got {url!r}")
    tls = parse_section(Tls, data.get("tls"), "tls")
    if (tls.cert is None) != (tls.key is None):
        raise ConfigError("tls.key" if tls.key is None else "tls.cert", "set both cert and key, or neither")
    if tls.cert is not None and tls.key is not None:
        cert_path = tls.cert if tls.cert.is_absolute() else base_dir / tls.cert
        key_path = tls.key if tls.key.is_absolute() else base_dir / tls.key
        tls = dataclasses.replace(tls, cert=cert_path, key=key_path)
        for key, path in (("tls.cert", cert_path), ("tls.key", key_path)):
            if not path.is_file():
                raise ConfigError(key, f"no such file: {path}")
        _check_pair(cert_path, key_path)
    listen = parse_section(Listen, data.get("listen"), "listen")
    for name in ("c2s", "c2s_tls", "http", "https", "component", "s2s"):
        for i, address in enumerate(getattr(listen, name)):
            parse_address(f"listen.{name}[{i}]", address)
    for i, entry in enumerate(listen.proxy_from):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"listen.proxy_from[{i}]", f"must be an IP address or network, got {entry!r}") from None
    return Config(
        domains=domains,
        data_dir=data_dir,
        storage_url=url,
        listen=listen,
        limits=parse_section(Limits, data.get("limits"), "limits"),
        tls=tls,
        modules=_modules(data.get("modules")),
        log_level=top.log_level,
        source=source,
        components=_components(data.get("components"), domains),
        cluster=_cluster(data.get("cluster"), url),
        s2s=_s2s(data.get("s2s"), base_dir),
    )


def _check_pair(cert: Path, key: Path) -> None:
    """The certificate and key load and belong together, or the server would fail at start."""
    try:
        leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except ValueError:
        raise ConfigError("tls.cert", "holds no PEM certificate") from None
    except OSError as err:
        raise ConfigError("tls.cert", f"cannot be read: {err.strerror}") from None
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError("tls.key", "is not an unencrypted PEM private key") from None
    except OSError as err:
        raise ConfigError("tls.key", f"cannot be read: {err.strerror}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise ConfigError("tls.key", "is not the private key of tls.cert")


def _s2s(table: Any, base_dir: Path) -> S2s:
    """The ``[s2s]`` section: each ``hosts`` entry maps a domain to a ``host:port``."""
    s2s = parse_section(S2s, table, "s2s")
    if not isinstance(s2s.hosts, dict):
        raise ConfigError("s2s.hosts", 'must be a table of domain = "host:port"')
    hosts: dict[str, str] = {}
    for name, address in s2s.hosts.items():
        key = f"s2s.hosts.{name}"
        try:
            jid = JID.parse(name)
        except JIDError as err:
            raise ConfigError(key, f"{name!r} is not a valid domain: {err}") from None
        if jid.local is not None or jid.resource is not None:
            raise ConfigError(key, f"{name!r} is not a bare domain")
        if not isinstance(address, str):
            raise ConfigError(key, f"must be a host:port string, got {type(address).__name__}")
        parse_address(key, address)
        hosts[jid.domain] = address
    for i, server in enumerate(s2s.dns_servers):
        _dns_server(f"s2s.dns_servers[{i}]", server)
    ca_file = s2s.ca_file
    if ca_file is not None:
        ca_file = ca_file if ca_file.is_absolute() else base_dir / ca_file
        if not ca_file.is_file():
            raise ConfigError("s2s.ca_file", f"no such file: {ca_file}")
    return dataclasses.replace(s2s, hosts=hosts, ca_file=ca_file)


def _dns_server(key: str, server: str) -> None:
    """A resolver's address, with or without a port (``192.0.2.53``, ``[2001:db8::53]:5353``)."""
    try:
        ipaddress.ip_address(server)
        return
    except ValueError:
        pass
    try:
        ipaddress.ip_address(parse_address(key, server)[0])
    except (ConfigError, ValueError):
        raise ConfigError(key, f"must be an IP address, with or without :port, got {server!r}") from None


def _cluster(table: Any, storage_url: str) -> Cluster:
    """The ``[cluster]`` section; cluster mode needs storage that every node shares."""
    cluster = parse_section(Cluster, table, "cluster")
    if cluster.redis_url is not None:
        # Imported here: the cluster package imports this module.
        from .cluster.sentinel import is_sentinel_url, parse_sentinel_url, redact
        if is_sentinel_url(cluster.redis_url):
            try:
                target = parse_sentinel_url(cluster.redis_url)
            except ValueError as err:
                raise ConfigError("cluster.redis_url", f"{err}, got {redact(cluster.redis_url)!r}") from None
            if target.ssl_ca_certs is not None and not Path(target.ssl_ca_certs).is_file():
                raise ConfigError("cluster.redis_url", f"ssl_ca_certs: no such file: {target.ssl_ca_certs}")
        elif not cluster.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("cluster.redis_url", "must start with redis://, rediss://, unix://, redis+sentinel:// "
                              f"or rediss+sentinel://, got {redact(cluster.redis_url)!r}")
        if storage_url.startswith("sqlite://"):
            raise ConfigError("cluster.redis_url", "cluster mode needs PostgreSQL storage (storage.url); SQLite serves one node only")
    if cluster.node_ttl < 2 * cluster.heartbeat_interval:
        raise ConfigError("cluster.node_ttl", f"must be at least twice heartbeat_interval ({cluster.heartbeat_interval}), got {cluster.node_ttl}")
    if cluster.public_address:
        parse_address("cluster.public_address", cluster.public_address)
    if not cluster.node_name:
        cluster = dataclasses.replace(cluster, node_name=f"{socket.gethostname()}-{os.getpid()}")
    elif not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", cluster.node_name):
        raise ConfigError("cluster.node_name", f"must be 1-64 letters, digits, '.', '_' or '-', got {cluster.node_name!r}")
    return cluster


def _components(table: Any, domains: list[str]) -> dict[str, Component]:
    """The ``[components]`` table: domain -> its secret (XEP-0114)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigError("components", "must be a table of domain = { secret = \"...\" }")
    components: dict[str, Component] = {}
    for name, value in table.items():
        key = f"components.{name}"
        try:
            jid = JID.parse(name)
        except JIDError as err:
            raise ConfigError(key, f"{name!r} is not a valid domain: {err}") from None
        if jid.local is not None or jid.resource is not None:
            raise ConfigError(key, f"{name!r} is not a bare domain")
        if jid.domain in domains:
            raise ConfigError(key, "is one of the server's own domains")
        component = parse_section(Component, value, key)
        if not component.secret:
            raise ConfigError(f"{key}.secret", "must be set")
        components[jid.domain] = component
    return components


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return True


def parse_address(key: str, address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port``) and check both parts, so a typo fails here, not at bind."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if (not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535
            or (host and not _valid_host(host))):
        raise ConfigError(key, f"must be host:port, got {address!r}")
    return host or "0.0.0.0", int(port)


def load(path: Path | None) -> Config:
    """Read and check the configuration file; None gives the zero-configuration defaults."""
    if path is None:
        return build({}, Path.cwd())
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("", f"{path}: not valid TOML: {err}") from None
    return build(data, path.parent.resolve(), path)
