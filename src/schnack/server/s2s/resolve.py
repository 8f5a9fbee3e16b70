"""Where another server's domain is reached (RFC 6120 §3.2, XEP-0368 for direct TLS).

In order: the static ``[s2s] hosts`` table (a domain mapped to ``host:port``, STARTTLS); an
IP-literal domain, reached at that address on port 5269; else the DNS SRV records
``_xmpps-server._tcp`` (direct TLS) and ``_xmpp-server._tcp`` (STARTTLS), lowest priority first
and weighted at random within a priority (RFC 2782); with no records, the domain itself on port
5269 (§3.2.2, resolved to A/AAAA when connecting). A single SRV record with the target "." says
that the domain offers no s2s service (§3.2.1).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...dns import srv_records
from ...xmpp.srv import no_service, srv_names, srv_order
from ..config import parse_address

PORT = 5269


class NoService(Exception):
    """The domain says in DNS that it offers no server-to-server service."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address to try: host name or IP, port, and whether TLS starts at once (XEP-0368)."""

    host: str
    port: int
    direct_tls: bool = False


def ip_literal(domain: str) -> str | None:
    """The address of an IP-literal domain (``192.0.2.1`` or ``[2001:db8::1]``), else None."""
    bare = domain[1:-1] if domain.startswith("[") and domain.endswith("]") else domain
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


async def endpoints(domain: str, overrides: Mapping[str, str], *,
                    dns_servers: Sequence[str] | None = None) -> list[Endpoint]:
    """Where to try to connect to ``domain``, in order (see the module docstring)."""
    override = overrides.get(domain)
    if override is not None:
        host, port = parse_address(f"s2s.hosts.{domain}", override)
        return [Endpoint(host, port)]
    address = ip_literal(domain)
    if address is not None:
        return [Endpoint(address, PORT)]
    records = await srv_records(srv_names(domain, "server"), dns_servers)
    if no_service(records):
        raise NoService(f"{domain} offers no server-to-server service")
    if records:
        return [Endpoint(r.target, r.port, r.direct_tls) for r in srv_order(records) if r.target]
    return [Endpoint(domain, PORT)]
