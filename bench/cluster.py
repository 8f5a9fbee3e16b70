"""``make bench-cluster``: messages per second and server CPU per message on 1, 2 and 3 cluster
nodes on this machine, and the latency a hop between nodes adds.

    python -m bench.cluster [--nodes 1,2,3] [--pairs 20] [--messages 200] [--window 10] [--samples 200]
                            [--sqlite]

Each node is a ``schnack serve`` process on one shared PostgreSQL schema and one Redis key prefix
(fresh for every run, removed afterwards; ``SCHNACK_BENCH_PG`` and ``SCHNACK_BENCH_REDIS`` name
the servers, the local ones by default). ``pairs`` senders and receivers log in spread over the
nodes, each receiver on the node after its sender's, so that with more than one node every
message crosses the bus. Each sender keeps ``window`` OMEMO-shaped messages in flight to its
receiver's full JID (as the ``chat`` scenario of bench/scenarios.py does); throughput is the
messages received over the time from the first sent to the last received, and CPU is the user
plus system time of all node processes over that time, per message.

The hop: one client sends ``samples`` messages one at a time, each after the last arrived, to a
receiver on the same node and then to one on another node; the difference of the median
latencies is what a hop through Redis to another node adds.

With ``--sqlite``, the same load also runs against one node on SQLite without a ``[cluster]``
section, the reference a cluster node's CPU per message is divided by.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import redis.asyncio as aioredis

from schnack.server.storage import open_storage
from schnack.xmpp.sasl import derive_credentials

from . import procfs
from .client import MESSAGE, Connection, Element, insecure_tls_context, login
from .scenarios import omemo_message

PG = os.environ.get("SCHNACK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SCHNACK_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PASSWORD = "bench-password"
DOMAIN = "localhost"


class Node:
    """One ``schnack serve`` process of the measured cluster."""

    def __init__(self, workdir: Path, name: str, storage_url: str, prefix: str | None) -> None:
        """A node of the cluster under ``prefix``; without one, a server on its own."""
        self.name = name
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        cluster = f'[cluster]\nredis_url = "{REDIS}"\nnode_name = "{name}"\nkey_prefix = "{prefix}"\n'
        self.config.write_text(
            f'domains = ["{DOMAIN}"]\ndata_dir = "state-{name}"\nlog_level = "warning"\n'
            '[listen]\nc2s = ["127.0.0.1:0"]\nc2s_tls = []\nhttp = []\nhttps = []\n'
            f'[storage]\nurl = "{storage_url}"\n' + (cluster if prefix is not None else "")
        )
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("w") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "schnack.cli", "serve", "--config", str(self.config),
                stdout=asyncio.subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        while "add a user" not in (text := self.log.read_text()):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {self.name} did not start:\n{text[-2000:]}")
            await asyncio.sleep(0.1)
        port = text.split(" (STARTTLS)")[0].rpartition("port ")[2]
        self.port = int(port)

    def cpu(self) -> float:
        assert self.proc is not None
        return procfs.cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 60)


@contextlib.asynccontextmanager
async def cluster(count: int, users: int) -> AsyncIterator[list[Node]]:
    """``count`` running nodes on a fresh schema and key prefix, with accounts user0..user{users-1}."""
    schema = f"bench_{secrets.token_hex(6)}"
    prefix = f"schnack-bench-{secrets.token_hex(4)}:"
    separator = "&" if "?" in PG else "?"
    storage_url = f"{PG}{separator}{urlencode({'schema': schema})}"
    await _accounts(storage_url, users)
    with tempfile.TemporaryDirectory(prefix="schnack-bench-cluster-") as workdir:
        nodes = [Node(Path(workdir), f"n{i}", storage_url, prefix) for i in range(count)]
        try:
            await asyncio.gather(*(node.start() for node in nodes))
            yield nodes
        finally:
            await asyncio.gather(*(node.stop() for node in nodes))
            admin = await asyncpg.connect(PG)
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await admin.close()
            client = aioredis.Redis.from_url(REDIS)
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def _accounts(storage_url: str, users: int) -> None:
    storage = await open_storage(storage_url)
    try:
        credentials = derive_credentials(PASSWORD)
        for user in range(users):
            await storage.accounts.create(DOMAIN, f"user{user}", credentials)
    finally:
        await storage.close()


@contextlib.asynccontextmanager
async def alone(users: int) -> AsyncIterator[list[Node]]:
    """One running server on SQLite, no cluster, with accounts user0..user{users-1}."""
    with tempfile.TemporaryDirectory(prefix="schnack-bench-sqlite-") as workdir:
        storage_url = f"sqlite:///{Path(workdir) / 'schnack.db'}"
        await _accounts(storage_url, users)
        node = Node(Path(workdir), "s0", storage_url, None)
        try:
            await node.start()
            yield [node]
        finally:
            await node.stop()


async def connect(node: Node, user: int) -> Connection:
    return await login("127.0.0.1", node.port, DOMAIN, f"user{user}", PASSWORD, resource="bench",
                       tls=insecure_tls_context())


async def throughput(nodes: list[Node], pairs: int, messages: int, window: int) -> dict[str, float]:
    """Saturated chat across the nodes: messages/s and node CPU ms per message."""
    senders = [await connect(nodes[p % len(nodes)], 2 * p) for p in range(pairs)]
    receivers = [await connect(nodes[(p + 1) % len(nodes)], 2 * p + 1) for p in range(pairs)]
    expected = pairs * messages
    received = 0
    done = asyncio.Event()
    last = 0.0

    def receiver(slots: asyncio.Semaphore) -> Callable[[Element], None]:
        def on_stanza(el: Element) -> None:
            nonlocal received, last
            if el.tag == MESSAGE and el.attrs.get("type") != "error":
                received += 1
                last = time.monotonic()
                slots.release()
                if received >= expected:
                    done.set()

        return on_stanza

    windows = [asyncio.Semaphore(window) for _ in range(pairs)]
    for conn, slots in zip(receivers, windows, strict=True):
        conn.start_handling(receiver(slots))
    for conn in senders:
        conn.start_handling(lambda _el: None)
    await asyncio.sleep(1)  # every login is in the directory

    async def send(p: int) -> None:
        before, after = omemo_message(f"user{2 * p + 1}@{DOMAIN}/bench", 64)
        for seq in range(messages):
            await windows[p].acquire()
            senders[p].send(f"{before}{p}-{seq}{after}")

    cpu_before = sum(node.cpu() for node in nodes)
    start = time.monotonic()
    sending = asyncio.gather(*(send(p) for p in range(pairs)))
    await asyncio.wait_for(done.wait(), 300)
    await sending
    cpu = sum(node.cpu() for node in nodes) - cpu_before
    span = last - start
    for conn in [*senders, *receivers]:
        await conn.close()
    return {"messages_per_s": expected / span, "cpu_ms_per_msg": 1000 * cpu / expected}


async def hop(nodes: list[Node], samples: int) -> dict[str, float]:
    """Median one-way latency in ms to a receiver on the same node and on another node."""
    sender = await connect(nodes[0], 0)
    local = await connect(nodes[0], 1)
    remote = await connect(nodes[1], 2)
    arrived: asyncio.Queue[float] = asyncio.Queue()
    for conn in (local, remote):
        conn.start_handling(lambda el: arrived.put_nowait(time.monotonic()) if el.tag == MESSAGE else None)
    sender.start_handling(lambda _el: None)
    await asyncio.sleep(1)
    figures: dict[str, float] = {}
    for label, user in (("same_node_ms", 1), ("other_node_ms", 2)):
        before, after = omemo_message(f"user{user}@{DOMAIN}/bench", 64)
        latencies = []
        for seq in range(samples):
            sent = time.monotonic()
            sender.send(f"{before}hop-{seq}{after}")
            latencies.append(1000 * (await asyncio.wait_for(arrived.get(), 30) - sent))
        figures[label] = statistics.median(latencies)
    for conn in (sender, local, remote):
        await conn.close()
    figures["added_by_hop_ms"] = figures["other_node_ms"] - figures["same_node_ms"]
    return figures


async def run(counts: Sequence[int], pairs: int, messages: int, window: int, samples: int,
              reference: bool = False) -> str:
    lines = ["| nodes | messages/s | node CPU ms per message |", "| --- | --- | --- |"]
    cpu: dict[int, float] = {}
    for count in counts:
        async with cluster(count, 2 * pairs) as nodes:
            result = await throughput(nodes, pairs, messages, window)
        cpu[count] = result["cpu_ms_per_msg"]
        lines.append(f"| {count} | {result['messages_per_s']:.0f} | {result['cpu_ms_per_msg']:.2f} |")
        print(lines[-1], file=sys.stderr)
    if reference:
        async with alone(2 * pairs) as nodes:
            result = await throughput(nodes, pairs, messages, window)
        lines.append(f"| 1, SQLite, no cluster | {result['messages_per_s']:.0f} | {result['cpu_ms_per_msg']:.2f} |")
        print(lines[-1], file=sys.stderr)
        lines += ["", "| nodes | node CPU per message over the SQLite server's |", "| --- | --- |"]
        lines += [f"| {count} | {cpu[count] / result['cpu_ms_per_msg']:.2f} |" for count in counts]
    async with cluster(2, 3) as nodes:
        latency = await hop(nodes, samples)
    lines += ["", "| receiver | median latency |", "| --- | --- |",
              f"| same node | {latency['same_node_ms']:.2f} ms |",
              f"| other node (one hop through Redis) | {latency['other_node_ms']:.2f} ms |",
              f"| added by the hop | {latency['added_by_hop_ms']:.2f} ms |"]
    return "\n".join(lines)


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("node counts are positive integers, e.g. 1,2,3")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=_counts, default=[1, 2, 3], help="node counts to measure (1,2,3)")
    parser.add_argument("--pairs", type=int, default=20, help="sender/receiver pairs (20)")
    parser.add_argument("--messages", type=int, default=200, help="messages per pair (200)")
    parser.add_argument("--window", type=int, default=10, help="messages in flight per pair (10)")
    parser.add_argument("--samples", type=int, default=200, help="messages timed one by one for the hop (200)")
    parser.add_argument("--sqlite", action="store_true",
                        help="also measure one server on SQLite without a cluster, and the ratios to it")
    args = parser.parse_args(argv)
    facts = procfs.machine_facts()
    print(f"{time.strftime('%Y-%m-%d')}, {facts['cpu']}, {facts['cores']} cores, {facts['memory']}")
    print(asyncio.run(run(args.nodes, args.pairs, args.messages, args.window, args.samples, args.sqlite)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
