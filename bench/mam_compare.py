"""A MAM page query on a million-message archive, side by side: schnack, Prosody and ejabberd.

    python -m bench.mam_compare [--messages 1000000] [--servers schnack,prosody,ejabberd] [--repeat 15]

Filling an archive through XMPP would take hours, so each server's archive is written straight
into its own storage, in its own format, before the server starts: schnack's SQLite ``archive``
table, Prosody's ``prosodyarchive`` table (mod_storage_sql on SQLite, as ``storage = "sql"``
makes it) and ejabberd's ``archive`` table (``sql_type: sqlite``, its own schema file). Every
archive gets the same messages: ``--messages`` OMEMO-shaped messages (bench/mam.py's) from 100
contacts, one a minute going back in time, and 1,000 messages of another account beside them.

Then one client (the generator's, the same code for all three) logs in as the owner and asks
each page query ``--repeat`` times over XMPP (XEP-0313 with XEP-0059 paging, pages of 50):

- latest page: RSM ``<before/>`` empty (a phone opening the app);
- after middle: the page after the id of the message in the middle (catching up);
- with: the newest page with one contact (a conversation scrolled to its end);
- time range: a one-day ``start``/``end`` window in the middle of the archive (a calendar jump).

It prints, per server and query, the client's median latency in ms and the server's CPU ms per
query (its /proc CPU time over the repeats, divided by them: /proc counts in 10 ms ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import secrets
import shlex
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from schnack.server.config import load
from schnack.server.modules.mam import STORE

from . import procfs
from .client import IQ, MESSAGE, Connection, Element, XmppError, insecure_tls_context, login
from .mam import MESSAGE as STORED
from .servers import DOMAIN, EjabberdDriver, ProsodyDriver, SchnackDriver, Target

OWNER = "owner"
OTHER = "other"
CONTACTS = 100
PAGE = 50
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
PASSWORD = "bench-mam-secret"
QUERIES = ("latest page", "after middle", "with", "time range")
# Per query: the client's median ms, the server's CPU ms per query (None: not measured), and how
# many messages the last answer had.
Figures = dict[str, tuple[float, float | None, int]]


@dataclass(frozen=True)
class Row:
    """One archived message as every server needs it: its id (chosen here), time and peer."""

    id: str
    when: float  # Unix seconds
    peer: str  # full JID of the contact
    xml: str

    @property
    def bare(self) -> str:
        return self.peer.partition("/")[0]

    @property
    def resource(self) -> str:
        return self.peer.partition("/")[2]


def rows(username: str, count: int, start: float, new_id: Callable[[float], str]) -> Iterator[Row]:
    """``count`` messages to ``username``, one a minute from ``start``, from 100 contacts in turn."""
    for n in range(count):
        contact = f"contact{n % CONTACTS}"
        xml = STORED.format(contact=contact, n=n).replace("bench.example", DOMAIN)
        if username != OWNER:
            xml = xml.replace(f"to='owner@{DOMAIN}'", f"to='{username}@{DOMAIN}'")
        when = start + 60 * n
        yield Row(new_id(when), when, f"{contact}@{DOMAIN}/phone", xml)


class ArchiveFiller:
    """The archives every server gets, with the ids its format gives (``new_id`` of the message's
    time); ``ids`` are the owner's, oldest first, once :meth:`archives` has been read."""

    def __init__(self, messages: int, new_id: Callable[[float], str]) -> None:
        self.messages = messages
        self.start = float(int(time.time()) - 60 * messages)
        self.new_id = new_id
        self.ids: list[str] = []

    def archives(self) -> Iterator[tuple[str, Iterator[Row]]]:
        yield OWNER, rows(OWNER, self.messages, self.start, self._owner_id)
        yield OTHER, rows(OTHER, 1000, self.start + 30, self.new_id)

    def _owner_id(self, when: float) -> str:
        item = self.new_id(when)
        self.ids.append(item)
        return item


class SchnackArchive(SchnackDriver):
    """schnack with the archives written into its SQLite ``archive`` table, as the archive module
    appends them (each user's archive numbered in ``archive_owners``, the contact's bare JID, the
    message as serialized)."""

    @staticmethod
    def available() -> bool:
        return True

    def __init__(self, messages: int) -> None:
        super().__init__()
        # As the archive module's ids: 16 URL-safe characters.
        self.filler = ArchiveFiller(messages, lambda _when: secrets.token_urlsafe(12))

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        argv = super().prepare(usernames, password)  # the accounts: the schema exists from here on
        url = load(self.dir / "schnack.toml").storage_url
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            for user, archive in self.filler.archives():
                (owner,) = db.execute("INSERT INTO archive_owners (host, username, store) VALUES (?, ?, ?) "
                                      "RETURNING owner", (DOMAIN, user, STORE)).fetchone()
                db.executemany(
                    "INSERT INTO archive (id, owner, timestamp, with_jid, payload, with_resource) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    ((r.id, owner, r.when, r.bare, r.xml.encode(), r.resource) for r in archive),
                )
        return argv


