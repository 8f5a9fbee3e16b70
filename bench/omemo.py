"""What an OMEMO text message costs: time to encrypt and decrypt it, and its size on the wire.

``python -m bench.omemo`` starts ``schnack serve`` (as :mod:`bench.servers` does for the load
generator) with two accounts per OMEMO version and logs them in with schnack's client, each with
its OMEMO state in an SQLite file as in use. For each version, one device each:

- the first message, which carries the key exchange: encrypting it includes fetching the
  recipient's device lists and bundle from the server (loopback) and building the session;
- after the recipient answered (which completes the key exchange),
  ``--messages`` messages in steady state, the two taking turns.

"encrypt" is ``Omemo.encrypt`` (what ``Client.send`` does before writing the stanza: the device
list check, the encryption, the state written); "decrypt" is ``Omemo.decrypt`` of the stanza as
the recipient receives it. Sizes are the UTF-8 XML of the stanza: as the sender writes it, and
as the recipient gets it from the server (with ``from`` and the server's stanza-id). TLS adds
22 bytes per record (TLS 1.3 with AES-GCM) and TCP/IP headers come on top.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from schnack.client import Client
from schnack.client.omemo import OLDMEMO, TWOMEMO, OmemoSettings
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.xml import Element, element, qname, serialize, sub

from . import procfs
from .servers import Target, private_driver

PASSWORD = "bench-omemo-password"
TEXT = "See you at 8 at the station!"  # a short chat message: 28 characters
VERSIONS = {"legacy": OLDMEMO, "omemo2": TWOMEMO}
TIMEOUT = 60.0
_MESSAGE = qname(ns.CLIENT, "message")
_BODY = qname(ns.CLIENT, "body")
_ORIGIN_ID = qname(ns.SID, "origin-id")


def _stanza(to: JID, children: Sequence[Element] = (), text: str | None = None) -> Element:
    """The message as ``Client.send`` writes it: its id is its XEP-0359 origin-id."""
    id = str(uuid.uuid4())
    el = element(_MESSAGE, {"type": "chat", "to": str(to), "id": id}, children=children)
    if text is not None:
        sub(el, _BODY, text=text)
    sub(el, _ORIGIN_ID, {"id": id})
    return el


def _size(el: Element) -> int:
    return len(serialize(el, ns.CLIENT).encode())


class Pair:
    """Two logged-in clients speaking one OMEMO version."""

    def __init__(self, target: Target, names: tuple[str, str], version: str, state: Path) -> None:
        settings = OmemoSettings(namespaces=(version,))
        self.alice, self.bob = (
            Client(f"{name}@{target.domain}/bench", PASSWORD, host=target.host, port=target.port, verify=False,
                   direct_tls=False, data_dir=state / name, omemo=settings, timeout=TIMEOUT)
            for name in names
        )

    async def one(self, sender: Client, recipient: Client) -> tuple[float, float, int]:
        """Encrypt and decrypt one message: (encrypt seconds, decrypt seconds, bytes sent)."""
        started = time.perf_counter()
        children = await sender.omemo.encrypt(recipient.account, TEXT)
        encrypted = time.perf_counter()
        sent = _stanza(recipient.account, children)
        size = _size(sent)
        sent.set("from", str(sender.jid))
        started_decrypt = time.perf_counter()
        decrypted = await recipient.omemo.decrypt(sender.jid, sent)
        done = time.perf_counter()
        if decrypted.text != TEXT:
            raise RuntimeError(f"decrypted {decrypted.text!r} instead of {TEXT!r}")
        return encrypted - started, done - started_decrypt, size

    async def measure(self, messages: int) -> dict[str, Any]:
        await self.alice.connect()
        await self.bob.connect()
        try:
            alice_inbox, bob_inbox = self.alice.messages(), self.bob.messages()
            first_encrypt, first_decrypt, first_size = await self.one(self.alice, self.bob)
            # The answer goes after the empty message that completes the key exchange.
            await self.bob.send(self.alice.account, "ok")
            async with asyncio.timeout(TIMEOUT):
                await anext(alice_inbox)
            # A conversation: turns alternate, as in a chat (one side only would make the recipient
            # send an empty message to move the ratchet on every message past the 53rd).
            runs = [await self.one(*((self.bob, self.alice) if i % 2 else (self.alice, self.bob)))
                    for i in range(messages)]
            await self.alice.send(self.bob.account, TEXT)
            async with asyncio.timeout(TIMEOUT):
                delivered = await anext(bob_inbox)
            plain = _stanza(self.bob.account, text=TEXT)
            return {
                "first_message": {
                    "encrypt_ms": round(first_encrypt * 1000, 2),
                    "decrypt_ms": round(first_decrypt * 1000, 2),
                    "bytes_sent": first_size,
                },
                "steady": {
                    "messages": messages,
                    "encrypt_ms_median": round(statistics.median(r[0] for r in runs) * 1000, 3),
                    "encrypt_ms_p90": round(statistics.quantiles([r[0] for r in runs], n=10)[-1] * 1000, 3),
                    "decrypt_ms_median": round(statistics.median(r[1] for r in runs) * 1000, 3),
                    "decrypt_ms_p90": round(statistics.quantiles([r[1] for r in runs], n=10)[-1] * 1000, 3),
                    "bytes_sent_median": int(statistics.median(r[2] for r in runs)),
                    "bytes_sent_max": max(r[2] for r in runs),
                    "bytes_delivered": _size(delivered.element),
                },
                "plaintext_bytes_sent": _size(plain),
            }
        finally:
            await self.alice.close()
            await self.bob.close()


async def measure(target: Target, messages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-omemo-") as state:
        return {
            name: await Pair(target, (f"alice-{name}", f"bob-{name}"), version, Path(state)).measure(messages)
            for name, version in VERSIONS.items()
        }


def run(messages: int) -> dict[str, Any]:
    """Start ``schnack serve`` with the accounts, measure, stop it."""
    with private_driver("schnack") as driver:
        target = driver.start([f"{who}-{name}" for name in VERSIONS for who in ("alice", "bob")], PASSWORD)
        return uvloop.run(measure(target, messages))


def _positive(text: str) -> int:
    value = int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 10")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.omemo",
        description="Encrypt and decrypt time and wire size of a short OMEMO text message to one device.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--messages", type=_positive, default=200, help="messages measured in steady state")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = {
        "command": shlex.join(["python", "-m", "bench.omemo", *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": procfs.machine_facts(),
        "text": TEXT,
        "figures": run(args.messages),
    }
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def render(result: dict[str, Any]) -> str:
    lines = [f"{len(result['text'])}-character text to one device: {result['command']}"]
    for name, figures in result["figures"].items():
        first, steady = figures["first_message"], figures["steady"]
        lines.append(
            f"  {name}: first message {first['bytes_sent']:,} bytes, encrypt {first['encrypt_ms']} ms, "
            f"decrypt {first['decrypt_ms']} ms; then encrypt {steady['encrypt_ms_median']} ms "
            f"(p90 {steady['encrypt_ms_p90']}), decrypt {steady['decrypt_ms_median']} ms "
            f"(p90 {steady['decrypt_ms_p90']}), {steady['bytes_sent_median']:,} bytes sent "
            f"(max {steady['bytes_sent_max']:,}), {steady['bytes_delivered']:,} delivered; "
            f"plaintext {figures['plaintext_bytes_sent']:,} bytes"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
