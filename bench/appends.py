"""The durable write path: what one archive append costs, alone and with others in flight.

    python -m bench.appends [--appends 5000] [--in-flight 1,10,100] [--backends sqlite,postgres] [--postgres URL]

Every message a server accepts is appended to an archive (MAM, offline storage) before the
sender's acknowledgement covers it, so this is the storage call on the path of every message.
For each backend and each number of appends kept in flight at once (1: a single sender waiting
for each message; more: many senders at the same time), ``--appends`` OMEMO-shaped messages
are appended to the archives of ``--accounts`` accounts, and the appends per second, the CPU
time per append (this process: event loop and driver threads) and the median and 99th
percentile latency of one append are printed as a Markdown table. Each backend gets a fresh
store (SQLite in a temporary directory, PostgreSQL in a new schema that is dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from schnack.server.storage import Storage, open_storage

from .mam import HOST, MESSAGE, _with_query


async def run(storage: Storage, appends: int, in_flight: int, accounts: int) -> tuple[float, float, float, float]:
    """Appends per second, CPU milliseconds per append, median and p99 latency in milliseconds."""
    latencies: list[float] = []
    numbers = iter(range(appends))

    async def sender() -> None:
        for n in numbers:
            payload = MESSAGE.format(contact=f"contact{n % 50}", n=n).encode()
            began = time.perf_counter()
            await storage.archive.append(HOST, f"user{n % accounts}", "mam", time.time(), f"contact{n % 50}@{HOST}",
                                         payload)
            latencies.append((time.perf_counter() - began) * 1000)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(in_flight)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    latencies.sort()
    return appends / wall, cpu * 1000 / appends, statistics.median(latencies), latencies[int(len(latencies) * 0.99)]


async def backend(url: str, args: argparse.Namespace) -> list[tuple[int, tuple[float, float, float, float]]]:
    storage = await open_storage(url)
    try:
        # A first round warms caches and connections up; it is not counted.
        await run(storage, min(args.appends, 500), 10, args.accounts)
        return [(n, await run(storage, args.appends, n, args.accounts)) for n in args.in_flight]
    finally:
        await storage.close()


async def main_async(args: argparse.Namespace) -> None:
    print("| backend | in flight | appends/s | CPU ms/append | median ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.backends:
        if name == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                rows = await backend(f"sqlite:///{Path(folder) / 'bench.db'}", args)
        else:
            schema = f"bench_{secrets.token_hex(6)}"
            try:
                rows = await backend(_with_query(args.postgres, schema=schema), args)
            finally:
                admin = await asyncpg.connect(args.postgres)
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await admin.close()
        for in_flight, (rate, cpu, median, p99) in rows:
            print(f"| {name} | {in_flight} | {rate:,.0f} | {cpu:.3f} | {median:.2f} | {p99:.2f} |")


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"{text}: every number must be at least 1")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.appends", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--appends", type=int, default=5000, help="appends per measurement")
    parser.add_argument("--in-flight", type=_counts, default=[1, 10, 100], help="appends kept in flight at once")
    parser.add_argument("--accounts", type=int, default=20, help="accounts whose archives are appended to")
    parser.add_argument("--backends", type=lambda t: t.split(","), default=["sqlite", "postgres"])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1/test", help="PostgreSQL URL")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
