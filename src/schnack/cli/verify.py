"""``schnack verify``: compare OMEMO fingerprints (XEP-0384) and mark keys verified.

It lists a contact's devices and our own with their fingerprints, and shows our own code: the
``xmpp:…?omemo-sid-…`` URI that Conversations and the other apps scan (fingerprints.py), as a QR
code in the terminal. A key becomes verified when the user confirms that the contact's app
shows the same fingerprint, names it with ``--fingerprint``, or pastes the URI of the contact's
code with ``--uri``: then every key in it must be one the contact publishes, or nothing is
trusted and the command fails. The decision is stored in the account's OMEMO state; from then
on a new key of that contact is used only once it is verified too (blind trust ends with the
first verified key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from ..xmpp.jid import JID
from .client import account_option, chosen_account, client_factory, fail, parse_jid, run

if TYPE_CHECKING:
    from ..client import Client
    from ..client.omemo import Device, Trust
    from ..client.omemo.fingerprints import VerificationUri

_VERSIONS = {"eu.siacs.conversations.axolotl": "OMEMO 0.3", "urn:xmpp:omemo:2": "OMEMO 2"}
# Two modules of the code per character, one above the other; the quiet zone (ISO/IEC 18004
# asks for four modules, scanners manage with two) is part of the drawing, so the code reads on
# any terminal background.
_QUIET_ZONE = 2
_HALF_BLOCKS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}


def qr_lines(text: str) -> list[str]:
    """``text`` as a QR code in text: '█', '▀' and '▄' are dark modules, spaces light ones."""
    import segno

    code = segno.make(text, error="m", micro=False)
    size = len(code.matrix)
    light = [False] * (size + 2 * _QUIET_ZONE)
    rows = [light] * _QUIET_ZONE
    rows += [[False] * _QUIET_ZONE + [bool(m) for m in row] + [False] * _QUIET_ZONE for row in code.matrix]
    rows += [light] * _QUIET_ZONE
    if len(rows) % 2:
        rows.append(light)
    return ["".join(_HALF_BLOCKS[(top[i], bottom[i])] for i in range(len(top)))
            for top, bottom in zip(rows[::2], rows[1::2], strict=True)]


def _echo_qr(text: str) -> None:
    # Dark ink on a light ground, whatever the terminal's colours; without a terminal the colours
    # are left out and the characters alone are the code.
    for line in qr_lines(text):
        click.echo(click.style(line, fg="black", bg="bright_white"))


def _describe(device: Device, trust: Trust | None = None) -> list[str]:
    """A device, its versions, the trust in it (None for this device) and its fingerprint."""
    from ..client.omemo.fingerprints import grouped

    versions = " + ".join(name for namespace, name in _VERSIONS.items() if namespace in device.namespaces)
    label = f" “{device.label}”" if device.label else ""
    where = " (this device)" if trust is None else ""
    shown = "" if trust is None else f"  {trust.value}"
    head = f"  device {device.id}{label}{where}  {versions or 'OMEMO'}{shown}"
    return [head, *(f"    {line}" for line in grouped(device.fingerprint, per_line=4))]


def _without_hint(err: Exception) -> str:
    """An encryption error's sentence without its advice to send unencrypted: here there is
    nothing to send."""
    from ..client.omemo.errors import UNENCRYPTED_HINT

    return str(err).removesuffix(f"; {UNENCRYPTED_HINT}")


async def _confirm(question: str) -> bool:
    # In a thread: the client keeps answering the server while the user thinks.
    try:
        return await asyncio.to_thread(click.confirm, question, default=False)
    except click.Abort:
        fail("not confirmed (no answer); name the key with --fingerprint, or pass --yes")


@click.command()
@click.argument("jid", required=False)
@account_option
@click.option("--fingerprint", "fingerprints", multiple=True, metavar="FP",
              help="Mark JID's key with this fingerprint verified, without asking (repeatable).")
@click.option("--uri", metavar="URI",
              help="The xmpp: URI of JID's code (scanned elsewhere): its keys must match what JID publishes.")
@click.option("--yes", "-y", is_flag=True, help="Mark the keys verified without asking for each.")
@click.option("--qr/--no-qr", default=True, show_default=True, help="Show our own code as a QR code.")
def verify(jid: str | None, account: str | None, fingerprints: Sequence[str], uri: str | None, yes: bool,
           qr: bool) -> None:
    """Show the OMEMO fingerprints of JID and our own, and our QR code; mark JID's keys verified.

    Compare each fingerprint with the one JID's app shows (or scan the QR code), then confirm
    it; or pass --fingerprint, or --uri with the text of JID's code. Without JID, the
    account's own other devices are verified, or those of the account --uri names.
    """
    from ..client.omemo.fingerprints import FingerprintUriError, VerificationUri, is_fingerprint

    for fingerprint in fingerprints:
        if not is_fingerprint(fingerprint):
            fail(f"--fingerprint: {fingerprint!r} is not a fingerprint of 64 hex digits", 2)
    me = chosen_account(account)
    scanned: VerificationUri | None = None
    if uri is not None:
        try:
            scanned = VerificationUri.parse(uri)
        except FingerprintUriError as err:
            fail(f"--uri: {err}", 2)
    peer = parse_jid(jid).bare if jid is not None else scanned.jid if scanned is not None else me
    if peer.local is None:
        fail(f"{peer} is not an account address (user@domain)", 2)
    if scanned is not None and scanned.jid != peer:
        fail(f"the code is {scanned.jid}'s, not {peer}'s: nothing verified")
    if fingerprints and scanned is not None:
        fail("--fingerprint and --uri exclude each other", 2)
    make_client = client_factory(me, reconnect=False, available=False)

    async def verifying() -> None:
        client = make_client()
        try:
            await client.connect()
            await _verify(client, me, peer, fingerprints, scanned, yes=yes, qr=qr)
        finally:
            await client.close()

    run(verifying)


async def _verify(client: Client, me: JID, peer: JID, fingerprints: Sequence[str],
                  scanned: VerificationUri | None, *,
                  yes: bool, qr: bool) -> None:
    from ..client import EncryptionRequired
    from ..client.omemo import Trust
    from ..client.omemo.fingerprints import FingerprintUriError, VerificationUri, effective_trust, match

    try:
        this = await client.omemo.own_device()
        own = [d for d in await client.omemo.devices(me) if d.active]
        theirs = own if peer == me else [d for d in await client.omemo.devices(peer) if d.active]
    except EncryptionRequired as err:
        fail(_without_hint(err))
    others = [d for d in own if d.id != this.id]
    blind = client.omemo.settings.blind_trust

    def trust(device: Device) -> Trust:
        return effective_trust(device, theirs if device.jid == peer else own, blind_trust=blind)

    if peer != me:
        if not theirs:
            fail(f"{peer} has no OMEMO devices: nothing to verify")
        click.echo(f"{peer}: {len(theirs)} OMEMO device{'s' if len(theirs) != 1 else ''}")
        for device in theirs:
            click.echo("\n".join(_describe(device, trust(device))))
    click.echo(f"{me} (you): {len(others) + 1} OMEMO device{'s' if others else ''}")
    click.echo("\n".join(_describe(this)))
    for device in others:
        click.echo("\n".join(_describe(device, trust(device))))
    # Our code vouches for this device and for our other devices we verified, as Conversations' does.
    code = str(VerificationUri.for_devices(me, [this, *(d for d in others if d.trust is Trust.VERIFIED)]))
    if qr:
        click.echo("Your code (scan it with the other app, or send the link below):")
        _echo_qr(code)
    click.echo(code)

    candidates = [d for d in theirs if d.id != this.id]
    if scanned is not None:
        try:
            # Checked against every key, this device's too: a code of our other device may list it.
            chosen = [d for d in match(scanned, theirs) if d.id != this.id]
        except FingerprintUriError as err:
            fail(str(err))
        if not chosen:
            fail(f"the code lists only this device: nothing of {peer} to verify")
    elif fingerprints:
        for fingerprint in fingerprints:
            device = await client.omemo.trust(peer, fingerprint)
            click.echo(f"verified: {peer}'s device {device.id}")
        return
    else:
        chosen = [d for d in candidates if d.trust is not Trust.VERIFIED]
        if not chosen:
            click.echo(f"every key of {peer} is verified already" if candidates else f"{peer} has no other device")
            return
    for device in chosen:
        if not yes:
            click.echo("\n".join(_describe(device, trust(device))))
            if not await _confirm(f"Does {peer}'s device {device.id} show this fingerprint?"):
                click.echo(f"left as it was: device {device.id} ({trust(device).value})")
                continue
        await client.omemo.trust(peer, device.fingerprint)
        click.echo(f"verified: {peer}'s device {device.id}")
