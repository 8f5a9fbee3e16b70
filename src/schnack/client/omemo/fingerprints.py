"""XEP-0384 OMEMO fingerprints as people compare them, and the XEP-0147 style ``xmpp:`` URI that
carries them in a QR code.

The URI is the one Conversations shows and scans (Dino, Gajim, profanity and Monal write the
same)::

    xmpp:alice@example.org?omemo-sid-1234567=<64 hex digits>;omemo-sid-7654321=<64 hex digits>

one ``omemo-sid-<device id>`` parameter per device of the legacy version
(``eu.siacs.conversations.axolotl``), its value the fingerprint: the Curve25519 form of the
identity key in hex, without the key type byte. Devices of OMEMO 2 (``urn:xmpp:omemo:2``) are
listed as ``omemo2-sid-<device id>`` (as Moxxy writes them); a device that publishes in both
versions is listed once per version. Parameters are separated by ';' (XEP-0147 §2); '&' is
accepted too, as is Conversations' oldest form ``?omemo=<fingerprint>`` without a device id, a
leading action (``?message;…``) and parameters that say nothing about keys. Nothing here does
any I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ...xmpp.jid import JID, JIDError
from .devices import Device, Trust, normalize_fingerprint
from .protocol import OLDMEMO, TWOMEMO

SCHEME = "xmpp:"
# The URI parameter of each version, followed by the device id.
PARAMETERS = {OLDMEMO: "omemo-sid-", TWOMEMO: "omemo2-sid-"}
LEGACY_PARAMETER = "omemo"
_DIGITS = 64
_PARAMETER = re.compile(r"(omemo2?)-sid-(\d{1,10})")
_HEX = re.compile(r"[0-9a-fA-F]{64}")
# RFC 5122 §2.2: what may stand unencoded in the node and domain of an XMPP IRI; ';', '&', '?',
# '#' and '%' would break the query apart, so they are encoded.
_SAFE = "@!$'()*+,=:-._~[]"
# Device ids are 31-bit unsigned integers (XEP-0384 §5.3.1).
_MAX_DEVICE_ID = 2**31 - 1


class FingerprintUriError(ValueError):
    """A text that is not a fingerprint URI, or one that does not match the keys it should."""


def effective_trust(device: Device, devices: Iterable[Device], *, blind_trust: bool = True) -> Trust:
    """The trust ``device`` has now: a key nobody decided about yet is trusted blindly at its first
    use while no key of its account (``devices``) is verified (BTBV), so it is shown as such."""
    if device.trust is not Trust.UNDECIDED or not blind_trust:
        return device.trust
    return Trust.UNDECIDED if any(d.trust is Trust.VERIFIED for d in devices) else Trust.BLIND


def is_fingerprint(text: str) -> bool:
    """Whether ``text`` is a whole fingerprint as an app shows it, maybe in groups split by spaces
    or colons: a typo, or a character the app never shows, would otherwise just be dropped."""
    return _HEX.fullmatch(re.sub(r"[\s:]", "", text)) is not None


def grouped(fingerprint: str, per_line: int = 8) -> list[str]:
    """A fingerprint in groups of eight hex digits, ``per_line`` groups to a line (apps show
    two lines of four)."""
    groups = normalize_fingerprint(fingerprint).split()
    return [" ".join(groups[i:i + per_line]) for i in range(0, len(groups), per_line)] or [""]


@dataclass(frozen=True)
class UriKey:
    """One key in a URI: its fingerprint (as :func:`~.devices.fingerprint` writes it), the device
    id and OMEMO version it was listed under; no id and no version for ``?omemo=``."""

    fingerprint: str
    device_id: int | None = None
    namespace: str | None = None

    def parameter(self) -> str:
        digits = self.fingerprint.replace(" ", "")
        if self.device_id is None or self.namespace is None:
            return f"{LEGACY_PARAMETER}={digits}"
        return f"{PARAMETERS[self.namespace]}{self.device_id}={digits}"


@dataclass(frozen=True)
class VerificationUri:
    """The account ``jid`` and the keys it vouches for."""

    jid: JID
    keys: tuple[UriKey, ...]

    @classmethod
    def for_devices(cls, jid: JID, devices: Iterable[Device]) -> VerificationUri:
        """The URI for ``devices`` of ``jid``: one parameter per device and OMEMO version it
        publishes (the legacy version for a device that names none), in device id order."""
        keys: list[UriKey] = []
        for device in sorted(devices, key=lambda d: d.id):
            namespaces = [n for n in (OLDMEMO, TWOMEMO) if n in device.namespaces] or [OLDMEMO]
            keys += [UriKey(device.fingerprint, device.id, namespace) for namespace in namespaces]
        return cls(jid.bare, tuple(keys))

    def __str__(self) -> str:
        address = SCHEME + quote(str(self.jid), safe=_SAFE)
        if not self.keys:
            return address
        return address + "?" + ";".join(key.parameter() for key in self.keys)

    @classmethod
    def parse(cls, text: str) -> VerificationUri:
        """Read a URI as scanned or pasted; :class:`FingerprintUriError` says what is wrong."""
        text = text.strip()
        if not text.lower().startswith(SCHEME):
            raise FingerprintUriError(f"not an xmpp: URI: {text[:80]!r}")
        rest = text[len(SCHEME):]
        if rest.startswith("//"):
            raise FingerprintUriError("an xmpp:// URI names an account to act as, not keys to verify")
        address, _, query = rest.partition("?")
        address = address.partition("#")[0]
        query = query.partition("#")[0]
        try:
            jid = JID.parse(unquote(address, errors="strict"))
        except (JIDError, UnicodeDecodeError) as err:
            raise FingerprintUriError(f"the URI names no valid address: {err}") from None
        if jid.local is None:
            raise FingerprintUriError(f"the URI names {jid}, not an account (user@domain)")
        keys: list[UriKey] = []
        for part in re.split(r"[;&]", query):
            name, equals, value = part.partition("=")
            name = unquote(name).lower()
            if not equals:
                continue  # an action such as "message" or "roster", or an empty part
            matched = _PARAMETER.fullmatch(name)
            if matched is None and name != LEGACY_PARAMETER:
                continue  # says nothing about keys (name, preauth, ...)
            value = unquote(value)
            if _HEX.fullmatch(value) is None:
                raise FingerprintUriError(f"{name} is not a fingerprint of {_DIGITS} hex digits: {value[:80]!r}")
            fingerprint = normalize_fingerprint(value)
            if matched is None:
                keys.append(UriKey(fingerprint))
                continue
            device_id = int(matched.group(2))
            if not 0 < device_id <= _MAX_DEVICE_ID:
                raise FingerprintUriError(f"{name} names no valid device id")
            namespace = OLDMEMO if matched.group(1) == "omemo" else TWOMEMO
            keys.append(UriKey(fingerprint, device_id, namespace))
        if not keys:
            raise FingerprintUriError(f"the URI for {jid} carries no OMEMO fingerprint")
        return cls(jid.bare, tuple(dict.fromkeys(keys)))


def match(uri: VerificationUri, devices: Sequence[Device]) -> list[Device]:
    """The devices that ``uri`` vouches for, each once, in device id order; every key in it must
    be a key of ``devices`` (those its owner publishes now), else :class:`FingerprintUriError`
    names the first that is not, and nothing should be trusted."""
    by_id = {device.id: device for device in devices if device.active}
    chosen: dict[int, Device] = {}
    for key in uri.keys:
        if key.device_id is None:
            found = next((d for d in by_id.values() if d.fingerprint == key.fingerprint), None)
            if found is None:
                raise FingerprintUriError(
                    f"{uri.jid} publishes no OMEMO key with fingerprint {key.fingerprint}: do not trust this code"
                )
        else:
            found = by_id.get(key.device_id)
            if found is None:
                raise FingerprintUriError(
                    f"{uri.jid} publishes no OMEMO device {key.device_id} (the code is old, or not theirs)"
                )
            if found.fingerprint != key.fingerprint:
                raise FingerprintUriError(
                    f"the fingerprint of {uri.jid}'s device {key.device_id} does NOT match: the code says "
                    f"{key.fingerprint}, the server gives {found.fingerprint}; do not trust this device"
                )
        chosen[found.id] = found
    return [chosen[id] for id in sorted(chosen)]
