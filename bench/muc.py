"""Fan-out of group messages (XEP-0045) to a large private group: deliveries per second and server
CPU per delivery.

``python -m bench.muc`` starts ``schnack serve`` (as :mod:`bench.servers` does for the load
generator) with an owner and ``members - 1`` other accounts, all logged in and available. The
owner creates a private group (the default configuration: members-only, non-anonymous,
archived), makes everyone a member with one ``muc#admin`` request, and everyone enters; then
half of the members switch their client to inactive (XEP-0352), as phones in a pocket do. The
measured part: ``messages`` groupchat messages, each an OMEMO-shaped payload with a fallback body
as Conversations sends it, from members in turn, one at a time (the next goes when every member
has the previous one); a delivery is one message arriving at one member, the sender's echo
included. ``cpu_ms_per_delivery`` is the server's user and system CPU time (from /proc) over the
measured part, divided by the deliveries; the figure includes archiving each message once.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from . import procfs
from .client import IQ, MESSAGE, Connection, Element, insecure_tls_context, login
from .servers import Target, private_driver

PASSWORD = "bench-muc-password"
TIMEOUT = 600.0
ROOM_NAME = "bench"
MUC = "http://jabber.org/protocol/muc"
INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
OMEMO = (
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1001'><key rid='2002'>a2V5a2V5a2V5a2V5</key>"
    "<iv>aXZpdml2aXZpdml2</iv></header><payload>Y2lwaGVydGV4dGNpcGhlcnRleHQ=</payload></encrypted>"
)
FALLBACK = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."


class Member:
    """A logged-in member that counts the group messages it receives and can await IQ answers."""

    def __init__(self, conn: Connection, domain: str, nick: str) -> None:
        self.conn = conn
        self.domain = domain
        self.nick = nick
        self.received = 0
        self.joined = asyncio.get_running_loop().create_future()
        self._target = 0
        self._reached: asyncio.Future[None] | None = None
        self._waiting: dict[str, asyncio.Future[Element]] = {}
        self._ids = itertools.count()
        conn.start_handling(self._on_stanza)

    def _on_stanza(self, el: Element) -> None:
        if el.tag == IQ:
            waiter = self._waiting.pop(el.attrs.get("id", ""), None)
            if waiter is not None:
                waiter.set_result(el)
        elif el.tag == MESSAGE and el.attrs.get("type") == "groupchat":
            if any(child.local == "encrypted" for child in el.children):
                self.received += 1
                if self._reached is not None and self.received >= self._target and not self._reached.done():
                    self._reached.set_result(None)
            elif any(child.local == "subject" for child in el.children) and not self.joined.done():
                self.joined.set_result(None)

    async def iq(self, stanza: str) -> Element:
        key = f"iq{next(self._ids)}"
        waiter = self._waiting[key] = asyncio.get_running_loop().create_future()
        self.conn.send(stanza.replace("id='?'", f"id='{key}'"))
        return await asyncio.wait_for(waiter, TIMEOUT)

    async def ping(self) -> None:
        await self.iq(f"<iq type='get' id='?' to='{self.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")

    def expect(self, total: int) -> asyncio.Future[None]:
        """A future done once ``total`` group messages have arrived in all."""
        self._target = total
        self._reached = asyncio.get_running_loop().create_future()
        if self.received >= total:
            self._reached.set_result(None)
        return self._reached


async def _login(target: Target, user: str) -> Member:
    conn = await login(target.host, target.port, target.domain, user, PASSWORD, resource="phone",
                       tls=insecure_tls_context(), presence=True, timeout=TIMEOUT)
    return Member(conn, target.domain, user)


async def _gathered(coroutines: Sequence[Any], limit: int = 64) -> list[Any]:
    """Run the coroutines, at most ``limit`` at a time (logins cost the server a SCRAM each)."""
    gate = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> Any:
        async with gate:
            return await coroutine

    return list(await asyncio.gather(*(one(c) for c in coroutines)))


async def measure(target: Target, users: list[str], messages: int) -> dict[str, Any]:
    room = f"{ROOM_NAME}@groups.{target.domain}"
    started = time.perf_counter()
    members = await _gathered([_login(target, user) for user in users])
    owner, others = members[0], members[1:]
    try:
        logged_in = time.perf_counter()
        owner.conn.send(f"<presence to='{room}/{owner.nick}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>")
        await asyncio.wait_for(owner.joined, TIMEOUT)
        await owner.iq(f"<iq type='set' id='?' to='{room}'><query xmlns='{MUC}#owner'>"
                       "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
        items = "".join(f"<item affiliation='member' jid='{m.nick}@{target.domain}'/>" for m in others)
        answer = await owner.iq(f"<iq type='set' id='?' to='{room}'><query xmlns='{MUC}#admin'>{items}</query></iq>")
        if answer.attrs.get("type") != "result":
            raise RuntimeError("the owner could not add the members")
        for batch in range(0, len(others), 64):
            group = others[batch:batch + 64]
            for member in group:
                member.conn.send(f"<presence to='{room}/{member.nick}'><x xmlns='{MUC}'>"
                                 "<history maxstanzas='0'/></x></presence>")
            await asyncio.wait_for(asyncio.gather(*(m.joined for m in group)), TIMEOUT)
        joined = time.perf_counter()
        inactive = members[1::2]
        for member in inactive:
            member.conn.send(INACTIVE)
        await asyncio.gather(*(m.ping() for m in members))
        assert target.pid is not None
        cpu_before = procfs.cpu_seconds(target.pid)
        start = time.perf_counter()
        for n in range(messages):
            sender = members[n % len(members)]
            everyone = [m.expect(n + 1) for m in members]
            sender.conn.send(f"<message to='{room}' type='groupchat' id='b{n}'>{OMEMO}<body>{FALLBACK}</body>"
                             "<store xmlns='urn:xmpp:hints'/></message>")
            await asyncio.wait_for(asyncio.gather(*everyone), TIMEOUT)
        elapsed = time.perf_counter() - start
        cpu = procfs.cpu_seconds(target.pid) - cpu_before
        deliveries = messages * len(members)
        return {
            "members": len(members),
            "inactive": len(inactive),
            "messages": messages,
            "deliveries": deliveries,
            "seconds": round(elapsed, 3),
            "deliveries_per_second": round(deliveries / elapsed),
            "server_cpu_seconds": round(cpu, 3),
            "cpu_ms_per_delivery": round(cpu * 1000 / deliveries, 4),
            "cpu_ms_per_message": round(cpu * 1000 / messages, 2),
            "login_seconds": round(logged_in - started, 1),
            "join_seconds": round(joined - logged_in, 1),
            "server_rss_mib": round(procfs.rss_kib(target.pid) / 1024, 1),
        }
    finally:
        await _gathered([m.conn.close() for m in members])


def run(members: int, messages: int) -> dict[str, Any]:
    """Start ``schnack serve`` with the accounts, measure, stop it."""
    users = ["owner", *(f"member{i}" for i in range(1, members))]
    with private_driver("schnack") as driver:
        target = driver.start(users, PASSWORD)
        return uvloop.run(measure(target, users, messages))


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: must be at least {minimum}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.muc",
        description="Fan-out of group messages to a private group: deliveries per second, server CPU per delivery.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--members", type=_at_least(2), default=1024, help="members of the group, all online")
    parser.add_argument("--messages", type=_at_least(1), default=50, help="messages sent to the group")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = {
        "command": shlex.join(["python", "-m", "bench.muc", *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": procfs.machine_facts(),
        "figures": run(args.members, args.messages),
    }
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def render(result: dict[str, Any]) -> str:
    f = result["figures"]
    return (
        f"{f['members']} members ({f['inactive']} inactive), {f['messages']} messages: {result['command']}\n"
        f"  {f['deliveries']:,} deliveries in {f['seconds']} s = {f['deliveries_per_second']:,} deliveries/s\n"
        f"  server CPU {f['server_cpu_seconds']} s = {f['cpu_ms_per_delivery']} ms per delivery "
        f"({f['cpu_ms_per_message']} ms per message)\n"
        f"  set-up: logins {f['login_seconds']} s, entering the group {f['join_seconds']} s; "
        f"server RSS {f['server_rss_mib']} MiB"
    )


if __name__ == "__main__":
    sys.exit(main())
