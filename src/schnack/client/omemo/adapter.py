"""XEP-0384 OMEMO Encryption for one account: set-up at login, encrypting, decrypting, trust.

At each login, before presence is announced (so before offline messages arrive), the account's
device is set up: on the first run python-omemo makes the identity key, a device id and the
pre keys and publishes bundle and device list in every loaded OMEMO version; later the state is
loaded from ``omemo.sqlite`` in the account's directory, and the published device lists and
bundles are compared with it and put right where they differ; after a reconnect, the device
lists are checked to still name this device. A pre key a message used is kept a while, for
another sender that took it too (pre_keys.py). A server that refuses all that leaves the client connected without
OMEMO: encrypting then fails with a sentence saying why.

A message is encrypted to every device of the recipient and to our own other devices, each in
the version it publishes, preferring the versions in the order of ``OmemoSettings.namespaces``
(the legacy one first by default: it is what the apps in use today read). The recipient's
device lists, and ours, are fetched before the first message of a connection and again when
they are more than :data:`DEVICE_LISTS_FRESH_FOR` seconds old; in between, the server's PEP
notifications keep them current where it sends them (to contacts and to our own devices, if
this client announced presence), and a message from a device not yet known makes python-omemo
fetch the sender's list again. Each fetch or update of someone's lists is told to the features
(:meth:`Omemo.on_keys`), which try again what that sender's keys were missing for.

All work on the OMEMO state (encrypting, decrypting, device list updates, trust) is done one
operation at a time: python-omemo reads a session, advances it and writes it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

import oldmemo.etree
import twomemo.etree
from omemo.session_manager import NoEligibleDevices, NoSession, SenderNotFound, XMPPInteractionFailed
from omemo.types import DeviceInformation, DeviceList, OMEMOException

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.pubsub import EVENT, EventItems, PubSubError, parse_event
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..errors import ClientError, NotConnected, RequestTimeout, XmppError
from ..feed import Feed, Subscription
from . import sce
from .devices import Device, KeysChanged, Trust, fingerprint, normalize_fingerprint
from .errors import (
    DeviceNotUsable,
    NoOmemoDevices,
    NoTrustedDevices,
    OmemoUnavailable,
    Undecryptable,
    UnknownFingerprint,
    UntrustedKeys,
)
from .hooks import STORE_HINT, PepHooks, encrypted_element
from .manager import Manager, Undecided, bind
from .pre_keys import KeepingUsedPreKeys, backend
from .protocol import NAMESPACES, OLDMEMO, TWOMEMO, namespace_of_device_list_node, parse_device_list
from .storage import SqliteStorage

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_BODY = qname(ns.CLIENT, "body")
_EVENT = qname(EVENT, "event")
_EME = qname("urn:xmpp:eme:0", "encryption")
# How long fetched device lists are used before they are fetched again: a new device of someone
# who sends us no PEP notifications (not a contact) is missed at most this long.
DEVICE_LISTS_FRESH_FOR = 600.0
# What clients without OMEMO show instead of the message.
FALLBACK = "This message is OMEMO encrypted."


@dataclass(frozen=True)
class OmemoSettings:
    """``namespaces``: the OMEMO versions to speak, in order of preference for devices that publish
    both; ``blind_trust``: BTBV (False: every new key waits for the user's decision)."""

    namespaces: tuple[str, ...] = (OLDMEMO, TWOMEMO)
    blind_trust: bool = True

    def __post_init__(self) -> None:
        unknown = [n for n in self.namespaces if n not in NAMESPACES]
        if unknown or not self.namespaces or len(set(self.namespaces)) != len(self.namespaces):
            raise ValueError(f"namespaces must be some of {', '.join(NAMESPACES)}, each once")


@dataclass(frozen=True)
class Decrypted:
    """A decrypted message: its text (None for an empty OMEMO message) and the sending device."""

    text: str | None
    device: Device


def _bare(jid: str | JID) -> JID:
    return (jid if isinstance(jid, JID) else JID.parse(jid)).bare


def _connection_problem(err: BaseException) -> ClientError | None:
    """The lost link or unanswered request behind a python-omemo failure, if that is what it was."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, NotConnected | RequestTimeout):
            return cause
        cause = cause.__cause__
    return None


def _passing(err: BaseException) -> bool:
    """Whether a python-omemo decryption failure may pass: the sender's device list or bundle
    could not be fetched (yet: hidden, not published yet, a server that did not answer), there is
    no session yet (the message that builds it could not be read yet either), or the link was lost.
    A message not for this device, from a distrusted key or broken stays unreadable."""
    return isinstance(err, SenderNotFound | NoSession | XMPPInteractionFailed) or _connection_problem(err) is not None


def _xmpp_error(err: BaseException) -> XmppError | None:
    """The error reply behind a python-omemo failure, if there was one."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, XmppError):
        cause = cause.__cause__
    return cause


class Omemo:
    """OMEMO for one client; its state lives in ``directory`` (in memory if None)."""

    def __init__(self, client: Client, directory: Path | None, settings: OmemoSettings) -> None:
        self.client = client
        self.settings = settings
        self._directory = directory
        self._hooks = PepHooks(client)
        self._storage: SqliteStorage | None = None
        self._manager: Manager | None = None
        self._backends: dict[str, KeepingUsedPreKeys] = {}
        self._device_id = 0
        # Why OMEMO cannot be used, once a set-up attempt failed.
        self._problem = "not set up yet"
        self._tried = asyncio.Event()
        self._lock = asyncio.Lock()
        # When the device lists of a bare JID were last fetched on this connection (monotonic clock).
        self._fetched: dict[JID, float] = {}
        # The active keys of each JID as :meth:`_check_keys` last saw them: (device id, fingerprint).
        self._keys: dict[JID, frozenset[tuple[int, str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._key_readers: list[Callable[[JID], None]] = []
        self.changes: Feed[KeysChanged] = Feed()
        client.on_connect(self._on_connect)
        client.on_message(self._on_event)

    # Life cycle --------------------------------------------------------------------------------

    async def _on_connect(self) -> None:
        self._fetched.clear()
        try:
            await self._set_up()
        except (OMEMOException, NoOmemoDevices, sqlite3.Error, OSError) as err:
            lost = _connection_problem(err)
            if lost is not None:
                raise lost from err
            self._problem = str(err) or type(err).__name__
            log.warning("OMEMO is not available for %s: %s", self.client.account, self._problem)
        self._tried.set()

    async def _set_up(self) -> None:
        account = self.client.account
        started = self._manager is None
        if self._manager is None:
            if self._storage is None:
                self._storage = SqliteStorage(self._directory)
            storage = self._storage
            self._backends = {namespace: backend(namespace, storage) for namespace in self.settings.namespaces}
            manager = await bind(self._hooks, self.settings.blind_trust).create(
                list(self._backends.values()),
                storage,
                str(account),
                # No device label: python-omemo would ask the legacy version, which has none, to sign it.
                None,
                Trust.UNDECIDED.name,
            )
            # Without a history catch-up (MAM) to wait for, live operation starts right away.
            await manager.after_history_sync()
            self._device_id = (await manager.get_own_device_information())[0].device_id
            self._manager = manager
        async with self._exclusive() as manager:
            if started:
                # Our device lists and bundles as the server has them, put right if they are not
                # (a first run cut short, a server that lost them).
                await manager.ensure_data_consistency()
                self._fetched[account] = time.monotonic()
            else:
                await self._refresh(account)
                # A bundle we could not publish while reading a message (hooks.py).
                await self._hooks.pay()
            for kept in self._backends.values():
                await kept.delete_expired_pre_keys()
            await self._check_keys(account)

    async def close(self) -> None:
        """Stop OMEMO's background work and close its state (after the operation under way)."""
        await self._hooks.close()
        for task in list(self._tasks):
            task.cancel()
        async with self._lock:
            if self._manager is not None:
                await self._manager.shutdown()
                self._manager = None
            self._problem = "the client was closed"
            self._tried.set()
            if self._storage is not None:
                self._storage.close()
                self._storage = None
        self.changes.end()

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[Manager]:
        """One operation on the OMEMO state at a time, its writes committed together."""
        await self._available()
        async with self._lock:
            if self._manager is None or self._storage is None:
                raise OmemoUnavailable(self._problem)
            with self._storage.transaction():
                yield self._manager

    async def _available(self) -> Manager:
        if self._manager is None and not self._tried.is_set():
            try:
                async with asyncio.timeout(self.client.timeout):
                    await self._tried.wait()
            except TimeoutError:
                raise NotConnected(f"not connected to {self.client.account.domain}") from None
        if self._manager is None:
            raise OmemoUnavailable(self._problem)
        return self._manager

    def on_keys(self, reader: Callable[[JID], None]) -> None:
        """Tell ``reader`` each bare JID whose device lists were just fetched or updated: what it
        sent that could not be decrypted for want of its keys may be read now."""
        self._key_readers.append(reader)

    def _keys_arrived(self, jid: JID) -> None:
        for reader in self._key_readers:
            reader(jid)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("OMEMO device list update failed: %s", task.exception())

    # Device lists ------------------------------------------------------------------------------

    async def _refresh(self, jid: JID) -> None:
        """Fetch ``jid``'s device lists of every loaded version (in an exclusive section)."""
        assert self._manager is not None
        failures: list[OMEMOException] = []
        for namespace in self.settings.namespaces:
            try:
                await self._manager.refresh_device_list(namespace, str(jid))
            except OMEMOException as err:
                lost = _connection_problem(err)
                if lost is not None:
                    raise lost from err
                failures.append(err)
        if len(failures) == len(self.settings.namespaces):
            refusal = _xmpp_error(failures[0])
            reason = f"its server answered {refusal.condition}" if refusal else f"fetching them failed: {failures[0]}"
            raise NoOmemoDevices(jid, reason)
        self._fetched[jid] = time.monotonic()
        self._keys_arrived(jid)

    def _fresh(self, jid: JID) -> bool:
        fetched = self._fetched.get(jid)
        return fetched is not None and time.monotonic() - fetched < DEVICE_LISTS_FRESH_FOR

    def _on_event(self, el: Element) -> None:
        """XEP-0163 §4.3: a device list notification (or the last item, sent on presence)."""
        event = el.find(_EVENT)
        if event is None or self._manager is None:
            return
        try:
            sender = Stanza.parse(el).from_ or self.client.account
            parsed = parse_event(event)
        except (StanzaError, PubSubError):
            return
        namespace = namespace_of_device_list_node(parsed.node)
        if sender.resource is not None or namespace not in self.settings.namespaces:
            return
        devices: DeviceList = {}
        if isinstance(parsed, EventItems):
            if not parsed.items:
                return
            payload = parsed.items[-1].payload
            try:
                devices = parse_device_list(namespace, payload) if payload is not None else {}
            except ValueError as err:
                log.warning("ignoring a malformed %s device list from %s: %s", namespace, sender, err)
                return
        self._spawn(self._apply_device_list(namespace, sender, devices))

    async def _apply_device_list(self, namespace: str, jid: JID, devices: DeviceList) -> None:
        async with self._exclusive() as manager:
            await manager.update_device_list(namespace, str(jid), devices)
            await self._check_keys(jid)
        self._keys_arrived(jid)

    async def _check_keys(self, jid: JID) -> None:
        """Announce a change of ``jid``'s active keys since they were last seen (in an exclusive section).

        The first sight of a JID's keys is recorded, not announced: there is nothing to compare.
        """
        assert self._manager is not None and self._storage is not None
        known = [
            Device.from_information(info)
            for info in await self._manager.get_device_information(str(jid))
            if not (jid == self.client.account and info.device_id == self._device_id)
        ]
        current = {(device.id, device.fingerprint) for device in known if device.active}
        self._keys[jid] = frozenset(current)
        key = f"/schnack/keys/{jid}"
        stored = (await self._storage.load(key)).maybe(None)
        await self._storage.store(key, [[device_id, print_] for device_id, print_ in sorted(current)])
        if not isinstance(stored, list):
            return
        previous = {
            (entry[0], entry[1]) for entry in stored
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and isinstance(entry[1], str)
        }
        if previous == current:
            return
        by_key = {(device.id, device.fingerprint): device for device in known}
        change = KeysChanged(
            jid,
            added=tuple(by_key[k] for k in sorted(current - previous)),
            removed=tuple(by_key.get(k) or Device(jid, k[0], k[1], Trust.UNDECIDED, active=False)
                          for k in sorted(previous - current)),
        )
        log.warning("%s", change)
        self.changes.publish(change)

    # Encrypting and decrypting -----------------------------------------------------------------

    async def encrypt(self, to: JID, text: str) -> list[Element]:
        """The children of a chat message that carries ``text`` encrypted to ``to`` (XEP-0384): the
        ``<encrypted/>`` elements, a fallback body, the XEP-0380 element and an XEP-0334 store
        hint, so that archives keep it."""
        return await self.encrypt_to_all((to,), text, to=to)

    async def encrypt_to_all(self, recipients: Iterable[JID], text: str, *, to: JID) -> list[Element]:
        """As :meth:`encrypt`, to every device of each of ``recipients`` at once: one message that
        all of them can read, as a group message is (a group encrypts to every member's
        devices). Each recipient needs a device to encrypt to, or nothing is encrypted. ``to`` is
        where the message goes (the contact, or the group's room), which the OMEMO 2 envelope
        names (XEP-0384, its SCE profile)."""
        jids = sorted({jid.bare for jid in recipients}, key=str)
        jid = jids[0] if jids else self.client.account
        plaintexts = {
            namespace: text.encode() if namespace == OLDMEMO
            else sce.seal([element(_BODY, text=text)], self.client.account, to)
            for namespace in self.settings.namespaces
        }
        async with self._exclusive() as manager:
            # Device lists change only through a refresh or a notification, each checked for new keys.
            # Ours too: a client without presence gets no notifications, not even of our own devices.
            for each in sorted({*jids, self.client.account}, key=str):
                if not self._fresh(each):
                    await self._refresh(each)
                    await self._check_keys(each)
            try:
                messages, problems = await manager.encrypt(
                    frozenset(str(each) for each in jids),
                    plaintexts,
                    list(self.settings.namespaces),
                )
            except NoEligibleDevices as err:
                lacking = sorted(err.bare_jids) or [str(jid)]
                raise await self._why_not(JID.parse(lacking[0])) from None
            except Undecided as err:
                raise UntrustedKeys(err.devices) from None
        if not messages:
            raise NoOmemoDevices(jid)
        for problem in problems:
            log.warning("not encrypted to %s's device %d (%s): %s", problem.bare_jid, problem.device_id,
                        problem.namespace, problem.exception)
        children = [encrypted_element(message) for message in sorted(messages, key=lambda m: m.namespace)]
        used = min((m.namespace for m in messages), key=self.settings.namespaces.index)
        children += [
            element(_BODY, text=FALLBACK),
            element(_EME, {"namespace": used}),
            element(STORE_HINT),
        ]
        return children

    async def _why_not(self, jid: JID) -> ClientError:
        """Why no device of ``jid`` could be encrypted to (in an exclusive section)."""
        assert self._manager is not None
        devices = [Device.from_information(i) for i in await self._manager.get_device_information(str(jid))]
        active = [device for device in devices if device.active]
        if not active:
            return NoOmemoDevices(jid)
        if all(device.trust is Trust.DISTRUSTED for device in active):
            return NoTrustedDevices(jid, "all its keys are distrusted")
        return NoTrustedDevices(jid, "its keys could not be fetched")

    def carries(self, el: Element) -> bool:
        """Whether a message is OMEMO encrypted (in either version, loaded or not)."""
        return any(el.find(qname(namespace, "encrypted")) is not None for namespace in NAMESPACES)

    def _for_us(self, namespace: str, encrypted: Element) -> bool:
        header = encrypted.find(qname(namespace, "header"))
        if header is None:
            return False
        rid = str(self._device_id)
        if namespace == OLDMEMO:
            return any(key.get("rid") == rid for key in header.findall(qname(OLDMEMO, "key")))
        account = str(self.client.account)
        return any(
            key.get("rid") == rid
            for keys in header.findall(qname(TWOMEMO, "keys")) if keys.get("jid") == account
            for key in keys.findall(qname(TWOMEMO, "key"))
        )

    async def decrypt(self, sender: JID, el: Element) -> Decrypted:
        """The text of an OMEMO message from ``sender`` (XEP-0384); Undecryptable says why not."""
        try:
            await self._available()
        except (OmemoUnavailable, NotConnected) as err:
            raise Undecryptable(str(err), lasting=False) from None
        chosen = next(
            ((namespace, found) for namespace in (TWOMEMO, OLDMEMO) if namespace in self.settings.namespaces
             for found in [el.find(qname(namespace, "encrypted"))]
             if found is not None and self._for_us(namespace, found)),
            None,
        )
        if chosen is None:
            raise Undecryptable("the message is not encrypted for this device")
        namespace, encrypted = chosen
        plaintext, device = await self._open(namespace, sender, encrypted)
        if plaintext is None:
            return Decrypted(None, device)
        if namespace == OLDMEMO:
            return Decrypted(plaintext.decode("utf-8", errors="replace"), device)
        try:
            opened = sce.open_envelope(plaintext, sender, self._conversation(el))
        except (sce.SceError, StanzaError) as err:
            raise Undecryptable(str(err)) from None
        body = next((child for child in opened.content if child.tag == _BODY), None)
        return Decrypted(body.text or "" if body is not None else None, device)

    def _conversation(self, el: Element) -> JID:
        """The conversation a message belongs to, as its OMEMO 2 envelope must name it: the room of
        a group message, else the stanza's addressee (ourselves, or the contact of a message our
        other device sent)."""
        stanza = Stanza.parse(el)
        if stanza.type == "groupchat" and stanza.from_ is not None:
            return stanza.from_.bare
        return (stanza.to or self.client.account).bare

    async def open_payload(self, sender: JID, encrypted: Element) -> tuple[bytes, Device]:
        """The plaintext of an OMEMO ``<encrypted/>`` element carried outside a message body, as
        the DTLS fingerprint of a verified call is, and the device that encrypted it (with its
        trust); :class:`Undecryptable` says why not."""
        try:
            await self._available()
        except (OmemoUnavailable, NotConnected) as err:
            raise Undecryptable(str(err), lasting=False) from None
        namespace = next((n for n in self.settings.namespaces if encrypted.tag == qname(n, "encrypted")), None)
        if namespace is None:
            raise Undecryptable(f"{encrypted.tag} is not an OMEMO version this client speaks")
        if not self._for_us(namespace, encrypted):
            raise Undecryptable("it is not encrypted for this device")
        plaintext, device = await self._open(namespace, sender, encrypted)
        if plaintext is None:
            raise Undecryptable("it is an empty OMEMO message")
        return plaintext, device

    async def _open(self, namespace: str, sender: JID, encrypted: Element) -> tuple[bytes | None, Device]:
        jid = sender.bare
        try:
            async with self._exclusive() as manager:
                try:
                    if namespace == TWOMEMO:
                        message = twomemo.etree.parse_message(encrypted, str(jid))
                    else:
                        message = await oldmemo.etree.parse_message(encrypted, str(jid), str(self.client.account),
                                                                    manager)
                    with self._hooks.reading():
                        plaintext, info, _ = await manager.decrypt(message)
                except (OMEMOException, ValueError) as err:
                    raise Undecryptable(f"{type(err).__name__}: {err}", lasting=not _passing(err)) from err
                device = Device.from_information(await manager.settle(info))
                # A device not seen before made python-omemo fetch the sender's device lists.
                if (device.id, device.fingerprint) not in self._keys.get(jid, frozenset()):
                    await self._check_keys(jid)
        except (OmemoUnavailable, NotConnected) as err:
            raise Undecryptable(str(err), lasting=False) from None
        return plaintext, device

    async def encrypt_for_device(self, jid: JID, device_id: int, payload: bytes, namespace: str = OLDMEMO) -> Element:
        """``payload`` OMEMO-encrypted for the one device ``device_id`` of ``jid`` (not for our own
        other devices): the ``<encrypted/>`` element (in ``namespace``'s version) a verified
        call puts around its DTLS fingerprint. :class:`DeviceNotUsable` (or
        :class:`UntrustedKeys`) says why it cannot be done."""
        bare = jid.bare
        if namespace not in self.settings.namespaces:
            raise DeviceNotUsable(f"{namespace} is not one of the OMEMO versions this client speaks")

        def find(infos: Iterable[DeviceInformation]) -> DeviceInformation | None:
            return next((info for info in infos if info.device_id == device_id and namespace in info.namespaces
                         and dict(info.active).get(namespace)), None)  # fmt: skip

        async with self._exclusive() as manager:
            match = find(await manager.get_device_information(str(bare)))
            if match is None:
                await self._refresh(bare)
                await self._check_keys(bare)
                match = find(await manager.get_device_information(str(bare)))
            if match is None:
                raise DeviceNotUsable(f"{bare} has no {namespace} device {device_id}")
            try:
                message = await manager.encrypt_for_device(self._backends[namespace], match, payload)
            except Undecided as err:
                raise UntrustedKeys(err.devices) from None
            except OMEMOException as err:
                raise DeviceNotUsable(f"cannot encrypt for device {device_id} of {bare}: {err}") from err
        return encrypted_element(message)

    # Trust -------------------------------------------------------------------------------------

    async def devices(self, jid: str | JID) -> list[Device]:
        """The OMEMO devices of ``jid`` (our own account included), fetched again from its server."""
        bare = _bare(jid)
        async with self._exclusive() as manager:
            await self._refresh(bare)
            infos = await manager.get_device_information(str(bare))
            await self._check_keys(bare)
        return sorted((Device.from_information(info) for info in infos), key=lambda d: d.id)

    async def own_device(self) -> Device:
        """This client's device."""
        async with self._exclusive() as manager:
            own, _ = await manager.get_own_device_information()
        return Device.from_information(own)

    async def trust(self, jid: str | JID, key: str) -> Device:
        """Mark ``jid``'s key with fingerprint ``key`` verified: compared with the owner's."""
        return await self._decide(_bare(jid), key, Trust.VERIFIED)

    async def distrust(self, jid: str | JID, key: str) -> Device:
        """Never encrypt to ``jid``'s key with fingerprint ``key`` again, nor read what it sends."""
        return await self._decide(_bare(jid), key, Trust.DISTRUSTED)

    async def _decide(self, jid: JID, key: str, trust: Trust) -> Device:
        wanted = normalize_fingerprint(key)
        async with self._exclusive() as manager:
            infos = await manager.get_device_information(str(jid))
            if not any(fingerprint(info.identity_key) == wanted for info in infos) and not self._fresh(jid):
                await self._refresh(jid)
                infos = await manager.get_device_information(str(jid))
            match = next((info for info in infos if fingerprint(info.identity_key) == wanted), None)
            if match is None:
                raise UnknownFingerprint(f"{jid} has no OMEMO key with fingerprint {wanted}")
            await manager.set_trust(str(jid), match.identity_key, trust.name)
        return Device.from_information(match._replace(trust_level_name=trust.name))

    def key_changes(self) -> Subscription[KeysChanged]:
        """Changes of anyone's set of OMEMO keys (new devices, removed ones), from now on."""
        return self.changes.subscribe()
