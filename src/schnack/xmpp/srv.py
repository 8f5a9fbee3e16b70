"""DNS SRV records and the order in which to try them (RFC 2782), for clients and servers alike.

RFC 6120 §3.2.1 and XEP-0368 name the records (``_xmpp-client._tcp``, ``_xmpps-server._tcp`` and
so on); looking them up is I/O (:mod:`schnack.dns`), naming and choosing among them happens here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """The part of a DNS SRV record (RFC 2782) that decides where to connect."""

    priority: int
    weight: int
    port: int
    target: str
    direct_tls: bool


def srv_names(domain: str, service: Literal["client", "server"], direct_tls: bool | None = None
              ) -> list[tuple[str, bool]]:
    """The SRV names of ``service`` at ``domain``, each with whether it means direct TLS:
    ``_xmpps-…`` (XEP-0368 §3) and ``_xmpp-…`` (STARTTLS, RFC 6120 §3.2.1), or the one kind
    ``direct_tls`` names."""
    return [(f"_{'xmpps' if tls else 'xmpp'}-{service}._tcp.{domain}", tls)
            for tls in (True, False) if direct_tls is None or direct_tls == tls]


def srv_order(records: Sequence[SrvRecord], rng: random.Random | None = None) -> list[SrvRecord]:
    """RFC 2782: lowest priority first; within a priority, a weighted random order."""
    rng = rng or random.Random()
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        # Zero-weight records first, so that they have a small chance of being picked early.
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


def no_service(records: Sequence[SrvRecord]) -> bool:
    """Whether the records say the service is not offered at all: only the target "." (RFC 6120 §3.2.1)."""
    return bool(records) and all(r.target == "" for r in records)
