"""The message archive at a million messages: page queries on SQLite and PostgreSQL.

    python -m bench.mam [--messages 1000000] [--backends sqlite,postgres] [--postgres URL]

One account's archive is filled through the storage API (the calls the archive module makes,
``--batch`` of them in flight at a time) with OMEMO-shaped messages from ``--contacts``
contacts, one a minute going back in time, beside a small archive of another account. Then each
page query a client makes (XEP-0313 with XEP-0059 paging, ``--page`` messages) runs ``--repeat``
times, and the median and the slowest time are printed as a Markdown table:

- latest page: the newest messages (RSM ``<before/>``: a phone opening the app);
- with page: the newest messages with one contact (a conversation scrolled to its end);
- full JID page: the newest messages with one contact's device (``with`` a full JID, §4.1.1);
- deep after page: the messages after an id in the middle of the archive (catching up);
- before page: the messages before that id, paging backwards (scrolling back in history);
- start page, last day: the messages since a day ago (catching up by date);
- start page, middle: the messages since a time in the middle (a calendar jump);
- ids: three messages by id (XEP-0313 #extended);
- metadata: the first and the last message (§5).

Each backend gets a fresh store (SQLite in a temporary directory, PostgreSQL in a new schema
that is dropped afterwards). PostgreSQL's planner gets its statistics (ANALYZE) before the
queries, as autovacuum keeps them on a server that has been running.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import secrets
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from schnack.server.modules.mam import STORE
from schnack.server.storage import ArchivePage, Storage, open_storage

from . import procfs

HOST = "bench.example"
OWNER = "owner"
# A message as Conversations sends it with OMEMO (XEP-0384 0.3), about 830 bytes.
MESSAGE = (
    "<message xmlns='jabber:client' from='{contact}@" + HOST + "/phone' to='" + OWNER + "@" + HOST
    + "' type='chat' id='{n}'><body>I sent you an OMEMO encrypted message but your client doesn't"
    " seem to support that. Find more information on https://conversations.im/omemo</body>"
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1122334455'>"
    "<key rid='987654321' prekey='true'>" + "A" * 132 + "</key><key rid='123456789'>" + "B" * 132
    + "</key><iv>AAECAwQFBgcICQoL</iv></header><payload>" + "C" * 88 + "</payload></encrypted>"
    "<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>"
    "<origin-id xmlns='urn:xmpp:sid:0' id='{n}'/><store xmlns='urn:xmpp:hints'/></message>"
)  # fmt: skip


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) | params
    return urlunsplit(parts._replace(query=urlencode(query)))


async def fill(storage: Storage, messages: int, contacts: int, batch: int) -> tuple[list[str], float]:
    """Archive ``messages`` for the owner, oldest first; return their ids and the seconds it took."""
    archive = storage.archive
    start = time.time() - 60 * messages
    ids: list[str] = []
    began = time.perf_counter()
    for first in range(0, messages, batch):
        numbers = range(first, min(first + batch, messages))
        ids += await asyncio.gather(*(
            archive.append(HOST, OWNER, STORE, start + 60 * n, f"contact{n % contacts}@{HOST}",
                           MESSAGE.format(contact=f"contact{n % contacts}", n=n).encode(), resource="phone")
            for n in numbers
        ))  # fmt: skip
        if first // batch % 100 == 99:
            print(f"  {len(ids):,} archived", file=sys.stderr)
    elapsed = time.perf_counter() - began
    # Another account's archive, so that queries have to keep to their own.
    await asyncio.gather(*(archive.append(HOST, "other", STORE, start + n, f"contact{n}@{HOST}", b"<m/>")
                           for n in range(1000)))
    return ids, elapsed


def queries(ids: list[str], page: int) -> dict[str, Callable[[Storage], Awaitable[ArchivePage]]]:
    """The page queries, by name (see the module docstring), as the archive module makes them."""
    middle = ids[len(ids) // 2]
    newest = time.time() - 60
    picked = [ids[len(ids) // 4], ids[len(ids) // 2], ids[-2]]

    def query(**kwargs: Any) -> Callable[[Storage], Awaitable[ArchivePage]]:
        return lambda storage: storage.archive.query(HOST, OWNER, STORE, count=False, **kwargs)

    return {
        "latest page": query(limit=page, reverse=True),
        "with page": query(with_jid=f"contact7@{HOST}", limit=page, reverse=True),
        "full JID page": query(with_jid=f"contact7@{HOST}", resource="phone", limit=page, reverse=True),
        "deep after page": query(after=middle, limit=page),
        "before page": query(before=middle, limit=page),
        "start page, last day": query(start=newest - 86400, limit=page),
        "start page, middle": query(start=newest - 60 * (len(ids) // 2), limit=page),
        "ids": query(ids=picked),
        "metadata": metadata,
    }


async def metadata(storage: Storage) -> ArchivePage:
    """What the archive module asks for a metadata query (§5): the first and the last message."""
    await storage.archive.query(HOST, OWNER, STORE, limit=1, count=False)
    return await storage.archive.query(HOST, OWNER, STORE, limit=1, reverse=True, count=False)


async def measure(storage: Storage, ids: list[str], page: int, repeat: int) -> dict[str, tuple[float, float]]:
    """Median and slowest milliseconds of each query."""
    figures: dict[str, tuple[float, float]] = {}
    for name, run in queries(ids, page).items():
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            result = await run(storage)
            times.append((time.perf_counter() - began) * 1000)
        assert result.items, f"{name} found nothing"
        figures[name] = (statistics.median(times), max(times))
    return figures


async def bench(url: str, args: argparse.Namespace, settle: Callable[[], Awaitable[None]] | None = None,
                ) -> tuple[float, dict[str, tuple[float, float]]]:
    storage = await open_storage(url)
    try:
        ids, seconds = await fill(storage, args.messages, args.contacts, args.batch)
        print(f"  filled in {seconds:.0f} s", file=sys.stderr)
        if settle is not None:
            await settle()
        return args.messages / seconds, await measure(storage, ids, args.page, args.repeat)
    finally:
        await storage.close()


async def run(args: argparse.Namespace) -> dict[str, tuple[float, dict[str, tuple[float, float]]]]:
    results = {}
    for backend in args.backends.split(","):
        print(f"{backend}: archiving {args.messages:,} messages", file=sys.stderr)
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                results[backend] = await bench(f"sqlite:///{Path(folder) / 'bench.db'}", args)
        elif backend == "postgres":
            schema = f"bench_mam_{secrets.token_hex(4)}"
            admin = await asyncpg.connect(args.postgres)

            async def analyze(schema: str = schema, admin: Any = admin) -> None:
                # The planner's statistics, as autovacuum keeps them on a server that runs for a while.
                await admin.execute(f'ANALYZE "{schema}".archive')

            try:
                results[backend] = await bench(_with_query(args.postgres, schema=schema), args, analyze)
            finally:
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await admin.close()
        else:
            raise SystemExit(f"unknown backend {backend!r}: use sqlite or postgres")
    return results


def render(args: argparse.Namespace, argv: Sequence[str],
           results: dict[str, tuple[float, dict[str, tuple[float, float]]]]) -> str:
    facts = procfs.machine_facts()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    backends = list(results)
    lines = [
        f"Measured {now} with `{shlex.join(['python', '-m', 'bench.mam', *argv])}`: {args.messages:,} messages in one "
        f"archive, {args.contacts} contacts, pages of {args.page}, median (slowest) of {args.repeat} runs in ms.",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory']} RAM, {facts['kernel']}, "
        f"Python {facts['python']}",
        "",
        "| query | " + " | ".join(backends) + " |",
        "| --- | " + " | ".join("---" for _ in backends) + " |",
    ]
    names = list(next(iter(results.values()))[1])
    for name in names:
        cells = [f"{results[b][1][name][0]:.2f} ({results[b][1][name][1]:.2f})" for b in backends]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| archiving rate, messages/s | " + " | ".join(f"{results[b][0]:,.0f}" for b in backends) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mam", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500, help="appends in flight at a time")
    parser.add_argument("--page", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1/test")
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    print(render(args, given, asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
