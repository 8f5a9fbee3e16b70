"""python-omemo's XMPP hooks (XEP-0384) over PEP and the client's messages.

Device lists and bundles are published with access model open (and, for the OMEMO 2 bundles
node, ``pubsub#max_items`` = ``max``, which converse.js needs; a server that refuses it gets
the publication again without). A node that does not exist means no devices, or no bundle; any
other failure is raised as the python-omemo exception the hook documents, with the client's
error as its cause.

Empty OMEMO messages (completing a key exchange, moving a stale ratchet on) are sent in a task
of their own: the decryption that asked for one must not fail, and its plaintext not be lost,
because the link happens to be down at that moment. For the same reason our bundle, which
python-omemo publishes again when a message used up one of our pre keys, is owed rather than
failed if that publication fails while a message is read, and published at the next login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

import oldmemo.etree
import twomemo.etree
from omemo.bundle import Bundle
from omemo.message import Message
from omemo.session_manager import (
    BundleDeletionFailed,
    BundleDownloadFailed,
    BundleNotFound,
    BundleUploadFailed,
    DeviceListDownloadFailed,
    DeviceListUploadFailed,
)
from omemo.types import DeviceList

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads.pubsub import PubSubError
from ...xmpp.xml import element, qname
from ..errors import ClientError, XmppError
from .pep import Pep
from .protocol import (
    MAX_ITEMS,
    OLDMEMO,
    bundle_place,
    device_list_place,
    parse_bundle,
    parse_device_list,
    serialize_bundle,
    serialize_device_list,
)

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_MESSAGE = qname(ns.CLIENT, "message")
STORE_HINT = qname("urn:xmpp:hints", "store")


def encrypted_element(message: Message) -> Element:
    """The ``<encrypted/>`` element of an OMEMO message, in its version's namespace."""
    if message.namespace == OLDMEMO:
        return oldmemo.etree.serialize_message(message)
    return twomemo.etree.serialize_message(message)


class PepHooks:
    """Implements :class:`.manager.Hooks` for one client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.pep = Pep(client)
        self._sending: set[asyncio.Task[None]] = set()
        # Our bundles, by OMEMO version, whose publication failed while a message was read.
        self.owed: dict[str, Bundle] = {}
        self._reading = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """While a message is decrypted: python-omemo publishes our bundle without the pre key the
        message used up only after decrypting it, and a failure there would lose the message,
        which cannot be decrypted a second time. Such a bundle is owed instead (:meth:`pay`)."""
        self._reading = True
        try:
            yield
        finally:
            self._reading = False

    async def upload_bundle(self, bundle: Bundle) -> None:
        try:
            await self._publish_bundle(bundle)
        except ClientError as err:
            if not self._reading:
                raise BundleUploadFailed(f"publishing our {bundle.namespace} bundle failed: {err}") from err
            log.warning("publishing our %s bundle failed, it is published later: %s", bundle.namespace, err)
            self.owed[bundle.namespace] = bundle
        else:
            self.owed.pop(bundle.namespace, None)

    async def pay(self) -> None:
        """Publish the bundles owed (see :meth:`reading`); one that fails again stays owed."""
        for namespace, bundle in list(self.owed.items()):
            try:
                await self._publish_bundle(bundle)
            except ClientError as err:
                log.warning("publishing our %s bundle failed again: %s", namespace, err)
            else:
                if self.owed.get(namespace) is bundle:
                    del self.owed[namespace]

    async def _publish_bundle(self, bundle: Bundle) -> None:
        place = bundle_place(bundle.namespace, bundle.device_id)
        await self.pep.publish(place.node, place.item, serialize_bundle(bundle), place.options,
                               optional=frozenset({MAX_ITEMS}))

    async def download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> Bundle:
        place = bundle_place(namespace, device_id)
        what = f"the {namespace} bundle of {bare_jid}'s device {device_id}"
        try:
            # A legacy bundle node holds one item, whatever its id; OMEMO 2 names the device's item.
            if namespace == OLDMEMO:
                items = await self.pep.items(JID.parse(bare_jid), place.node, max_items=1)
            else:
                items = await self.pep.items(JID.parse(bare_jid), place.node, item_id=place.item)
        except (ClientError, PubSubError) as err:
            raise BundleDownloadFailed(f"fetching {what} failed: {err}") from err
        if not items or items[-1].payload is None:
            raise BundleNotFound(f"{what} is not published")
        try:
            return parse_bundle(namespace, items[-1].payload, bare_jid, device_id)
        except ValueError as err:
            raise BundleDownloadFailed(f"{what} is malformed: {err}") from err

    async def delete_bundle(self, namespace: str, device_id: int) -> None:
        place = bundle_place(namespace, device_id)
        try:
            if namespace == OLDMEMO:
                await self.pep.delete(place.node)
            else:
                await self.pep.retract(place.node, place.item)
        except XmppError as err:
            if err.condition != "item-not-found":
                raise BundleDeletionFailed(f"deleting our {namespace} bundle failed: {err}") from err
        except ClientError as err:
            raise BundleDeletionFailed(f"deleting our {namespace} bundle failed: {err}") from err

    async def upload_device_list(self, namespace: str, device_list: DeviceList) -> None:
        place = device_list_place(namespace)
        try:
            await self.pep.publish(place.node, place.item, serialize_device_list(namespace, device_list),
                                   place.options)
        except ClientError as err:
            raise DeviceListUploadFailed(f"publishing our {namespace} device list failed: {err}") from err

    async def download_device_list(self, namespace: str, bare_jid: str) -> DeviceList:
        place = device_list_place(namespace)
        try:
            items = await self.pep.items(JID.parse(bare_jid), place.node, max_items=1)
        except (ClientError, PubSubError) as err:
            raise DeviceListDownloadFailed(f"fetching the {namespace} device list of {bare_jid} failed: {err}") \
                from err
        if not items or items[-1].payload is None:
            return {}
        try:
            return parse_device_list(namespace, items[-1].payload)
        except ValueError as err:
            # As if there were none: a broken list must not stop messages to the other version's devices.
            log.warning("ignoring the malformed %s device list of %s: %s", namespace, bare_jid, err)
            return {}

    async def send_message(self, message: Message, bare_jid: str) -> None:
        el = element(_MESSAGE, {"type": "chat", "to": bare_jid, "id": secrets.token_hex(8)},
                     children=[encrypted_element(message), element(STORE_HINT)])
        task = asyncio.create_task(self._send(el))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, el: Element) -> None:
        try:
            await self.client.send_element(el)
        except ClientError as err:
            # A program that closes its client gives up what still waits to be sent: no warning.
            log.log(logging.INFO if self.client.closed else logging.WARNING,
                    "an empty OMEMO message to %s was not sent: %s", el.get("to"), err)

    async def close(self) -> None:
        """Stop sending what is still waiting for a link."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
