"""``schnack calls``: the call history of an account, the data its calls used per contact, and
the data saver setting for its calls.

``schnack call``, ``schnack answer`` and calls in ``schnack chat`` append each call to
``calls.jsonl`` in the account's directory (:func:`schnack.cli.calls.store`), and ``schnack
listen``, ``schnack chat``, ``schnack call`` and ``schnack answer`` each missed call, once
(:func:`schnack.cli.calls.store_missed`), also those a new device's first catch-up finds from
before it, which are not told as news. ``schnack calls`` lists them, oldest first (when it
ended, with whom, which way, how long, the bytes each way on the wire, the profile, verified or
not, how it ended; a missed call as "missed call", when it was placed and why), then for each
contact the number of calls, their time and the data they used both ways, most data first
(missed calls used none and are not counted there); ``--json`` prints the same as one JSON
object. Voice messages are not counted: the client keeps no record of their sizes.

``schnack calls data-saver [auto|on|off]`` shows or sets the account's data saver setting:
``auto`` (the default) turns it on for calls over a metered link (a mobile data plan, see
:mod:`schnack.client.metered`), ``on`` for every call, ``off`` for none; ``--data-saver`` and
``--no-data-saver`` on a call override it.

A line of ``calls.jsonl`` that is not a call record (a damaged file) is skipped with a note on
stderr; the other calls are still listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .calls import MISSED
from .client import account_option, chosen_account, fail, note

HISTORY = "calls.jsonl"


@dataclass(frozen=True)
class CallRecord:
    """One line of ``calls.jsonl``."""

    ended: datetime
    peer: str
    direction: str
    duration: float
    bytes_sent: int
    bytes_received: int
    data_saver: bool
    verified: str
    ending: str | None
    raw: dict[str, Any]

    @property
    def missed(self) -> bool:
        """A call that came and was not answered (:func:`schnack.cli.calls.store_missed`)."""
        return self.ending == MISSED

    @property
    def contact(self) -> str:
        """The peer's bare address: a contact's devices count as one."""
        return self.peer.split("/", 1)[0]

    @classmethod
    def parse(cls, line: str) -> CallRecord:
        """A record from its JSON line; ValueError (with the reason) for anything else."""
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON: {err.msg}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(datetime.fromisoformat(raw["ended"]), str(raw["peer"]), str(raw["direction"]),
                         float(raw["duration"]), int(raw["bytes_sent"]), int(raw["bytes_received"]),
                         bool(raw.get("data_saver", False)), str(raw.get("verified", "unverified")),
                         raw.get("ending"), raw)  # fmt: skip
        except KeyError as err:
            raise ValueError(f"no {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"a bad value: {err}") from None
        return record


@dataclass
class ContactUsage:
    """The calls with one contact and the data they used."""

    contact: str
    calls: int = 0
    duration: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    data_saver_calls: int = 0

    @property
    def total(self) -> int:
        return self.bytes_sent + self.bytes_received

    def add(self, record: CallRecord) -> None:
        self.calls += 1
        self.duration += record.duration
        self.bytes_sent += record.bytes_sent
        self.bytes_received += record.bytes_received
        self.data_saver_calls += int(record.data_saver)

    def to_json(self) -> dict[str, Any]:
        return {"contact": self.contact, "calls": self.calls, "duration": round(self.duration, 3),
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received, "bytes": self.total,
                "data_saver_calls": self.data_saver_calls}  # fmt: skip


def read_history(path: Path) -> Iterator[CallRecord]:
    """The calls in ``path``, in the order they were added; damaged lines are skipped with a note."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield CallRecord.parse(line)
            except ValueError as err:
                note(f"{path}:{number}: skipped, not a call record ({err})")


def usage(records: list[CallRecord]) -> list[ContactUsage]:
    """Per contact, most data first."""
    per: dict[str, ContactUsage] = {}
    for record in records:
        if record.missed:
            continue
        per.setdefault(record.contact, ContactUsage(record.contact)).add(record)
    return sorted(per.values(), key=lambda u: (-u.total, u.contact))


def duration_text(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}" if minutes else f"{seconds:.1f} s"


def call_line(record: CallRecord) -> str:
    from ..client.calls.calls import describe_missed
    from ..client.sizes import data_size as size

    when = record.ended.astimezone().strftime("%Y-%m-%d %H:%M")
    if record.missed:
        return f"{when} ← {record.contact}  missed call ({describe_missed(str(record.raw.get('missed')))})"
    way = "→" if record.direction == "out" else "←"
    profile = "data saver" if record.data_saver else "normal"
    line = (f"{when} {way} {record.contact}  {duration_text(record.duration)}  "
            f"↑ {size(record.bytes_sent, 'kB')} ↓ {size(record.bytes_received, 'kB')}  {profile}, {record.verified}")  # fmt: skip
    return line + (f"  ({record.ending})" if record.ending else "")


def usage_line(entry: ContactUsage) -> str:
    from ..client.sizes import data_size as size

    plural = "call" if entry.calls == 1 else "calls"
    return (f"{entry.contact}: {entry.calls} {plural}, {duration_text(entry.duration)}, "
            f"{size(entry.total, 'kB')} (↑ {size(entry.bytes_sent, 'kB')} ↓ {size(entry.bytes_received, 'kB')})")  # fmt: skip


@click.group(invoke_without_command=True)
@account_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the calls and the data per contact.")
@click.pass_context
def calls(ctx: click.Context, account: str | None, as_json: bool) -> None:
    """The call history (missed calls too) and the data the calls used, per contact."""
    if ctx.invoked_subcommand is not None:
        return
    from ..client.store import account_dir

    # Oldest first: a new device's first catch-up adds the calls missed before it after newer ones.
    records = sorted(read_history(account_dir(chosen_account(account)) / HISTORY), key=lambda r: r.ended.timestamp())
    per_contact = usage(records)
    if as_json:
        click.echo(json.dumps({"calls": [r.raw for r in records], "contacts": [u.to_json() for u in per_contact]}))
        return
    if not records:
        click.echo("no calls yet")
        return
    for record in records:
        click.echo(call_line(record))
    if not per_contact:
        return  # missed calls only: no data used
    click.echo("")
    click.echo("data used per contact:")
    for entry in per_contact:
        click.echo(f"  {usage_line(entry)}")


@calls.command("data-saver")
@click.argument("mode", required=False, type=click.Choice(["auto", "on", "off"]))
@account_option
@click.pass_context
def data_saver(ctx: click.Context, mode: str | None, account: str | None) -> None:
    """Show or set the data saver for calls: auto (on metered links), on, or off."""
    from ..client.metered import SETTING, SaverMode, parse_mode
    from ..client.store import Store, StoreError, account_dir

    if account is None and ctx.parent is not None:
        account = ctx.parent.params.get("account")  # schnack calls --account A data-saver
    try:
        store = Store(account_dir(chosen_account(account)))
    except StoreError as err:
        fail(str(err))
    try:
        if mode is not None:
            store.save_setting(SETTING, SaverMode(mode).value)
        current = parse_mode(store.setting(SETTING))
    finally:
        store.close()
    explained = {
        SaverMode.AUTO: "on for calls over a metered link",
        SaverMode.ON: "on for every call",
        SaverMode.OFF: "off",
    }
    click.echo(f"data saver: {current} ({explained[current]})")

