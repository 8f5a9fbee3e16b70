"""python-omemo's SessionManager with our trust rules, and its XMPP hooks bound to one client.

python-omemo builds the manager itself (``create`` calls the class without arguments) and
declares the XMPP hooks as static methods, so the hooks cannot reach an instance: each client
gets a subclass of its own whose static hooks close over that client's :class:`Hooks`.

Trust is BTBV (see :mod:`.devices`): while no key of a JID is verified, its new keys are
trusted blindly; once one is, a new key stops the message with :class:`UntrustedKeys`
instead of being used unseen.
"""

from __future__ import annotations

from typing import Protocol

from omemo.backend import Backend
from omemo.bundle import Bundle
from omemo.message import Message
from omemo.session import Initiation
from omemo.session_manager import SessionManager, TrustDecisionFailed, UnknownTrustLevel
from omemo.types import DeviceInformation, DeviceList, TrustLevel

from .devices import Device, Trust


class Hooks(Protocol):
    """What python-omemo needs from the XMPP side (the methods of the same name, without ``_``)."""

    async def upload_bundle(self, bundle: Bundle) -> None: ...

    async def download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> Bundle: ...

    async def delete_bundle(self, namespace: str, device_id: int) -> None: ...

    async def upload_device_list(self, namespace: str, device_list: DeviceList) -> None: ...

    async def download_device_list(self, namespace: str, bare_jid: str) -> DeviceList: ...

    async def send_message(self, message: Message, bare_jid: str) -> None: ...


class Undecided(TrustDecisionFailed):
    """Keys that need the user's decision before anything is encrypted to them."""

    def __init__(self, devices: tuple[Device, ...]) -> None:
        super().__init__("keys need a trust decision")
        self.devices = devices


class NotTrusted(TrustDecisionFailed):
    """A device the user distrusted: nothing is encrypted to it."""


class Manager(SessionManager):
    """The session manager with BTBV trust; :func:`bind` adds the XMPP hooks."""

    blind_trust = True

    async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
        try:
            trust = Trust[device.trust_level_name]
        except KeyError:
            raise UnknownTrustLevel(f"unknown trust level {device.trust_level_name!r}") from None
        if trust is Trust.VERIFIED or (trust is Trust.BLIND and self.blind_trust):
            return TrustLevel.TRUSTED
        if trust is Trust.DISTRUSTED:
            return TrustLevel.DISTRUSTED
        return TrustLevel.UNDECIDED

    async def _make_trust_decision(self, undecided: frozenset[DeviceInformation], identifier: str | None) -> None:
        waiting = await self._blindly_trust(undecided)
        if waiting:
            raise Undecided(tuple(Device.from_information(info) for info in waiting))

    async def _blindly_trust(self, undecided: frozenset[DeviceInformation]) -> list[DeviceInformation]:
        """BTBV: blind trust for the keys of JIDs none of whose keys is verified; the others are
        returned, to wait for the user."""
        waiting: list[DeviceInformation] = []
        for jid in sorted({device.bare_jid for device in undecided}):
            known = await self.get_device_information(jid)
            verified = any(info.trust_level_name == Trust.VERIFIED.name for info in known)
            for info in sorted((d for d in undecided if d.bare_jid == jid), key=lambda d: d.device_id):
                if self.blind_trust and not verified:
                    await self.set_trust(jid, info.identity_key, Trust.BLIND.name)
                else:
                    waiting.append(info)
        return waiting

    async def encrypt_for_device(self, backend: Backend, device: DeviceInformation, plaintext: bytes) -> Message:
        """``plaintext`` encrypted for ``device`` alone, as an OMEMO message of ``backend``'s version
        with a single key: what python-omemo's :meth:`encrypt` does for each device of every
        recipient, here for one device (XEP-0384 §5.3 / §7.2 for the legacy version), which the
        verified calls of Conversations need (the DTLS fingerprint for the answering device only).

        The device must be trusted by the same rules as a message (BTBV); :class:`NotTrusted`
        or :class:`Undecided` otherwise."""
        trust = await self._evaluate_custom_trust_level(device)
        if trust is TrustLevel.UNDECIDED:
            await self._make_trust_decision(frozenset({device}), None)
        elif trust is TrustLevel.DISTRUSTED:
            raise NotTrusted(f"device {device.device_id} of {device.bare_jid} is distrusted")
        content, key_material = await backend.encrypt_plaintext(plaintext)
        session = await backend.load_session(device.bare_jid, device.device_id)
        if session is None:
            bundle = await self._download_bundle(backend.namespace, device.bare_jid, device.device_id)
            session, encrypted = await backend.build_session_active(device.bare_jid, device.device_id, bundle,
                                                                    key_material)  # fmt: skip
        else:
            encrypted = await backend.encrypt_key_material(session, key_material)
        # Until the peer answered on it, every message repeats the key exchange (as encrypt does).
        exchange = session.key_exchange if session.initiation is Initiation.ACTIVE and not session.confirmed else None
        await backend.store_session(session)
        own, _ = await self.get_own_device_information()
        return Message(backend.namespace, own.bare_jid, own.device_id, content, frozenset({(encrypted, exchange)}))

    async def settle(self, device: DeviceInformation) -> DeviceInformation:
        """The device with BTBV applied, as it would be before encrypting to it: a message from a
        new key shows the trust the next message to it will have."""
        if device.trust_level_name != Trust.UNDECIDED.name or await self._blindly_trust(frozenset({device})):
            return device
        return device._replace(trust_level_name=Trust.BLIND.name)


def bind(hooks: Hooks, blind_trust: bool) -> type[Manager]:
    """A Manager class whose XMPP hooks call ``hooks``."""

    class Bound(Manager):
        @staticmethod
        async def _upload_bundle(bundle: Bundle) -> None:
            await hooks.upload_bundle(bundle)

        @staticmethod
        async def _download_bundle(namespace: str, bare_jid: str, device_id: int) -> Bundle:
            return await hooks.download_bundle(namespace, bare_jid, device_id)

        @staticmethod
        async def _delete_bundle(namespace: str, device_id: int) -> None:
            await hooks.delete_bundle(namespace, device_id)

        @staticmethod
        async def _upload_device_list(namespace: str, device_list: DeviceList) -> None:
            await hooks.upload_device_list(namespace, device_list)

        @staticmethod
        async def _download_device_list(namespace: str, bare_jid: str) -> DeviceList:
            return await hooks.download_device_list(namespace, bare_jid)

        @staticmethod
        async def _send_message(message: Message, bare_jid: str) -> None:
            await hooks.send_message(message, bare_jid)

    Bound.blind_trust = blind_trust
    return Bound
