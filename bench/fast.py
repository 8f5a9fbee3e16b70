"""Bytes of a reconnect with FAST (XEP-0484) and resumption inside SASL2, against a fresh SCRAM login.

``python -m bench.fast`` starts ``schnack serve`` (as :mod:`bench.servers` does for the load
generator) with one account and logs in through a relay on 127.0.0.1 that counts the TCP payload
(TLS records included) in each direction, from the connection to the moment the client can send
stanzas. Each login uses our client's negotiation (:class:`schnack.client.net.Link`) on the
STARTTLS port with a full TLS handshake (no TLS session resumption), ``rounds`` times:

- ``scram_bind``: a fresh login as a client without SASL2 does it: RFC 6120 SASL with
  SCRAM-SHA-256 (-PLUS where the channel allows), the stream restart, resource binding;
- ``sasl2_password``: the first login of a phone with SASL2: SCRAM, Bind 2 with stream management
  enabled, a FAST token asked for;
- ``fast_resume``: the phone comes back after its link died: the token, the features it learnt
  and the resumption of its session go in one flight right behind the stream header (XEP-0509).

``round_trips`` counts how often the client, once on TLS, sent something and then waited for
the server (:attr:`Link.round_trips`). ``after_tls`` leaves out what every login here shares:
the plaintext stream header and features, STARTTLS and the TLS handshake with the server's
session tickets, measured on a connection that stops there (``handshake``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from schnack.client.net import Endpoint, Link
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.sasl2 import UserAgent
from schnack.xmpp.payloads.sm import Enable, Enabled, Resume

from . import procfs
from .client import insecure_tls_context
from .servers import Target, private_driver

PASSWORD = "bench-fast-password"
USER = "phone"
TIMEOUT = 60.0
TICKETS = 0.3
AGENT = UserAgent("5b0c7f62-8a2e-4b8e-9d7e-3c2a1f0e9d11", "bench", "phone")


class Relay:
    """Forwards 127.0.0.1:``port`` to the server and counts the bytes of the current connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.target = port
        self.port = 0
        self.up = 0
        self.down = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def reset(self) -> None:
        self.up = self.down = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection(self.host, self.target)
        for task in (self._pump(reader, upstream, up=True), self._pump(upstream_reader, writer, up=False)):
            running = asyncio.ensure_future(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _handshake(relay: Relay, domain: str) -> dict[str, int]:
    """The bytes up to a finished TLS handshake after STARTTLS, tickets included."""
    relay.reset()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{ns.STREAMS}' "
                 f"to='{domain}' version='1.0'>".encode())
    await reader.readuntil(b"</features>")
    writer.write(f"<starttls xmlns='{ns.TLS}'/>".encode())
    await reader.readuntil(b"/>")
    await writer.start_tls(insecure_tls_context(), server_hostname=domain)
    # TLS 1.3 session tickets follow the handshake; the logins receive them too.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(1), TICKETS)
    figures = {"sent": relay.up, "received": relay.down}
    writer.transport.abort()
    return figures


async def _login(relay: Relay, domain: str, **options: Any) -> tuple[Link, dict[str, int]]:
    relay.reset()
    link = await Link.open(JID(USER, domain), PASSWORD, verify=False, timeout=TIMEOUT,
                           endpoints=[Endpoint("127.0.0.1", relay.port, direct_tls=False)], **options)
    return link, {"sent": relay.up, "received": relay.down, "round_trips": link.round_trips}


async def measure(target: Target, rounds: int) -> dict[str, dict[str, Any]]:
    """Every kind of login ``rounds`` times against a server where the account exists."""
    relay = Relay(target.host, target.port)
    await relay.start()
    runs: dict[str, list[dict[str, int]]] = {"scram_bind": [], "sasl2_password": [], "fast_resume": []}
    try:
        handshake = _summary([await _handshake(relay, target.domain) for _ in range(rounds)])
        for _ in range(rounds):
            link, figures = await _login(relay, target.domain, resource="bench")
            runs["scram_bind"].append(figures)
            await link.close(timeout=5)
            link, figures = await _login(relay, target.domain, resource=None, user_agent=AGENT, tag="bench",
                                         enable=Enable(resume=True))
            runs["sasl2_password"].append(figures)
            token, features, jid = link.stream.token, link.stream.sasl2_features, link.jid
            enabled = link.enabled
            if token is None or features is None or jid is None or not isinstance(enabled, Enabled) or not enabled.id:
                raise RuntimeError("the server gave no token, features or resumable session")
            # The link dies without a closed stream: the session waits to be resumed.
            link.abort()
            link, figures = await _login(relay, target.domain, resource=jid.resource, user_agent=AGENT, tag="bench",
                                         enable=Enable(resume=True), token=token, known_features=features,
                                         resume=Resume(0, enabled.id))
            if link.resumption is None or link.stream.mechanism is None or not link.stream.mechanism.startswith("HT-"):
                raise RuntimeError("the reconnect did not use the token and resume the session")
            runs["fast_resume"].append(figures)
            await link.close(timeout=5)
    finally:
        await relay.stop()
    summary: dict[str, dict[str, Any]] = {"handshake": handshake}
    for name, items in runs.items():
        summary[name] = _summary(items)
        summary[name]["after_tls"] = summary[name]["total"] - handshake["total"]
    return summary


def _summary(items: list[dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("sent", "received", "round_trips"):
        if all(key in item for item in items):
            out[key] = int(statistics.median(item[key] for item in items))
    out["total"] = out["sent"] + out["received"]
    return out


def run(rounds: int) -> dict[str, dict[str, Any]]:
    """Start ``schnack serve`` with the account, measure, stop it."""
    with private_driver("schnack") as driver:
        target = driver.start([USER], PASSWORD)
        return uvloop.run(measure(target, rounds))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.fast",
        description="Bytes on the wire of a FAST reconnect with resumption against a fresh SCRAM login.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=_positive, default=5, help="logins of each kind (the median is kept)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = run(args.rounds)
    result = {
        "command": shlex.join(["python", "-m", "bench.fast", *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": procfs.machine_facts(),
        "rounds": args.rounds,
        "figures": figures,
    }
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [f"median of {result['rounds']} logins each, STARTTLS with a full TLS handshake: {result['command']}"]
    for name, figures in result["figures"].items():
        line = (f"  {name.replace('_', ' ')}: {figures['sent']:,} bytes sent, {figures['received']:,} received, "
                f"{figures['total']:,} in all")
        if "after_tls" in figures:
            line += f" ({figures['after_tls']:,} after TLS); {figures['round_trips']} round trips after TLS"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
