"""Fingerprints as users type them, and the sentence a key change is announced with."""

from __future__ import annotations

from schnack.client.omemo.devices import Device, KeysChanged, Trust, normalize_fingerprint
from schnack.xmpp.jid import JID

PRINT = "05ab01cd " * 7 + "05ab01cd"


def test_fingerprints_are_compared_however_they_are_written() -> None:
    written = [PRINT.strip(), PRINT.replace(" ", "").upper(), ":".join(PRINT.split())]
    assert {normalize_fingerprint(text) for text in written} == {PRINT.strip()}


def test_a_key_change_names_the_devices() -> None:
    bob = JID.parse("bob@example.org")
    new = Device(bob, 7, PRINT.strip(), Trust.BLIND)
    gone = Device(bob, 3, "0" * 8, Trust.VERIFIED, active=False)
    assert str(KeysChanged(bob, added=(new,), removed=(gone,))) == (
        f"the OMEMO keys of bob@example.org changed: new device 7 (fingerprint {PRINT.strip()}); "
        "device 3 (fingerprint 00000000) removed"
    )
