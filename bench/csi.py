"""What an idle phone receives in an hour, with Client State Indication (XEP-0352) and without.

``python -m bench.csi`` starts ``schnack serve`` (as :mod:`bench.servers` does for the load
generator) with a phone account and its contacts. The contacts pre-approve the phone's
subscription (RFC 6121 §3.4) and the phone subscribes to each, so it gets their presence; each
contact then changes presence every few minutes, as phones do when their screen goes on and off.
The hour is simulated quickly: what counts is what reaches the phone, not when.

The phone is measured twice, on a fresh session each time: once sending ``<inactive/>`` at the
start of the hour and ``<active/>`` at its end (the user looks at it once), so that it then gets
what the server held back; once without, getting every change as it happens. Both runs start
after the phone's initial presence and end with a ping whose answer marks that everything has
arrived; that answer is left out of the figures.

``bytes`` is the TCP payload (TLS records included) the kernel counted for the phone's socket
(``tcpi_bytes_received`` of TCP_INFO); ``bytes_with_headers`` adds 52 bytes of IPv4 and TCP
headers (with timestamps) for each stanza, which over a real hour travels in a segment of its
own. Whitespace keepalives are not included (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import itertools
import json
import shlex
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from . import procfs
from .client import IQ, Connection, Element, insecure_tls_context, login
from .servers import Target, private_driver

PASSWORD = "bench-csi-password"
PHONE = "phone"
TIMEOUT = 60.0
HEADERS = 52  # IPv4 (20) + TCP (20) + timestamps option (12) per segment
INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"
# Entity capabilities as Conversations sends them with every presence (XEP-0115).
_CAPS_VER = base64.b64encode(hashlib.sha1(b"bench.csi").digest()).decode()
_CAPS = f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://conversations.im' ver='{_CAPS_VER}'/>"
_TCPI_BYTES_RECEIVED = 128  # offset in struct tcp_info (linux/tcp.h)


class Peer:
    """A logged-in connection that can wait for the answer to a ping and counts what else arrives."""

    def __init__(self, conn: Connection, domain: str) -> None:
        self.conn = conn
        self.domain = domain
        self.stanzas = 0
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._ids = itertools.count()
        conn.start_handling(self._on_stanza)

    def _on_stanza(self, el: Element) -> None:
        waiter = self._waiting.pop(el.attrs.get("id", ""), None) if el.tag == IQ else None
        if waiter is not None:
            waiter.set_result(None)
        else:
            self.stanzas += 1

    async def ping(self) -> None:
        """XEP-0199: once answered, the server has processed everything sent before."""
        key = f"ping{next(self._ids)}"
        waiter = self._waiting[key] = asyncio.get_running_loop().create_future()
        self.conn.send(f"<iq type='get' id='{key}' to='{self.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await asyncio.wait_for(waiter, TIMEOUT)

    def bytes_received(self) -> int:
        """TCP payload bytes received on this connection so far, as the kernel counted them."""
        assert self.conn.transport is not None
        sock: socket.socket = self.conn.transport.get_extra_info("socket")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        received: int = struct.unpack_from("=Q", info, _TCPI_BYTES_RECEIVED)[0]
        return received


def presence(minute: int, every: int) -> str:
    """A contact's presence: away and back in turn."""
    show = "<show>away</show>" if (minute // every) % 2 == 0 else ""
    return f"<presence>{show}{_CAPS}</presence>"


async def _login(target: Target, user: str, resource: str) -> Peer:
    conn = await login(
        target.host, target.port, target.domain, user, PASSWORD,
        resource=resource, tls=insecure_tls_context(), presence=True, timeout=TIMEOUT,
    )  # fmt: skip
    return Peer(conn, target.domain)


async def _hour(
    target: Target, contacts: list[Peer], *, csi: bool, every: int, minutes: int
) -> dict[str, int]:
    phone = await _login(target, PHONE, "csi" if csi else "plain")
    try:
        await phone.ping()  # the contacts' presence, answering the phone's initial presence, is in
        if csi:
            phone.conn.send(INACTIVE)
        await phone.ping()
        before = phone.bytes_received()
        await phone.ping()
        start = phone.bytes_received()
        ping = start - before
        stanzas = phone.stanzas
        changes = 0
        for minute in range(minutes):
            for i, contact in enumerate(contacts):
                if minute % every == i % every:
                    contact.conn.send(presence(minute, every))
                    changes += 1
        await asyncio.gather(*(contact.ping() for contact in contacts))
        if csi:
            phone.conn.send(ACTIVE)
        await phone.ping()
        received = phone.bytes_received() - start - ping
        count = phone.stanzas - stanzas
        return {
            "presence_changes": changes,
            "stanzas": count,
            "bytes": received,
            "bytes_with_headers": received + HEADERS * count,
        }
    finally:
        await phone.conn.close()


async def measure(target: Target, contacts: int, every: int, minutes: int) -> dict[str, dict[str, int]]:
    """Both runs against a server whose accounts exist; the subscriptions are made here."""
    friends = [await _login(target, f"contact{i}", "desk") for i in range(contacts)]
    try:
        phone = await _login(target, PHONE, "setup")
        try:
            for friend in friends:
                friend.conn.send(f"<presence type='subscribed' to='{PHONE}@{target.domain}'/>")
            await asyncio.gather(*(friend.ping() for friend in friends))
            for i in range(contacts):
                phone.conn.send(f"<presence type='subscribe' to='contact{i}@{target.domain}'/>")
            await phone.ping()
        finally:
            await phone.conn.close()
        return {
            "without_csi": await _hour(target, friends, csi=False, every=every, minutes=minutes),
            "with_csi": await _hour(target, friends, csi=True, every=every, minutes=minutes),
        }
    finally:
        for friend in friends:
            await friend.conn.close()


def run(contacts: int, every: int, minutes: int) -> dict[str, dict[str, int]]:
    """Start ``schnack serve`` with the accounts, measure, stop it."""
    with private_driver("schnack") as driver:
        target = driver.start([PHONE, *(f"contact{i}" for i in range(contacts))], PASSWORD)
        return uvloop.run(measure(target, contacts, every, minutes))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.csi",
        description="Bytes an idle phone receives per simulated hour, with and without client state indication.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--contacts", type=_positive, default=20, help="contacts whose presence the phone gets"
    )
    parser.add_argument(
        "--every", type=_positive, default=5, help="minutes between two changes of one contact"
    )
    parser.add_argument("--minutes", type=_positive, default=60, help="simulated minutes")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = run(args.contacts, args.every, args.minutes)
    result = {
        "command": shlex.join(["python", "-m", "bench.csi", *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": procfs.machine_facts(),
        "contacts": args.contacts,
        "every_minutes": args.every,
        "minutes": args.minutes,
        "figures": figures,
    }
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['contacts']} contacts, each changing presence every {result['every_minutes']} minutes, "
        f"for {result['minutes']} simulated minutes: {result['command']}"
    ]
    for name, figures in result["figures"].items():
        lines.append(
            f"  {name.replace('_', ' ')}: {figures['stanzas']} stanzas for {figures['presence_changes']} changes, "
            f"{figures['bytes']:,} bytes ({figures['bytes_with_headers']:,} with IP/TCP headers)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
