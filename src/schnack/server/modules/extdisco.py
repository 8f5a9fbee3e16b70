"""XEP-0215: External Service Discovery (v1.0): STUN and TURN for calls, with coturn's credentials.

Clients ask their server for ``<services xmlns='urn:xmpp:extdisco:2'/>`` (§3.1, §3.2) and get the
configured STUN server and the TURN relay on each transport, the TURN entries with credentials
that expire after ``lifetime`` seconds; ``<credentials/>`` (§3.3) renews them for one service.

The credentials follow the TURN REST scheme coturn checks with ``use-auth-secret`` and
``static-auth-secret``: the username is ``{expiry}:{bare JID}`` (expiry in Unix seconds) and the
password is base64(HMAC-SHA1(secret, username)), so coturn needs no account database and each
credential names who it was handed to. :func:`coturn_config` writes the matching coturn
configuration (``schnack admin turn-config``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp.errors import StanzaError
from ...xmpp.payloads.extdisco import CREDENTIALS, NS, SERVICES, Credentials, ExtdiscoError, Service, Services
from ...xmpp.stanza import Stanza
from ..config import ConfigError, bounded
from ..module import Module

if TYPE_CHECKING:
    from ..app import Server
    from ..sessions import Session


@dataclass(frozen=True)
class ExtdiscoOptions:
    """The STUN server and TURN relay to announce, and the secret shared with coturn."""

    stun_host: str = bounded("", help="STUN server name or address; empty: announce none")
    stun_port: int = bounded(3478, min=1, max=65535)
    turn_host: str = bounded("", help="TURN relay name or address; empty: announce none")
    turn_port: int = bounded(3478, min=1, max=65535)
    turn_transports: list[str] = bounded(["udp", "tcp"], help="transports the relay is reached by")
    turns_port: int = bounded(0, min=0, max=65535, help="TURN over TLS (turns:); 0: none")
    secret: str = bounded("", help="coturn's static-auth-secret; needed with a TURN relay")
    lifetime: int = bounded(86_400, min=60, max=30 * 86_400, help="seconds a TURN credential is valid")
    realm: str = bounded("", help="coturn's realm; default: the first domain")


def turn_credentials(secret: str, user: str, expiry: int) -> tuple[str, str]:
    """The TURN REST username and password valid for ``user`` until Unix time ``expiry``."""
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def check_options(options: ExtdiscoOptions) -> None:
    """Refuse options that would announce nothing or hand out credentials coturn rejects."""
    section = "modules.extdisco"
    if not options.stun_host and not options.turn_host:
        raise ConfigError(section, "set stun_host or turn_host (or both); there is nothing to announce")
    for i, transport in enumerate(options.turn_transports):
        if transport not in ("udp", "tcp"):
            raise ConfigError(f"{section}.turn_transports[{i}]", f"must be 'udp' or 'tcp', got {transport!r}")
    if options.turn_host and not options.turn_transports and not options.turns_port:
        raise ConfigError(f"{section}.turn_transports", "name at least one transport, or set turns_port")
    if options.turn_host and len(options.secret) < 16:
        raise ConfigError(f"{section}.secret", "a TURN relay needs the coturn secret, at least 16 characters")


class ExternalServices(Module[ExtdiscoOptions]):
    """Announces STUN and TURN to local users (XEP-0215 §3) with coturn REST credentials."""

    name = "extdisco"
    features = (NS,)
    Options = ExtdiscoOptions

    def __init__(self, server: Server, options: ExtdiscoOptions) -> None:
        check_options(options)
        super().__init__(server, options)

    def setup(self) -> None:
        self.iq("host", SERVICES, get=self.services)
        self.iq("host", CREDENTIALS, get=self.credentials)

    def catalogue(self) -> tuple[Service, ...]:
        """Every configured service, without credentials."""
        o = self.options
        found: list[Service] = []
        if o.stun_host:
            found.append(Service("stun", o.stun_host, o.stun_port, "udp"))
        if o.turn_host:
            found += [Service("turn", o.turn_host, o.turn_port, t, restricted=True) for t in o.turn_transports]
            if o.turns_port:
                found.append(Service("turns", o.turn_host, o.turns_port, "tcp", restricted=True))
        return tuple(found)

    def with_credentials(self, service: Service, user: str, now: float) -> Service:
        """``service`` with fresh credentials for ``user`` if it is a TURN relay."""
        if not service.restricted:
            return service
        expiry = int(now) + self.options.lifetime
        username, password = turn_credentials(self.options.secret, user, expiry)
        return replace(
            service, username=username, password=password, expires=datetime.fromtimestamp(expiry, UTC)
        )

    @staticmethod
    def _requester(origin: Session | None) -> str:
        # §2: forbidden for whoever may not have the list; here that is anyone but a local user.
        if origin is None:
            raise StanzaError("forbidden", "external services are for this server's users")
        return str(origin.jid.bare)

    async def services(self, stanza: Stanza, origin: Session | None) -> Element:
        """§3.1 all services, §3.2 those of the type asked for."""
        user = self._requester(origin)
        assert stanza.payload is not None
        try:
            request = Services.from_xml(stanza.payload)
        except ExtdiscoError as err:
            raise StanzaError(err.condition, str(err)) from None
        now = time.time()
        found = tuple(
            self.with_credentials(s, user, now)
            for s in self.catalogue()
            if request.type is None or s.type == request.type
        )
        return stanza.result(Services(found, request.type).to_xml())

    async def credentials(self, stanza: Stanza, origin: Session | None) -> Element:
        """§3.3: credentials for the service named by type and host (and port)."""
        user = self._requester(origin)
        assert stanza.payload is not None
        try:
            request = Credentials.from_xml(stanza.payload)
        except ExtdiscoError as err:
            raise StanzaError(err.condition, str(err)) from None
        if len(request.services) != 1:
            raise StanzaError("bad-request", "name exactly one service")
        (wanted,) = request.services
        now = time.time()
        found = tuple(
            self.with_credentials(s, user, now)
            for s in self.catalogue()
            if (s.type, s.host) == (wanted.type, wanted.host) and wanted.port in (None, s.port)
        )
        if not found:
            raise StanzaError("item-not-found", f"no {wanted.type} service at {wanted.host} here")
        return stanza.result(Credentials(found).to_xml())


# RFC 6890 special-purpose ranges a relay must not reach on behalf of a client: without these,
# anyone holding a credential could use the relay to probe the operator's internal network.
DENIED_PEERS = (
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.0.2.0-192.0.2.255",
    "192.88.99.0-192.88.99.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "240.0.0.0-255.255.255.255",
    "::1",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "::ffff:0.0.0.0-::ffff:255.255.255.255",
    "100::-100::ffff:ffff:ffff:ffff",
    "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)


def coturn_config(options: ExtdiscoOptions, domains: list[str], *, loopback: bool = False) -> str:
    """A coturn ``turnserver.conf`` that accepts the credentials this module hands out.

    ``loopback`` listens and relays on 127.0.0.1 only and lets peers there be reached: for tests
    and for trying calls on one machine, never for a relay facing the internet.
    """
    realm = options.realm or domains[0]
    lines = [
        "# coturn configuration matching schnack's [modules.extdisco] (schnack admin turn-config).",
        f"listening-port={options.turn_port}",
    ]
    if options.turns_port:
        lines += [
            f"tls-listening-port={options.turns_port}",
            "# Certificate and key of the TURN host name, readable by the turnserver user:",
            f"cert=/etc/coturn/{options.turn_host or realm}.crt",
            f"pkey=/etc/coturn/{options.turn_host or realm}.key",
            "no-tlsv1",
            "no-tlsv1_1",
        ]
    else:
        lines += ["no-tls", "no-dtls"]
    if "tcp" not in options.turn_transports and not options.turns_port:
        lines.append("no-tcp")
    if "udp" not in options.turn_transports:
        lines.append("no-udp")
    lines += [
        f"realm={realm}",
        "use-auth-secret",
        f"static-auth-secret={options.secret}",
        "fingerprint",
        "no-cli",
        "no-multicast-peers",
        "no-software-attribute",
        "stale-nonce=600",
        # Bound what one credential can cost: a call needs one allocation per relayed component.
        "user-quota=12",
        "total-quota=1200",
        "min-port=49152",
        "max-port=65535",
    ]
    if loopback:
        lines += [
            "# Loopback only: for tests and local trials.",
            "listening-ip=127.0.0.1",
            "relay-ip=127.0.0.1",
            "allow-loopback-peers",
            "allowed-peer-ip=127.0.0.1",
        ]
    else:
        lines += [
            "# Behind NAT, also set external-ip=PUBLIC/PRIVATE.",
            "# Peers in special-purpose ranges are refused; allow a private range (allowed-peer-ip=)",
            "# only when the relay must reach clients inside that network.",
        ]
        lines += [f"denied-peer-ip={r}" for r in DENIED_PEERS]
    return "\n".join(lines) + "\n"
