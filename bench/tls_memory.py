"""What an idle TLS connection costs in memory, without XMPP: a bare TLS server, one event loop.

    python -m bench.tls_memory [-n 1000] [--loop uvloop|asyncio] [--link] [--plain] [--no-tickets]

A server process (this module with ``--serve``) accepts connections with a default server
context and an ECDSA P-256 certificate (what schnack makes for itself), writes two bytes and
waits for input that never comes. The generator opens 20 connections first (the server's
one-off allocations), reads the server's ``/proc/PID/smaps_rollup``, opens ``-n`` more, each
sending 200 bytes as a stanza would, waits two seconds and reads it again: the growth divided by
``-n`` is the cost of one idle connection. Options change one thing at a time:

- ``--loop asyncio``: asyncio's own SSLProtocol instead of uvloop's;
- ``--link``: schnack's own connection object (``server/link.py``), which runs TLS on memory BIOs
  over a plain transport, instead of the loop's TLS layer and asyncio's streams;
- ``--plain``: no TLS at all (what the loop and the Python objects cost alone);
- ``--no-tickets``: no TLS 1.3 session tickets.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import uvloop

from schnack.server.link import Link
from schnack.server.tls import make_self_signed

from .ports import free_port


def serve(args: argparse.Namespace) -> None:
    ctx: ssl.SSLContext | None = None
    if not args.plain:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.dir / "cert.pem", args.dir / "key.pem")
        if args.no_tickets:
            ctx.num_tickets = 0
    held: list[asyncio.StreamWriter | Link] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        writer.write(b"hi")
        await writer.drain()
        await reader.read(1)

    async def on_link(link: Link) -> None:
        held.append(link)
        link.write(b"hi")
        await link.read()

    async def main() -> None:
        if args.link:
            await asyncio.get_running_loop().create_server(lambda: Link(on_link, ctx), "127.0.0.1", args.port)
        else:
            await asyncio.start_server(on_client, "127.0.0.1", args.port, ssl=ctx)
        print("ready", flush=True)
        await asyncio.Event().wait()

    (uvloop.run if args.loop == "uvloop" else asyncio.run)(main())


def memory_kib(pid: int) -> dict[str, int]:
    """The process's smaps_rollup figures (Rss, Anonymous, ...), in KiB."""
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {key: int(value.split()[0]) for key, value in (line.split(":", 1) for line in lines)}


async def open_idle(port: int, count: int, tls: bool) -> list[asyncio.StreamWriter]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx if tls else None)
        await reader.readexactly(2)
        writer.write(b"x" * 200)
        writers.append(writer)
    return writers


def measure(args: argparse.Namespace, server: subprocess.Popen[str]) -> dict[str, float]:
    async def run() -> dict[str, float]:
        first = await open_idle(args.port, 20, not args.plain)
        await asyncio.sleep(0.5)
        before = memory_kib(server.pid)
        rest = await open_idle(args.port, args.count, not args.plain)
        await asyncio.sleep(2)
        after = memory_kib(server.pid)
        for writer in first + rest:
            writer.close()
        return {key: (after[key] - before[key]) / args.count for key in ("Rss", "Anonymous")}

    return asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls_memory", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=1000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--link", action="store_true")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--no-tickets", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    if args.serve:
        serve(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-tls-memory-") as folder:
        args.dir, args.port = Path(folder), free_port()
        make_self_signed(["bench.localhost"], args.dir / "cert.pem", args.dir / "key.pem")
        argv_server = [sys.executable, "-m", "bench.tls_memory", *given, "--serve", "--port", str(args.port)]
        with subprocess.Popen([*argv_server, "--dir", folder], stdout=subprocess.PIPE, text=True) as server:
            try:
                assert server.stdout is not None
                if server.stdout.readline().strip() != "ready":
                    raise SystemExit("the TLS server did not start")
                started = time.perf_counter()
                figures = measure(args, server)
            finally:
                server.terminate()
    print(
        f"{args.count} idle connections in {time.perf_counter() - started:.0f} s, server memory per connection: "
        + ", ".join(f"{key} {value:.1f} KiB" for key, value in figures.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
