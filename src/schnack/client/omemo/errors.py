"""Why a message could not be encrypted: each says what happened and what the user can do."""

from __future__ import annotations

from ...xmpp.jid import JID
from ..errors import ClientError, EncryptionRequired
from .devices import Device

UNENCRYPTED_HINT = "pass encrypted=False to send unencrypted"


class NoOmemoDevices(EncryptionRequired):
    """The recipient publishes no OMEMO device (or none we are allowed to see)."""

    def __init__(self, jid: JID, reason: str | None = None) -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{jid} has no OMEMO devices{detail}; {UNENCRYPTED_HINT}")
        self.jid = jid


class UntrustedKeys(EncryptionRequired):
    """A verified contact has keys nobody verified: they are used only once the user decides."""

    def __init__(self, devices: tuple[Device, ...]) -> None:
        jids = ", ".join(sorted({str(device.jid) for device in devices}))
        listed = "; ".join(device.describe() for device in devices)
        super().__init__(
            f"not sent: {jids} has OMEMO keys that are not verified: {listed}. Compare the fingerprints, "
            "then trust or distrust each key, or " + UNENCRYPTED_HINT
        )
        self.devices = devices


class NoTrustedDevices(EncryptionRequired):
    """The recipient has OMEMO devices, but none we may or can encrypt to."""

    def __init__(self, jid: JID, reason: str) -> None:
        super().__init__(f"{jid} has no OMEMO device to encrypt to: {reason}; {UNENCRYPTED_HINT}")
        self.jid = jid


class OmemoUnavailable(EncryptionRequired):
    """OMEMO could not be set up for this account (the server refused to store our keys, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"OMEMO is not available: {reason}; {UNENCRYPTED_HINT}")


class DeviceNotUsable(ClientError):
    """A payload cannot be encrypted for one particular device (unknown, distrusted, no bundle)."""


class UnknownFingerprint(ClientError):
    """Asked to trust or distrust a key the account does not have."""


class Undecryptable(ClientError):
    """An OMEMO message that could not be decrypted; ``str()`` says why. ``lasting`` is False when
    the reason may pass (OMEMO not set up on this login, a lost link, the sender's keys not
    fetched yet, no session yet): a later try may open it."""

    def __init__(self, reason: str, *, lasting: bool = True) -> None:
        super().__init__(reason)
        self.lasting = lasting
