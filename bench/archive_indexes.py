"""What SQLite's work per archived message is made of: the rows, and the indexes kept on them.

    python -m bench.archive_indexes [--rows 20000] [--per-commit 20,200,1000] [--accounts 100]

A fresh database gets schnack's schema (its migrations, as ``schnack serve`` makes it; WAL,
``synchronous=NORMAL``), then ``--rows`` rows shaped like the chat benchmark's archive copies
(an OMEMO message of about 900 bytes, its owner one of ``--accounts`` accounts, its contact
another, with a resource, as the benchmark addresses full JIDs), appended with multi-row INSERTs as the archive's writer makes them and committed every
``--per-commit`` rows. For each number of rows per commit, once with every index, once without
the four per-account indexes and once with each of them alone, the CPU time per row of the
INSERTs and of the COMMITs is printed as a Markdown table (this process, which does nothing
else).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from schnack.server.storage import new_item_id
from schnack.server.storage.base import Row
from schnack.server.storage.sqlite import Deleted, Owners, SqliteStorage, insert_unbounded

from .mam import HOST, MESSAGE

# archive_unresourced, of the items archived before resources were kept, gets no new ones.
INDEXES = ("archive_by_user", "archive_by_with", "archive_by_time", "archive_by_resource")


def _variants() -> list[tuple[str, tuple[str, ...]]]:
    """Each variant's name and the indexes it keeps."""
    return [("all indexes", INDEXES), ("none of the four", ())] + [(f"only {name}", (name,)) for name in INDEXES]


async def _schema(path: Path) -> None:
    storage = await SqliteStorage.open(str(path))
    await storage.close()


def _rows(count: int, accounts: int) -> list[Row]:
    users = [f"bench{i}" for i in range(accounts)]
    payload = MESSAGE.encode()
    return [(new_item_id(), HOST, random.choice(users), "mam", time.time(), f"{random.choice(users)}@{HOST}", payload,
             "bench") for _ in range(count)]


def measure(directory: Path, rows: int, per_commit: int, accounts: int, keep: Sequence[str]) -> tuple[float, float, int]:
    """CPU µs per row of the INSERTs and of the COMMITs, and the rows in the archive afterwards."""
    path = directory / f"archive-{per_commit}-{'-'.join(keep) or 'none'}.db"
    asyncio.run(_schema(path))
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for name in INDEXES:
            if name not in keep:
                conn.execute(f"DROP INDEX {name}")
        conn.commit()
        appends = _rows(rows, accounts)
        owners = Owners(Deleted())
        inserting = committing = 0.0
        for start in range(0, rows, per_commit):
            batch = appends[start:start + per_commit]
            began = time.process_time()
            # The archive writer's own INSERTs, in statements of as many rows as it makes them.
            if insert_unbounded(conn, owners, [(row, None) for row in batch]) != len(batch):
                raise sqlite3.Error("an INSERT was refused")
            inserted = time.process_time()
            conn.commit()
            inserting += inserted - began
            committing += time.process_time() - inserted
        (stored,) = conn.execute("SELECT count(*) FROM archive").fetchone()
    finally:
        conn.close()
    return inserting / rows * 1e6, committing / rows * 1e6, stored


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive_indexes", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows appended per variant")
    parser.add_argument("--per-commit", default="20,200,1000", help="rows per commit, comma-separated")
    parser.add_argument("--accounts", type=int, default=100, help="accounts the rows are spread over")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.per_commit.split(",")]
    print(f"{args.rows} rows per variant over {args.accounts} accounts; CPU µs per row\n")
    print("| rows per commit | indexes | INSERT | COMMIT |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as directory:
        for size in sizes:
            for name, keep in _variants():
                inserting, committing, stored = measure(Path(directory), args.rows, size, args.accounts, keep)
                if stored != args.rows:
                    print(f"{name}: {stored} rows stored of {args.rows}", file=sys.stderr)
                    return 1
                print(f"| {size:,} | {name} | {inserting:.1f} | {committing:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
