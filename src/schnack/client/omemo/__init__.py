"""OMEMO end-to-end encryption (XEP-0384) for the client, through python-omemo.

Both versions in use are spoken: ``eu.siacs.conversations.axolotl`` (:data:`OLDMEMO`, what the
apps in use today read) and ``urn:xmpp:omemo:2`` (:data:`TWOMEMO`, with XEP-0420 envelopes).
:class:`Omemo` is what ``Client.omemo`` returns: fingerprints, trust decisions and key changes.
"""

from .adapter import Decrypted, Omemo, OmemoSettings
from .devices import Device, KeysChanged, Trust
from .errors import (
    DeviceNotUsable,
    NoOmemoDevices,
    NoTrustedDevices,
    OmemoUnavailable,
    Undecryptable,
    UnknownFingerprint,
    UntrustedKeys,
)
from .protocol import OLDMEMO, TWOMEMO

__all__ = [
    "OLDMEMO",
    "TWOMEMO",
    "Decrypted",
    "Device",
    "DeviceNotUsable",
    "KeysChanged",
    "NoOmemoDevices",
    "NoTrustedDevices",
    "Omemo",
    "OmemoSettings",
    "OmemoUnavailable",
    "Trust",
    "Undecryptable",
    "UnknownFingerprint",
    "UntrustedKeys",
]
