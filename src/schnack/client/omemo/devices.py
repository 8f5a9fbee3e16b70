"""OMEMO devices as the program sees them: who, which key (its fingerprint), how far it is trusted.

Trust follows "blind trust before verification" (BTBV): the keys of a contact are trusted
without asking until the user verifies one of them by comparing fingerprints; from then on a
new key of that contact is used only once the user trusts it. Every change of a contact's set
of keys is announced as :class:`KeysChanged`, verified or not, because that is the moment a
stolen account or a rogue server would show.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from omemo.session_manager import SessionManager
from omemo.types import DeviceInformation

from ...xmpp.jid import JID


class Trust(enum.Enum):
    """What the user decided about a key (stored by name in python-omemo's state)."""

    VERIFIED = "verified"  # the user compared the fingerprint and trusts it
    BLIND = "blindly trusted"  # trusted without a comparison, while no key of the contact is verified
    UNDECIDED = "undecided"  # new, and blind trust does not apply: used only once decided
    DISTRUSTED = "distrusted"  # the user refused it: never encrypted to, its messages not read


def fingerprint(identity_key: bytes) -> str:
    """The fingerprint users compare (XEP-0384): the Curve25519 form of the identity key in
    eight groups of eight hex digits."""
    return " ".join(SessionManager.format_identity_key(identity_key))


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as typed or pasted (spaces, colons, capitals) in the form of :func:`fingerprint`."""
    digits = "".join(c for c in text.lower() if c in "0123456789abcdef")
    return " ".join(digits[i:i + 8] for i in range(0, len(digits), 8))


@dataclass(frozen=True)
class Device:
    """One OMEMO device of an account: its id, its key's fingerprint and the trust in that key.

    ``active`` is false for a device that left the account's device list; ``namespaces`` are the
    OMEMO versions it publishes; ``label`` is the name OMEMO 2 devices may give themselves.
    """

    jid: JID
    id: int
    fingerprint: str
    trust: Trust
    active: bool = True
    namespaces: frozenset[str] = frozenset()
    label: str | None = None

    @classmethod
    def from_information(cls, info: DeviceInformation) -> Device:
        try:
            trust = Trust[info.trust_level_name]
        except KeyError:
            trust = Trust.UNDECIDED
        return cls(
            jid=JID.parse(info.bare_jid),
            id=info.device_id,
            fingerprint=fingerprint(info.identity_key),
            trust=trust,
            active=any(active for _, active in info.active),
            namespaces=info.namespaces,
            label=info.label,
        )

    def describe(self) -> str:
        return f"device {self.id} (fingerprint {self.fingerprint})"


@dataclass(frozen=True)
class KeysChanged:
    """The set of OMEMO keys of ``jid`` (a contact, or our own account) changed."""

    jid: JID
    added: tuple[Device, ...] = ()
    removed: tuple[Device, ...] = ()

    def __str__(self) -> str:
        parts = [f"new {device.describe()}" for device in self.added]
        parts += [f"{device.describe()} removed" for device in self.removed]
        return f"the OMEMO keys of {self.jid} changed: " + "; ".join(parts)
