"""OMEMO's two versions as they appear in PEP and in messages (XEP-0384).

- ``eu.siacs.conversations.axolotl`` (OMEMO 0.3, what the apps in use today speak): the device
  list is item "current" of ``eu.siacs.conversations.axolotl.devicelist``; each device's
  bundle is item "current" of a node of its own, ``eu.siacs.conversations.axolotl.bundles:<id>``;
  a message encrypts only its body.
- ``urn:xmpp:omemo:2`` (XEP-0384 0.8): the device list is item "current" of
  ``urn:xmpp:omemo:2:devices``; all bundles are items of ``urn:xmpp:omemo:2:bundles``, one per
  device, item id = device id, so that node must hold as many items as there are devices
  (``pubsub#max_items`` = ``max``); a message encrypts an XEP-0420 envelope (:mod:`.sce`).

All nodes are published with access model open: senders need not be contacts.
The XML of device lists, bundles and ``<encrypted/>`` is python-omemo's (``oldmemo.etree``,
``twomemo.etree``), which validates what it parses against the XEP's schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

import oldmemo
import oldmemo.etree
import twomemo
import twomemo.etree
from omemo.bundle import Bundle
from omemo.types import DeviceList

OLDMEMO: str = oldmemo.oldmemo.NAMESPACE
TWOMEMO: str = twomemo.twomemo.NAMESPACE
NAMESPACES = (OLDMEMO, TWOMEMO)

_OPEN = {"pubsub#access_model": "open"}
MAX_ITEMS = "pubsub#max_items"


@dataclass(frozen=True)
class Place:
    """Where a PEP item lives, and the node options it needs."""

    node: str
    item: str
    options: dict[str, str]


def device_list_node(namespace: str) -> str:
    return f"{OLDMEMO}.devicelist" if namespace == OLDMEMO else f"{TWOMEMO}:devices"


def device_list_place(namespace: str) -> Place:
    return Place(device_list_node(namespace), "current", _OPEN)


def bundle_place(namespace: str, device_id: int) -> Place:
    if namespace == OLDMEMO:
        return Place(f"{OLDMEMO}.bundles:{device_id}", "current", _OPEN)
    return Place(f"{TWOMEMO}:bundles", str(device_id), {**_OPEN, MAX_ITEMS: "max"})


def namespace_of_device_list_node(node: str) -> str | None:
    """The OMEMO version whose device list ``node`` is, if it is one."""
    return next((ns for ns in NAMESPACES if device_list_node(ns) == node), None)


def serialize_device_list(namespace: str, devices: DeviceList) -> Element:
    if namespace == OLDMEMO:
        return oldmemo.etree.serialize_device_list(devices)
    return twomemo.etree.serialize_device_list(devices)


def parse_device_list(namespace: str, el: Element) -> DeviceList:
    """The device ids (and OMEMO 2 labels) of a device list; raises ValueError (or xmlschema's
    validation error, a ValueError too) when ``el`` is not one."""
    if namespace == OLDMEMO:
        return oldmemo.etree.parse_device_list(el)
    return twomemo.etree.parse_device_list(el)


def serialize_bundle(bundle: Bundle) -> Element:
    if isinstance(bundle, oldmemo.oldmemo.BundleImpl):
        return oldmemo.etree.serialize_bundle(bundle)
    assert isinstance(bundle, twomemo.twomemo.BundleImpl)
    return twomemo.etree.serialize_bundle(bundle)


def parse_bundle(namespace: str, el: Element, jid: str, device_id: int) -> Bundle:
    if namespace == OLDMEMO:
        return oldmemo.etree.parse_bundle(el, jid, device_id)
    return twomemo.etree.parse_bundle(el, jid, device_id)
