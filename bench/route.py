"""The server's own work per 1:1 message, in one process: parse, route, archive, serialize.

    python -m bench.route [--pairs 50] [--rounds 40] [--offline]
    valgrind --tool=callgrind --instr-atstart=no python -m bench.route --rounds 10 --callgrind

A server with the default modules (SQLite storage) and ``pairs`` pairs of bound sessions whose
connections only count what they are sent; each round every sender's OMEMO-shaped message (as
in the chat scenario, about 830 bytes) goes through the sender's StreamParser, C2SStream, the
router and every module on the way (both archive writes included) to the receiver's output,
serialized. The rounds run the pairs concurrently, so that archive writes share commits as they
do under load. No sockets and no TLS: what is left is what schnack's code costs.

With ``--offline`` the receivers are not logged in and each message goes to a receiver's bare
JID, so it is stored for it as in the offline burst: the sender's archive, the receiver's
archive and its offline store (XEP-0160). ``--pairs 1`` is one sender's burst, as in
``python -m bench.loadgen offline``; the offline store grows by one message per round.

It prints the CPU time of the process (SQLite's thread included) per 1,000 messages over the
rounds, after five rounds of warm-up. On a shared machine that time is noisy; under callgrind
with ``--callgrind`` the instructions of the measured rounds alone are counted (the script turns
instrumentation on and dumps the counts with ``callgrind_control``), which repeat to a fraction
of a percent: the ``callgrind.out.PID.1`` file holds them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.config import build
from schnack.server.modules.offline import STORE as OFFLINE
from schnack.xmpp.parser import StanzaReceived, StreamParser
from schnack.xmpp.sasl import derive_credentials

from .scenarios import omemo_message

DOMAIN = "localhost"
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
WARM_UP = 5


class CountingConnection:
    """A stream's connection that keeps nothing: it counts the writes and their bytes."""

    websocket = False
    can_starttls = False
    secure = True
    peer = "127.0.0.1:1"

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0

    def write(self, data: str) -> None:
        self.writes += 1
        self.bytes += len(data.encode())

    def close_transport(self) -> None:
        """Nothing to close."""

    def channel_binding(self, _kind: str) -> bytes | None:
        return None


async def measure(pairs: int, rounds: int, callgrind: bool, offline: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-route-") as tmp:
        config = build({"domains": [DOMAIN], "data_dir": str(Path(tmp) / "data"), "listen": {}}, Path(tmp))
        server = Server(config)
        await server.start(listen=False)
        try:
            credentials = derive_credentials("secret")
            senders: list[tuple[C2SStream, StreamParser, str, str]] = []
            receivers: list[CountingConnection] = []
            for i in range(2 * pairs):
                await server.storage.accounts.create(DOMAIN, f"u{i}", credentials)
                if offline and i >= pairs:
                    continue
                conn = CountingConnection()
                stream = C2SStream(server, conn)
                stream.host, stream.username = DOMAIN, f"u{i}"
                await stream.register(stream.new_session("phone"))
                if i < pairs:
                    parser = StreamParser(config.limits.max_stanza_size)
                    parser.feed(HEADER)
                    to = f"u{pairs + i}@{DOMAIN}" if offline else f"u{pairs + i}@{DOMAIN}/phone"
                    head, tail = omemo_message(to, 64)
                    senders.append((stream, parser, head, tail))
                else:
                    receivers.append(conn)

            async def arrived() -> int:
                """Messages the receivers got, or with ``offline`` the messages stored for them."""
                if not offline:
                    return sum(conn.writes for conn in receivers)
                counts = [await server.storage.archive.count(DOMAIN, f"u{pairs + i}", OFFLINE) for i in range(pairs)]
                return sum(counts)

            async def send(stream: C2SStream, parser: StreamParser, data: bytes) -> None:
                for event in parser.feed(data):
                    if isinstance(event, StanzaReceived):
                        await stream.on_element(event.element)

            async def round_(n: int) -> None:
                await asyncio.gather(*(send(s, p, f"{head}m{n}{tail}".encode()) for s, p, head, tail in senders))

            for n in range(WARM_UP):
                await round_(n)
            delivered = await arrived()
            if callgrind:
                _callgrind("--instr=on")
            started = time.process_time()
            for n in range(WARM_UP, WARM_UP + rounds):
                await round_(n)
            cpu = time.process_time() - started
            if callgrind:
                _callgrind("--dump")
            delivered = await arrived() - delivered
            size = sum(conn.bytes for conn in receivers) / max(1, sum(conn.writes for conn in receivers))
        finally:
            await server.stop()
    messages = pairs * rounds
    return {
        "messages": messages,
        "delivered": delivered,
        "cpu_ms_per_1000_msgs": round(cpu * 1e6 / messages, 1),
        "bytes_per_delivery": round(size),
    }


def _callgrind(option: str) -> None:
    subprocess.run(["callgrind_control", option, str(os.getpid())], capture_output=True, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.route", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=50, help="sender and receiver pairs")
    parser.add_argument("--rounds", type=int, default=40, help="measured rounds, one message per sender each")
    parser.add_argument("--callgrind", action="store_true", help="running under callgrind: count the rounds only")
    parser.add_argument("--offline", action="store_true", help="the receivers are offline: their messages are stored")
    args = parser.parse_args(argv)
    figures = uvloop.run(measure(args.pairs, args.rounds, args.callgrind, args.offline))
    for key, value in figures.items():
        print(f"{key}: {value}")
    return 0 if figures["delivered"] == figures["messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
