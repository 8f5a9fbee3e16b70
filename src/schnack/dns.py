"""DNS SRV lookups (RFC 2782) for the client and the server: the I/O half of :mod:`schnack.xmpp.srv`.

Both look up the direct TLS (XEP-0368) and the STARTTLS records of a domain (RFC 6120 §3.2.1);
which records mean what, and the order to try them in, stay in the sans-IO module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiodns
import pycares

from .xmpp.srv import SrvRecord

# Per resolver and name: a domain whose DNS does not answer must not hold a login up for long.
_TIMEOUT = 5
_TRIES = 2


async def srv_records(names: Sequence[tuple[str, bool]], dns_servers: Sequence[str] | None = None
                      ) -> list[SrvRecord]:
    """The SRV records under each ``(name, direct_tls)``, looked up together; a name without
    records, or whose lookup fails, adds none. ``dns_servers`` ("address" or "address:port")
    replace the system's resolvers."""
    resolver = aiodns.DNSResolver(nameservers=list(dns_servers) if dns_servers else None, timeout=_TIMEOUT,
                                  tries=_TRIES)
    try:
        found = await asyncio.gather(*(_query(resolver, name, direct_tls) for name, direct_tls in names))
    finally:
        await resolver.close()
    return [record for group in found for record in group]


async def _query(resolver: aiodns.DNSResolver, name: str, direct_tls: bool) -> list[SrvRecord]:
    try:
        result = await resolver.query_dns(name, "SRV")
    except aiodns.error.DNSError:
        return []
    return [
        SrvRecord(a.data.priority, a.data.weight, a.data.port, a.data.target.rstrip("."), direct_tls)
        for a in result.answer
        if isinstance(a.data, pycares.SRVRecordData)
    ]
