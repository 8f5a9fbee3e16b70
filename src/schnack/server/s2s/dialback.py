"""XEP-0220 Server Dialback (v1.1.1) with XEP-0185 keys: the elements and the key.

The originating server O asks the receiving server R to accept stanzas from its domain with
``<db:result from=O to=R>key</db:result>`` (§2.1.1). R asks the authoritative server of O,
on a connection of its own, whether the key is right: ``<db:verify from=R to=O id=stream
id>key</db:verify>`` (§2.1.3), answered with ``type='valid'`` or ``'invalid'`` (§2.1.4); R then
tells O with ``<db:result type='valid'/>`` (§2.1.5). The key is the XEP-0185 §3 HMAC-SHA256,
keyed with the SHA-256 of a secret that only O's nodes know, over the receiving domain, the
originating domain and the id of the stream R gave O, so no key can be replayed on another
stream or for another pair of domains.

The secret is ``[s2s] dialback_secret``, or one made once and kept in storage, where every
node of a cluster finds the same (any node may be asked to verify).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.xml import element, qname, sub
from ..storage import Storage

NS = "jabber:server:dialback"
FEATURE = "urn:xmpp:features:dialback"
RESULT = qname(NS, "result")
VERIFY = qname(NS, "verify")
# Where the generated secret is kept: the key-value store of no account.
_SECRET_STORE = "s2s-dialback-secret"


def dialback_key(secret: str, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' stream id), in hex."""
    key = hashlib.sha256(secret.encode()).hexdigest().encode()
    return hmac.new(key, f"{receiving} {originating} {stream_id}".encode(), hashlib.sha256).hexdigest()


def key_matches(secret: str, receiving: str, originating: str, stream_id: str, given: str) -> bool:
    """Whether ``given`` is the key for these names, compared in constant time."""
    expected = dialback_key(secret, receiving, originating, stream_id)
    return hmac.compare_digest(expected.encode(), given.strip().encode())


async def load_secret(configured: str, storage: Storage, host: str) -> str:
    """The configured secret, else the stored one, made and stored on first use; of nodes starting
    at once, the first to store one wins, so that every node verifies the keys any makes."""
    if configured:
        return configured
    return (await storage.kv.set_default(host, "", _SECRET_STORE, secrets.token_hex(32).encode())).decode()


def result(from_: str, to: str, key: str | None = None, type_: str | None = None) -> Element:
    """``<db:result/>``: the request (§2.1.1, with the key) or the answer (§2.1.5, with a type)."""
    attrs = {"from": from_, "to": to}
    if type_ is not None:
        attrs["type"] = type_
    return element(RESULT, attrs, text=key)


def verify(from_: str, to: str, stream_id: str, key: str | None = None, type_: str | None = None) -> Element:
    """``<db:verify/>``: the request (§2.1.3, with the key) or the answer (§2.1.4, with a type)."""
    attrs = {"from": from_, "to": to, "id": stream_id}
    if type_ is not None:
        attrs["type"] = type_
    return element(VERIFY, attrs, text=key)


# §2.4: what each dialback error condition says, as the initiating server reads it.
ERROR_MEANINGS = {
    "item-not-found": "it does not serve {remote}",
    "remote-connection-failed": "it could not connect to the authoritative server of {local}",
    "remote-server-not-found": "it could not find the authoritative server of {local}",
    "remote-server-timeout": "its connection to the authoritative server of {local} failed",
    "policy-violation": "it requires TLS before dialback",
    "not-authorized": "it requires a certificate or other proof for {local}",
    "forbidden": "the authoritative server of {local} did not confirm the key",
    "not-acceptable": "it could not establish that we are {local}",
}


def error_condition(el: Element) -> str:
    """§2.4: the stanza error condition in a dialback element of type 'error'.

    The text puts ``<error/>`` in jabber:server, the schema in the dialback namespace: either
    is read.
    """
    for child in el:
        if child.tag.rpartition("}")[2] == "error":
            for condition in child:
                name = condition.tag.rpartition("}")[2]
                if condition.tag.startswith(f"{{{ns.STANZA_ERRORS}}}") and name != "text":
                    return name
    return "undefined-condition"


def error_result(from_: str, to: str, condition: str) -> Element:
    """§2.4: ``<db:result type='error'/>`` with a stanza error condition."""
    el = result(from_, to, type_="error")
    error = sub(el, qname(NS, "error"), {"type": "cancel"})
    sub(error, qname(ns.STANZA_ERRORS, condition))
    return el