# mod_storage_sql's table (Prosody 0.12), as it creates it on SQLite; it keeps an existing one.
PROSODY_ARCHIVE = """
CREATE TABLE "prosodyarchive" ("sort_id" INTEGER PRIMARY KEY AUTOINCREMENT, "host" TEXT NOT NULL,
    "user" TEXT NOT NULL, "store" TEXT NOT NULL, "key" TEXT NOT NULL, "when" INTEGER NOT NULL,
    "with" TEXT NOT NULL, "type" TEXT NOT NULL, "value" MEDIUMTEXT NOT NULL);
CREATE UNIQUE INDEX "prosodyarchive_index" ON "prosodyarchive" ("host", "user", "store", "key");
CREATE INDEX "prosodyarchive_with_when" ON "prosodyarchive" ("host", "user", "store", "with", "when");
CREATE INDEX "prosodyarchive_when" ON "prosodyarchive" ("host", "user", "store", "when");
CREATE INDEX "prosodyarchive_sort" ON "prosodyarchive" ("host", "user", "store", "sort_id");
"""


class ProsodyArchive(ProsodyDriver):
    """Prosody with its archive in SQL (mod_storage_sql on SQLite), rows as mod_mam appends them:
    store "archive", key a UUID, when in whole seconds, with the contact's bare JID, type "xml".
    Archived messages never expire here (``archive_expires_after``: Prosody's default is a week)."""

    @staticmethod
    def available() -> bool:
        """Prosody, and the LuaDBI SQLite driver its SQL storage loads (package lua-dbi-sqlite3)."""
        return ProsodyDriver.available() and any(Path("/usr/lib").glob("*/lua/*/dbd/sqlite3.so"))

    def __init__(self, messages: int) -> None:
        super().__init__()
        self.filler = ArchiveFiller(messages, lambda _when: str(uuid.uuid4()))

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        argv = super().prepare(usernames, password)
        text = self.config.read_text()
        settings = "\n".join([
            'default_storage = "internal"',
            'storage = { archive = "sql" }',
            'sql = { driver = "SQLite3", database = "prosody.sqlite" }',
            'archive_expires_after = "never"',
        ])  # fmt: skip
        self.config.write_text(text.replace('storage = "internal"', settings))
        with contextlib.closing(sqlite3.connect(self.dir / "data" / "prosody.sqlite")) as db, db:
            db.executescript(PROSODY_ARCHIVE)
            for user, archive in self.filler.archives():
                db.executemany(
                    'INSERT INTO "prosodyarchive" ("host", "user", "store", "key", "when", "with", "type", '
                    "\"value\") VALUES (?, ?, 'archive', ?, ?, ?, 'xml', ?)",
                    ((DOMAIN, user, r.id, int(r.when), r.bare, r.xml) for r in archive),
                )
        return argv


class EjabberdArchive(EjabberdDriver):
    """ejabberd with its archive in SQLite (the driver's set-up), rows as mod_mam writes them: the
    id is the timestamp in microseconds, peer and bare_peer the contact, kind "chat"."""

    def __init__(self, messages: int) -> None:
        super().__init__()
        self.filler = ArchiveFiller(messages, lambda when: str(int(when * 1_000_000)))

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        argv = super().prepare(usernames, password)
        with contextlib.closing(sqlite3.connect(self.dir / "ejabberd.db")) as db, db:
            for user, archive in self.filler.archives():
                db.executemany(
                    "INSERT INTO archive (username, server_host, timestamp, peer, bare_peer, xml, txt, kind, nick) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'chat', '')",
                    ((user, DOMAIN, int(r.id), r.peer, r.bare, r.xml, "") for r in archive),
                )
        return argv


DRIVERS: dict[str, type[SchnackArchive] | type[ProsodyArchive] | type[EjabberdArchive]] = {
    "schnack": SchnackArchive,
    "prosody": ProsodyArchive,
    "ejabberd": EjabberdArchive,
}


def _stamp(seconds: float) -> str:
    """XEP-0082 DateTime, UTC."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def requests(filler: ArchiveFiller) -> dict[str, tuple[dict[str, str], str]]:
    """Each query's form fields and RSM set, by name (see the module docstring)."""
    middle = filler.messages // 2
    day_start = filler.start + 60 * middle
    return {
        "latest page": ({}, f"<max>{PAGE}</max><before/>"),
        "after middle": ({}, f"<max>{PAGE}</max><after>{filler.ids[middle]}</after>"),
        "with": ({"with": f"contact7@{DOMAIN}"}, f"<max>{PAGE}</max><before/>"),
        "time range": ({"start": _stamp(day_start), "end": _stamp(day_start + 86400)}, f"<max>{PAGE}</max>"),
    }


def query_xml(query_id: str, fields: dict[str, str], rsm: str) -> str:
    """A XEP-0313 §4 query (a data form of its filters, §4.1) with XEP-0059 paging."""
    form = f"<field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>" + "".join(
        f"<field var='{var}'><value>{value}</value></field>" for var, value in fields.items()
    )
    return (
        f"<iq type='set' id='{query_id}'><query xmlns='{NS_MAM}' queryid='{query_id}'>"
        f"<x xmlns='jabber:x:data' type='submit'>{form}</x><set xmlns='{NS_RSM}'>{rsm}</set></query></iq>"
    )


async def ask(conn: Connection, query_id: str, fields: dict[str, str], rsm: str) -> int:
    """Send one query and read its results up to the closing IQ; return how many came."""
    conn.send(query_xml(query_id, fields, rsm))
    results = 0
    while True:
        el: Element = await conn.recv()
        if el.tag == MESSAGE:
            results += any(
                child.local == "result" and child.attrs.get("queryid") == query_id for child in el.children
            )
        elif el.tag == IQ and el.attrs.get("id") == query_id:
            if el.attrs.get("type") != "result":
                error = el.find("jabber:client error")
                raise XmppError("mam", error.children[0].local if error and error.children else "error")
            return results


async def measure(target: Target, filler: ArchiveFiller, repeat: int) -> Figures:
    """Per query: the client's median ms, the server's CPU ms per query, and the results of the last."""
    conn = await login(
        target.host,
        target.port,
        target.domain,
        OWNER,
        PASSWORD,
        resource="mam",
        tls=insecure_tls_context(),
        timeout=60,
    )
    figures: Figures = {}
    try:
        async with asyncio.timeout(600):
            for name, (fields, rsm) in requests(filler).items():
                await ask(conn, f"warm-{name[:4]}", fields, rsm)  # the first one reads from disk
                cpu_before = procfs.cpu_seconds(target.pid) if target.pid else None
                times, found = [], 0
                for i in range(repeat):
                    began = time.perf_counter()
                    found = await ask(conn, f"q{i}", fields, rsm)
                    times.append((time.perf_counter() - began) * 1000)
                cpu = None
                if cpu_before is not None and target.pid:
                    cpu = (procfs.cpu_seconds(target.pid) - cpu_before) * 1000 / repeat
                figures[name] = (statistics.median(times), cpu, found)
    finally:
        await conn.close()
    return figures


def run_server(name: str, messages: int, repeat: int) -> tuple[str, float, Figures]:
    """Fill, start, query and stop one server: its name and version, the seconds to fill and
    start it, the figures."""
    driver = DRIVERS[name](messages)
    began = time.perf_counter()
    try:
        target = driver.start([OWNER, OTHER], PASSWORD)
        filled = time.perf_counter() - began
        return target.name, filled, asyncio.run(measure(target, driver.filler, repeat))
    finally:
        driver.stop()


def render(
    argv: Sequence[str],
    messages: int,
    repeat: int,
    results: dict[str, tuple[str, float, Figures]],
    load: tuple[str, str],
) -> str:
    facts = procfs.machine_facts()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    servers = list(results)
    header = " | ".join(results[s][0] for s in servers)
    lines = [
        f"Measured {now} with `{shlex.join(['python', '-m', 'bench.mam_compare', *argv])}`: {messages:,} messages "
        f"in the owner's archive, pages of {PAGE}, {repeat} queries of each kind; load average (1 min) "
        f"{load[0]} before, {load[1]} after.",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory']} RAM, {facts['kernel']}, "
        f"Python {facts['python']}",
        "",
        f"| query | figure | {header} |",
        "| --- | --- |" + " --- |" * len(servers),
    ]
    for query in QUERIES:
        latency = [f"{results[s][2][query][0]:.2f}" for s in servers]
        cpu = [_ms(results[s][2][query][1]) for s in servers]
        found = [str(results[s][2][query][2]) for s in servers]
        lines += [
            f"| {query} | client ms, median | " + " | ".join(latency) + " |",
            "|  | server CPU ms per query | " + " | ".join(cpu) + " |",
            "|  | messages returned | " + " | ".join(found) + " |",
        ]
    lines.append(
        "| filling and start | seconds (direct SQLite writes) | "
        + " | ".join(f"{results[s][1]:.0f}" for s in servers)
        + " |"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mam_compare", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--servers", default="schnack,prosody,ejabberd")
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    servers = args.servers.split(",")
    for server in servers:
        if server not in DRIVERS:
            parser.error(f"--servers: unknown server {server!r} (known: {', '.join(DRIVERS)})")
        if not DRIVERS[server].available():
            parser.error(f"{server} is not installed (as root: bash .ci/bench-packages)")
    load_before = Path("/proc/loadavg").read_text().split()[0]
    results = {}
    for server in servers:
        print(f"[bench] {server}: {args.messages:,} messages", file=sys.stderr, flush=True)
        results[server] = run_server(server, args.messages, args.repeat)
    load_after = Path("/proc/loadavg").read_text().split()[0]
    print(render(given, args.messages, args.repeat, results, (load_before, load_after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
