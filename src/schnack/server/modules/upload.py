"""XEP-0363: HTTP File Upload (v1.1), served by the server's own HTTP listeners.

**The service (§3).** Each domain ``D`` gets the service ``upload.D``, listed in D's disco#items.
Its disco#info shows the identity store/file, the feature ``urn:xmpp:http:upload:0`` and a
form with ``max-file-size``: the limit, which is ``max_file_size`` or the quota if smaller.

**Slots (§4, §5).** An account of D asks ``upload.D`` for a slot with the file's name, size and
content type (parameters such as a charset kept, RFC 9110 §8.3.1; what is no media type is a
bad-request). A name that could be a path (separators, ``.``/``..``), holds control
characters or characters that reorder how it is shown (bidirectional embeddings, overrides and
isolates), or an empty file is a bad-request; a file over the limit gets not-acceptable with
``<file-too-large/>``; a file that would take the account over its ``quota`` (stored files not
yet past their age plus slots not yet used or expired) gets resource-constraint with
``<retry/>`` when space will free up. The slot is recorded before it is handed out, so quota
holds across a cluster's nodes. Its id is 128 random bits chosen here; the file system only
ever sees that id.

**HTTP (§6).** Under ``path`` (``/upload``) the HTTP app serves ``{path}/{D}/{id}/{name}``:

- ``PUT`` with ``?e={expiry}&s={signature}``: the signature is an HMAC-SHA256 over domain, id,
  name, size, content type and expiry. A forged or expired signature gets 403, a body whose
  Content-Length is over the limit 413, one that differs from the slot's size or a
  different Content-Type 400, no Content-Length 411, a Content-Encoding 415, a second upload
  to the slot 409, on whichever node of a cluster it comes. The body is streamed to a
  temporary file and renamed into place when complete; 201 comes once the file is on disk
  (or in S3), since its URL is shared then. A PUT that sends nothing for ``stall_timeout``
  seconds, or averages less than ``min_upload_rate``, gets 408.
  Whatever fails, no partial file stays behind. A PUT under way keeps its slot, and the slot's
  bytes in the quota, until it can have ended, though the URL expires meanwhile.
- ``GET``/``HEAD``: the file with its content type, one byte range if asked (206, or 416 with
  ``bytes */size``), served with ``nosniff`` and a sandboxing CSP so an uploaded page cannot
  script the domain; only pictures (not SVG), sound, video and plain text are shown inline,
  anything else comes with ``Content-Disposition: attachment`` and its name. The URL is a
  capability: whoever has it may read the file until it expires.
- ``OPTIONS``: the CORS preflight web clients send before a PUT (Authorization, Content-Type).
  Every answer allows any origin.

**Expiry and deletion.** Every ``sweep_interval`` seconds, files older than ``expire_after_days``
and slots whose PUT URL expired unused are dropped. A deleted account's files go with it
(``user-deleted``). A file the store fails to delete is logged and left to the next sweep,
which also drops what is left of deleted accounts; the other files go on being deleted.
``schnack admin uploads`` shows usage per account and purges by account or age through the
admin channel (commands ``uploads`` and ``uploads-purge``).

**Storage.** Records live in the map store: the domain's index (``D``, user ``""``, store
``upload``: id → record) and the account's own map (store ``upload``: id → size and state) for
its quota. A PUT claims its slot in the key-value store (``D``, user ``""``, store
``upload-claim/{id}``) in one step, so that of PUTs on several nodes one goes ahead; the claim
is dropped if no file came of it, else kept until the slot goes. The claim names its node and
when that node started: a node that dies in the middle of a PUT leaves its claim, and once the
cluster knows it dead (its heartbeat is gone for ``node_ttl``, or it came back as a new process)
the next PUT takes the claim over, in one step, so that the client's retry need not wait for
the slot to expire. While the cluster cannot say which nodes live (Redis is away), a claim
holds. A PUT whose claim was taken over meanwhile answers 409, not 201. A node cut off from the
cluster is declared dead while it lives: from half of ``node_ttl`` after its last heartbeat that
went through (the cluster bus's ``is_member``), and after it came back as another process, it
puts no file in place and records none under its claims, nor starts a PUT: it answers 503 with
``Retry-After``, and the retry goes ahead on a node that can. Blobs live in
a :class:`~schnack.server.blobs.BlobStore`: files under
``data_dir/uploads`` by default, or objects in an S3 bucket (``store = "s3"``) for a cluster.
The HMAC key is ``secret``, or one made at the first start and kept in storage so that every
node of a cluster signs alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit
from xml.etree.ElementTree import Element

from aiohttp import ClientError, HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.disco import INFO, ITEMS, DiscoInfo, DiscoItems, Identity
from ...xmpp.payloads.upload import (
    NS,
    REQUEST,
    FileTooLarge,
    Retry,
    Slot,
    SlotRequest,
    UploadError,
    misleading,
    service_form,
)
from ...xmpp.stanza import Stanza
from ..blobs import BlobError, BlobStore, LocalBlobStore, S3BlobStore
from ..cluster.claims import claimant_lives, node_claim, still_mine
from ..config import ConfigError, bounded, parse_address
from ..locks import AccountLocks
from ..module import Module

if TYPE_CHECKING:
    from ..app import Server
    from ..sessions import Session

log = logging.getLogger(__name__)

STORE = "upload"
SECRET_STORE = "upload-secret"
CLAIM_STORE = "upload-claim"
IDENTITY = Identity("store", "file", "HTTP File Upload")
_ID = re.compile(r"[A-Za-z0-9_-]{22}")
# RFC 9110 §8.3.1: type/subtype and parameters (token=token or token="quoted"); no control
# character, as the type is sent back in a header.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    rf'(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"))*'
)
_BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)")
_DEFAULT_TYPE = "application/octet-stream"
_MAX_NAME_BYTES = 255
# A slot that expired unused keeps its quota this much longer: its PUT may just have started.
_PUT_GRACE = 60.0
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, PUT, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}
_SERVED = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Accept-Ranges": "bytes",
    "Cache-Control": "private, max-age=31536000, immutable",
}


@dataclass(frozen=True)
class UploadOptions:
    """Limits, URLs and timeouts of the upload service."""

    max_file_size: int = bounded(104_857_600, min=1, help="largest file in bytes (announced in disco)")
    quota: int = bounded(1_073_741_824, min=0, help="bytes an account may keep stored; 0: no quota")
    expire_after_days: float = bounded(30.0, min=0, help="delete files older than this; 0 keeps them")
    slot_lifetime: float = bounded(300.0, min=1, max=86_400, help="seconds a slot's PUT URL stays valid")
    public_url: str = bounded("", help="base of the URLs clients get; default: the HTTPS (else HTTP) listener")
    path: str = bounded("/upload", help="path of the HTTP handlers")
    directory: Path | None = bounded(None, help="where files are kept; default: data_dir/uploads")
    stall_timeout: float = bounded(30.0, min=0.1, max=3600, help="a PUT silent this long gets 408")
    min_upload_rate: int = bounded(1024, min=1, help="bytes per second a PUT must average, else 408")
    sweep_interval: float = bounded(3600.0, min=1, help="seconds between expiry sweeps")
    secret: str = bounded("", help="HMAC key of PUT URLs; default: made once and kept in storage")
    store: str = bounded("local", choices=("local", "s3"), help="files on local disk, or in an S3 bucket")
    s3_endpoint: str = bounded("", help="S3 endpoint URL, e.g. https://s3.eu-central-1.amazonaws.com")
    s3_bucket: str = bounded("", help="the bucket (it must exist)")
    s3_region: str = bounded("us-east-1", help="the region requests are signed for")
    s3_access_key: str = bounded("")
    s3_secret_key: str = bounded("")
    s3_prefix: str = bounded("", help="prepended to every object key, e.g. uploads/")


@dataclass(frozen=True)
class Record:
    """A slot, and once its PUT completed, the file."""

    owner: str
    name: str
    size: int
    type: str | None
    expires: float
    stored: float | None = None

    def to_json(self) -> bytes:
        return json.dumps([self.owner, self.name, self.size, self.type, self.expires, self.stored]).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Record:
        owner, name, size, kind, expires, stored = json.loads(data)
        return cls(owner, name, size, kind, expires, stored)


class _Unsatisfiable(Exception):
    """A byte range that selects nothing of the file."""


class _ShortBody(Exception):
    """The client ended the body before Content-Length bytes."""


class _CutOff(Exception):
    """This node cannot tell that the cluster still takes it for alive (claims.still_mine): the
    file must not go into place under its claim, which another node may be taking over."""


def safe_name(name: str) -> bool:
    """Whether a file name is a plain name: no path, no character that hides what the name is
    (:func:`~schnack.xmpp.payloads.upload.misleading`), not too long."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or len(name.encode()) > _MAX_NAME_BYTES:
        return False
    return not any(misleading(c) for c in name)


def _media_type(value: str) -> str:
    """The media type without parameters, lower-cased (RFC 9110 §8.3.1: case-insensitive)."""
    return value.partition(";")[0].strip().lower()


class Upload(Module[UploadOptions]):
    """The ``upload.<domain>`` services and their HTTP handlers (XEP-0363)."""

    name = "upload"
    depends = ("disco",)
    Options = UploadOptions

    def __init__(self, server: Server, options: UploadOptions) -> None:
        super().__init__(server, options)
        url = options.public_url
        if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
            raise ConfigError("modules.upload.public_url", f"must be an http:// or https:// URL, got {url!r}")
        path = options.path
        if not re.fullmatch(r"(/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+", path):
            raise ConfigError("modules.upload.path", f"must be a path such as /upload, got {path!r}")
        self.services = {f"upload.{host}": host for host in server.config.domains}
        self._key = options.secret.encode()
        self._putting: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.blobs = _blob_store(server, options)

    @property
    def limit(self) -> int:
        """The largest file accepted: ``max_file_size``, or the quota if that is smaller."""
        quota = self.options.quota
        return min(self.options.max_file_size, quota) if quota else self.options.max_file_size

    def setup(self) -> None:
        self.locks = AccountLocks(self.server.cluster.bus, "upload")
        for domain in self.services:
            self.service(domain)
            self.iq(f"service/{domain}", INFO, get=self.info)
            self.iq(f"service/{domain}", ITEMS, get=self.items)
            self.iq(f"service/{domain}", REQUEST, get=self.slot)
        self.hook("disco-items/host", self.list_service)
        self.hook("user-deleted", self.forget)
        self.hook("admin/uploads", self.admin_usage)
        self.hook("admin/uploads-purge", self.admin_purge)
        self.server.http_app.router.add_route(
            "*", self.options.path + "/{domain}/{id}/{name}", self.http, expect_handler=self.expect
        )

    async def start(self) -> None:
        await self.blobs.start()
        if not self._key:
            self._key = await self._stored_key()
        self._sweeper = asyncio.create_task(self._sweep_periodically())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.blobs.close()

    async def _stored_key(self) -> bytes:
        """The key stored on first start; of nodes starting at once, the first to store one wins,
        so that every node accepts the URLs that any signs."""
        return await self.server.storage.kv.set_default(self.server.config.domains[0], "", SECRET_STORE,
                                                        secrets.token_bytes(32))

    # --- the XMPP service ------------------------------------------------------------------

    async def list_service(self, host: str) -> list[tuple[str, str]]:
        """XEP-0030 §4.1: the upload service among the domain's items."""
        return [(f"upload.{host}", "HTTP File Upload")]

    async def info(self, stanza: Stanza, _origin: Session | None) -> Element:
        """§3: identity, feature and the max-file-size form; the service has no nodes."""
        _only_the_service(stanza)
        if _node(stanza) is not None:
            raise StanzaError("item-not-found", "the upload service has no nodes")
        info = DiscoInfo(
            identities=(IDENTITY,),
            features=(ns.DISCO_INFO, ns.DISCO_ITEMS, NS),
            forms=(service_form(self.limit),),
        )
        return stanza.result(info.to_xml())

    async def items(self, stanza: Stanza, _origin: Session | None) -> Element:
        """XEP-0030 §4.1: no items."""
        _only_the_service(stanza)
        if _node(stanza) is not None:
            raise StanzaError("item-not-found", "the upload service has no nodes")
        return stanza.result(DiscoItems().to_xml())

    async def slot(self, stanza: Stanza, origin: Session | None) -> Element:
        """§4: hand out a slot, or §5: say why not."""
        assert stanza.to is not None and stanza.payload is not None
        domain = self.services[stanza.to.domain]
        _only_the_service(stanza)
        if origin is None or origin.host != domain:
            raise StanzaError("not-allowed", f"only accounts of {domain} may upload here")
        try:
            request = SlotRequest.from_xml(stanza.payload)
        except UploadError as err:
            raise StanzaError(err.condition, err.text) from None
        if not safe_name(request.filename):
            raise StanzaError("bad-request", "the file name must be a plain name, not a path")
        if request.size < 1:
            raise StanzaError("bad-request", "the file is empty")
        if request.size > self.limit:
            raise StanzaError(
                "not-acceptable", f"the file is larger than {self.limit} bytes",
                extra=FileTooLarge(self.limit).to_xml(),
            )  # fmt: skip
        kind = request.content_type
        if kind is not None and not _MEDIA_TYPE.fullmatch(kind):
            raise StanzaError("bad-request", f"not a media type: {kind!r}")
        now = time.time()
        record = Record(origin.username, request.filename, request.size, kind, now + self.options.slot_lifetime)
        slot_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        slot = self._slot(domain, slot_id, record)
        async with self.locks.hold(origin.jid.bare):
            if self.options.quota:
                await self._check_quota(origin, request.size, now)
            maps = self.server.storage.maps
            await maps.set(domain, origin.username, STORE, slot_id, record.to_json())
            await maps.set(domain, "", STORE, slot_id, record.to_json())
        return stanza.result(slot.to_xml())

    async def _check_quota(self, origin: Session, size: int, now: float) -> None:
        """§5: resource-constraint if the account's files and open slots leave no room."""
        entries = await self.server.storage.maps.items(origin.host, origin.username, STORE)
        max_age = self.options.expire_after_days * 86400
        used = 0
        frees: list[float] = []
        for data in entries.values():
            record = Record.from_json(data)
            # A file past its age is as good as gone, like a slot past its grace: the next sweep
            # deletes it, and a client that waited until <retry/> must not wait for the sweep too.
            if record.stored is not None and not max_age:
                used += record.size
            elif record.stored is not None and record.stored + max_age > now:
                used += record.size
                frees.append(record.stored + max_age)
            elif record.stored is None and record.expires + _PUT_GRACE > now:
                used += record.size
                frees.append(record.expires + _PUT_GRACE)
        if used + size <= self.options.quota:
            return
        # The stamp has whole seconds: rounded down, it would name a time before the space is free.
        retry = Retry(datetime.fromtimestamp(math.ceil(min(frees)), UTC)).to_xml() if frees else None
        raise StanzaError(
            "resource-constraint",
            f"quota reached: {used} of {self.options.quota} bytes in use, {size} more asked for",
            extra=retry,
        )

    def _slot(self, domain: str, slot_id: str, record: Record) -> Slot:
        base = f"{self.base_url(domain)}/{domain}/{slot_id}/{quote(record.name, safe='')}"
        expires = int(record.expires)
        signature = self.sign(domain, slot_id, record.name, record.size, record.type, expires)
        return Slot(put=f"{base}?e={expires}&s={signature}", get=base)

    def sign(self, domain: str, slot_id: str, name: str, size: int, kind: str | None, expires: int) -> str:
        """The HMAC-SHA256 of a PUT URL, binding everything the PUT must match."""
        message = "\0".join((domain, slot_id, name, str(size), kind or "", str(expires))).encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def base_url(self, domain: str) -> str:
        """Where clients reach the handlers: ``public_url``, else the HTTPS or HTTP listener on the domain."""
        if self.options.public_url:
            return self.options.public_url.rstrip("/")
        listen = self.server.config.listen
        for scheme in ("https", "http"):
            bound = self.server.bound.get(scheme)
            if bound:
                return f"{scheme}://{domain}:{bound[0][1]}{self.options.path}"
            addresses = getattr(listen, scheme)
            if addresses:
                port = parse_address(f"listen.{scheme}[0]", addresses[0])[1]
                return f"{scheme}://{domain}:{port}{self.options.path}"
        raise StanzaError("service-unavailable", "the server has no HTTP listener for uploads")

    # --- HTTP ------------------------------------------------------------------------------

    async def http(self, request: web.Request) -> web.StreamResponse:
        """§6: one handler for every method on ``{path}/{domain}/{id}/{name}``."""
        method = request.method
        if method == "OPTIONS":
            return web.Response(status=204, headers=_CORS)
        if method not in ("GET", "HEAD", "PUT"):
            return _status(405, "use GET, HEAD or PUT", Allow="GET, HEAD, PUT, OPTIONS")
        domain, slot_id, name = (request.match_info[k] for k in ("domain", "id", "name"))
        if method == "PUT":
            checked = await self._check_put(request)
            if isinstance(checked, web.Response):
                return checked
            return await self._put(request, domain, slot_id, checked)
        record = await self._record(domain, slot_id)
        if record is None or record.stored is None or record.name != name:
            return _status(404, "no such file")
        return await self._get(request, domain, slot_id, record)

    async def expect(self, request: web.Request) -> web.Response | None:
        """RFC 9110 §10.1.1: check a PUT before its client sends the body, not after."""
        if request.headers.get("Expect", "").lower() != "100-continue":
            return _status(417, "only 100-continue is understood")
        if request.method == "PUT":
            checked = await self._check_put(request)
            if isinstance(checked, web.Response):
                return checked
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            # The interim answer is not part of the response that follows.
            request.writer.output_size = 0
        return None

    async def _record(self, domain: str, slot_id: str) -> Record | None:
        if domain not in self.server.hosts or not _ID.fullmatch(slot_id):
            return None
        data = await self.server.storage.maps.get(domain, "", STORE, slot_id)
        return Record.from_json(data) if data is not None else None

    async def _check_put(self, request: web.Request) -> Record | web.Response:
        """§6: the slot's record if this PUT may go ahead, else the answer it gets."""
        domain, slot_id, name = (request.match_info[k] for k in ("domain", "id", "name"))
        try:
            expires = int(request.query.get("e", ""))
        except ValueError:
            return _status(403, "the URL is not signed")
        signature = request.query.get("s", "")
        record = await self._record(domain, slot_id)
        if record is None:
            return _status(403, "no such slot")
        expected = self.sign(domain, slot_id, name, record.size, record.type, expires)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return _status(403, "the signature does not match")
        if expires < time.time():
            return _status(403, "the upload URL has expired")
        if record.stored is not None or slot_id in self._putting:
            return _status(409, "this slot was used already")
        if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
            # The body would be unpacked on the way in: the file stored would not be the bytes sent,
            # nor of the slot's size (RFC 9110 §15.5.16).
            return _status(415, "send the file as it is, with no Content-Encoding", **{"Accept-Encoding": "identity"})
        length = request.content_length
        if length is None:
            return _status(411, "send a Content-Length")
        if length > self.limit:
            return _status(413, f"the file is larger than {self.limit} bytes")
        if length != record.size:
            return _status(400, f"Content-Length {length} is not the size of the slot ({record.size})")
        if record.type is not None and _media_type(request.headers.get("Content-Type", "")) != _media_type(record.type):
            return _status(400, f"Content-Type is not the type of the slot ({record.type})")
        return record

    async def _put(self, request: web.Request, domain: str, slot_id: str, record: Record) -> web.StreamResponse:
        # Checked again with no await before the add: two PUTs may have passed _check_put together.
        if slot_id in self._putting:
            return _status(409, "this slot is being used")
        self._putting.add(slot_id)
        try:
            if not self.server.cluster.bus.is_member():
                return self._cut_off(domain, slot_id)
            mine = await self._claim(domain, slot_id)
            if mine is None:
                return _status(409, "this slot is being used")
            stored = False
            try:
                held = await self._hold(domain, slot_id, record)
                if held is None:
                    return _status(410, "the slot was withdrawn")
                response = await self._store(request, domain, slot_id, held, mine)
                stored = response.status == 201
                if not stored and still_mine(self.server.cluster.bus, mine) and await self._holds(domain, slot_id, mine):
                    # No file came of it: the slot holds the quota only as long as its URL again.
                    await self._rewrite(domain, slot_id, record)
                return response
            finally:
                if not stored:
                    await self._unclaim(domain, slot_id, mine)
        finally:
            self._putting.discard(slot_id)

    async def _claim(self, domain: str, slot_id: str) -> bytes | None:
        """Take the slot for this PUT, for good once it stores the file (§6: a slot is for one
        file); the claim, or None if another PUT has it. The claim is made in storage, in one
        step: PUTs of one slot on several nodes of a cluster at once, each past its own checks,
        would otherwise all store, each replacing the file under the URL its sender may have
        shared already. The claim of a dead node's PUT is taken over, in one step too."""
        bus = self.server.cluster.bus
        mine = node_claim(bus)
        kv, store = self.server.storage.kv, _claim_store(slot_id)
        held = await kv.set_default(domain, "", store, mine)
        if held == mine:
            return mine
        if await claimant_lives(bus, held) or not await kv.replace(domain, "", store, held, mine):
            return None
        log.info("upload %s/%s: took over the claim of a PUT whose node is dead", domain, slot_id)
        record = await self._record(domain, slot_id)
        if record is None or record.stored is not None:
            # The dead node stored the file before it died (or the slot went): the claim stays
            # with the file, as any stored file's does.
            return None
        return mine

    async def _holds(self, domain: str, slot_id: str, mine: bytes) -> bool:
        """Whether this PUT's claim is still the slot's: not taken over by a node that took this
        one for dead."""
        return await self.server.storage.kv.get(domain, "", _claim_store(slot_id)) == mine

    async def _unclaim(self, domain: str, slot_id: str, mine: bytes) -> None:
        """Free the slot for another PUT: this one stored no file. Only this PUT's own claim goes:
        another node may have taken it over, as that of a node it took for dead."""
        await self.server.storage.kv.delete_if(domain, "", _claim_store(slot_id), mine)

    async def _hold(self, domain: str, slot_id: str, record: Record) -> Record | None:
        """The slot kept until this PUT can have ended, None if it was withdrawn.

        Past the slot's expiry, the quota (§5) and the sweep of every node would take it for
        unused: slow uploads started one after the other would store many times the quota.
        """
        ends = time.time() + self.options.stall_timeout + record.size / self.options.min_upload_rate
        held = replace(record, expires=max(record.expires, ends))
        return held if await self._rewrite(domain, slot_id, held) else None

    async def _rewrite(self, domain: str, slot_id: str, record: Record) -> bool:
        """Record the slot anew, unless the account went or purged it meanwhile (False)."""
        maps = self.server.storage.maps
        async with self.locks.hold(JID(record.owner, domain)):
            if await maps.get(domain, record.owner, STORE, slot_id) is None:
                return False
            await maps.set(domain, record.owner, STORE, slot_id, record.to_json())
            await maps.set(domain, "", STORE, slot_id, record.to_json())
        return True

    async def _store(self, request: web.Request, domain: str, slot_id: str, record: Record,
                     mine: bytes) -> web.StreamResponse:
        try:
            await self.blobs.write(f"{domain}/{slot_id}", self._body(request, record.size, mine), record.size)
        except _CutOff:
            return self._cut_off(domain, slot_id)
        except TimeoutError:
            log.info("upload %s/%s stalled; partial file removed", domain, slot_id)
            return _status(408, "the upload was too slow")
        except (_ShortBody, ConnectionError, HttpProcessingError):
            return _status(400, f"the body ended before {record.size} bytes")
        except (OSError, BlobError, ClientError) as err:
            # The store failed, not the client: say so in one line, and keep serving.
            log.error("storing upload %s/%s failed: %s", domain, slot_id, err)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                return _status(507, "the server is out of space")
            return _status(500, "the file could not be stored")
        if not await self._holds(domain, slot_id, mine):
            # This node was taken for dead (cut off from the cluster too long) and another PUT
            # took the slot: that one tells its client of the file, this one must not.
            log.warning("upload %s/%s: the claim of this PUT was taken over while it stored", domain, slot_id)
            return _status(409, "this slot was taken over by another upload")
        if not still_mine(self.server.cluster.bus, mine):
            return self._cut_off(domain, slot_id)
        stored = replace(record, stored=time.time())
        if not await self._rewrite(domain, slot_id, stored):
            # The account went, or purged the slot, while the body was on its way.
            await self._remove(domain, slot_id, stored)
            return _status(410, "the slot was withdrawn")
        return web.Response(status=201, headers=_CORS)

    def _cut_off(self, domain: str, slot_id: str) -> web.Response:
        """503 to a PUT this node must not store: it cannot tell whether the cluster still takes it
        for alive. The client's retry goes ahead on a node that can, or on this one once it can."""
        log.warning("upload %s/%s: refused, this node cannot tell whether the cluster still takes it for alive",
                    domain, slot_id)
        wait = max(1, math.ceil(self.server.config.cluster.node_ttl))
        return _status(503, "this server is cut off from its cluster: try again shortly", **{"Retry-After": str(wait)})

    async def _body(self, request: web.Request, size: int, mine: bytes) -> AsyncIterator[bytes]:
        """The body in chunks, with the stall timeout and the minimum average rate applied; it ends
        only while this PUT's claim is still this node's to write under (:class:`_CutOff`), so that
        the blob store puts no file in place otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.stall_timeout + size / self.options.min_upload_rate
        got = 0
        while got < size:
            wait = min(self.options.stall_timeout, deadline - loop.time())
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                chunk = await request.content.readany()
            if not chunk:
                raise _ShortBody
            got += len(chunk)
            yield chunk
        if not still_mine(self.server.cluster.bus, mine):
            raise _CutOff

    async def _get(self, request: web.Request, domain: str, slot_id: str, record: Record) -> web.StreamResponse:
        size = record.size
        if await self.blobs.size(f"{domain}/{slot_id}") != size:
            log.warning("uploaded file %s/%s is missing from the blob store", domain, slot_id)
            return _status(404, "no such file")
        kind = record.type or _DEFAULT_TYPE
        headers = {**_SERVED, "Access-Control-Allow-Origin": "*", "ETag": f'"{slot_id}"', "Content-Type": kind,
                   "Content-Disposition": _disposition(kind, record.name)}
        try:
            span = _range(request.headers.get("Range"), size)
        except _Unsatisfiable:
            return _status(416, "the range is outside the file", **{"Content-Range": f"bytes */{size}"})
        response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
        start, length = (0, size) if span is None else span
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
        response.content_length = length
        await response.prepare(request)
        if request.method == "GET":
            try:
                async with contextlib.aclosing(self.blobs.read(f"{domain}/{slot_id}", start, length)) as chunks:
                    async for chunk in chunks:
                        try:
                            await response.write(chunk)
                        except ConnectionError:
                            # The reader went away, as browsers do when a video is skipped through.
                            log.debug("the reader of upload %s/%s left before its end", domain, slot_id)
                            return response
            except (OSError, BlobError, ClientError) as err:
                # The status is sent already: cutting the connection short tells the client.
                log.error("reading upload %s/%s failed: %s", domain, slot_id, err)
                if request.transport is not None:
                    request.transport.close()
                return response
        await response.write_eof()
        return response

    # --- expiry, purge, accounts -----------------------------------------------------------

    async def _remove(self, domain: str, slot_id: str, record: Record) -> None:
        await self.blobs.delete(f"{domain}/{slot_id}")
        maps = self.server.storage.maps
        await maps.set(domain, "", STORE, slot_id, None)
        await maps.set(domain, record.owner, STORE, slot_id, None)
        await self.server.storage.kv.delete(domain, "", _claim_store(slot_id))

    async def _sweep_periodically(self) -> None:
        # The first sweep right at start: a server restarted more often than the interval
        # would otherwise never expire anything.
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("expiring uploaded files failed")
            await asyncio.sleep(self.options.sweep_interval)

    async def sweep(self, now: float | None = None) -> int:
        """Drop files older than ``expire_after_days``, slots that expired unused, and what is left
        of deleted accounts; how many files went."""
        now = time.time() if now is None else now
        max_age = self.options.expire_after_days * 86400
        files = 0
        for domain in self.server.config.domains:
            # Whether each owner still has an account: a deletion that failed part-way left some.
            owners: dict[str, bool] = {}
            for slot_id, data in (await self.server.storage.maps.items(domain, "", STORE)).items():
                record = Record.from_json(data)
                if record.owner not in owners:
                    owners[record.owner] = await self.server.storage.accounts.get(domain, record.owner) is not None
                gone = not owners[record.owner]
                if record.stored is None:
                    due = (gone or record.expires + _PUT_GRACE < now) and slot_id not in self._putting
                else:
                    due = gone or (bool(max_age) and record.stored < now - max_age)
                if due and await self._drop(domain, slot_id, record) and record.stored is not None:
                    files += 1
        if files:
            log.info("deleted %d uploaded files older than %g days or of deleted accounts", files,
                     self.options.expire_after_days)
        return files

    async def _drop(self, domain: str, slot_id: str, record: Record) -> bool:
        """Remove a file or slot; one the store fails to delete stays for the next sweep."""
        try:
            await self._remove(domain, slot_id, record)
        except (OSError, BlobError, ClientError) as err:
            log.error("cannot delete uploaded file %s/%s (left for the next sweep): %s", domain, slot_id, err)
            return False
        return True

    async def purge(self, *, owner: JID | None = None, older_than: float | None = None) -> tuple[int, int]:
        """Delete the files of ``owner`` and/or those stored before ``older_than``; (files, bytes)."""
        files = size = 0
        for domain in self.server.config.domains:
            if owner is not None and owner.domain != domain:
                continue
            user = owner.local if owner is not None else ""
            assert user is not None
            for slot_id, data in (await self.server.storage.maps.items(domain, user, STORE)).items():
                record = Record.from_json(data)
                if older_than is not None and (record.stored is None or record.stored >= older_than):
                    continue
                await self._remove(domain, slot_id, record)
                if record.stored is not None:
                    files += 1
                    size += record.size
        return files, size

    async def usage(self, owner: JID | None = None) -> list[dict[str, Any]]:
        """Stored files and bytes per account (of one account if given), largest first."""
        totals: dict[str, list[int]] = {}
        for domain in self.server.config.domains:
            if owner is not None and owner.domain != domain:
                continue
            user = owner.local if owner is not None else ""
            assert user is not None
            for data in (await self.server.storage.maps.items(domain, user, STORE)).values():
                record = Record.from_json(data)
                if record.stored is not None:
                    entry = totals.setdefault(f"{record.owner}@{domain}", [0, 0])
                    entry[0] += 1
                    entry[1] += record.size
        if owner is not None and not totals:
            totals[str(owner)] = [0, 0]
        rows = [{"jid": jid, "files": files, "bytes": size} for jid, (files, size) in totals.items()]
        return sorted(rows, key=lambda row: (-row["bytes"], row["jid"]))

    async def forget(self, host: str, username: str) -> None:
        """A deleted account's files go too (its own map went with the account)."""
        if host not in self.server.hosts:
            return
        for slot_id, data in (await self.server.storage.maps.items(host, "", STORE)).items():
            record = Record.from_json(data)
            if record.owner == username:
                await self._drop(host, slot_id, record)

    def _account(self, request: dict[str, Any]) -> JID | None:
        text = request.get("jid")
        if text is None:
            return None
        try:
            jid = JID.parse(str(text))
        except JIDError as err:
            raise ValueError(f"invalid JID: {err}") from None
        if jid.local is None or jid.resource is not None or jid.domain not in self.server.hosts:
            raise ValueError(f"{text!r} is not an account of this server")
        return jid

    async def admin_usage(self, request: dict[str, Any]) -> dict[str, Any]:
        """Admin command ``uploads``: usage per account, optionally of ``jid`` only."""
        try:
            owner = self._account(request)
        except ValueError as err:
            return {"ok": False, "error": str(err)}
        return {"ok": True, "usage": await self.usage(owner)}

    async def admin_purge(self, request: dict[str, Any]) -> dict[str, Any]:
        """Admin command ``uploads-purge``: the files of ``jid``, or older than ``older_than_days``."""
        try:
            owner = self._account(request)
        except ValueError as err:
            return {"ok": False, "error": str(err)}
        days = request.get("older_than_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int | float)
                                 or not 0 <= days < float("inf")):
            return {"ok": False, "error": f"older_than_days must be a number of days, at least 0, got {days!r}"}
        if owner is None and days is None:
            return {"ok": False, "error": "name an account or an age"}
        older_than = time.time() - days * 86400 if days is not None else None
        files, size = await self.purge(owner=owner, older_than=older_than)
        return {"ok": True, "files": files, "bytes": size}


def _status(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={**headers, "Access-Control-Allow-Origin": "*"})


def _disposition(kind: str, name: str) -> str:
    """RFC 6266 §4: pictures, sound, video and plain text show in the browser; anything else
    (a page, a script, an SVG, a PDF) is saved, so that it never runs on the server's origin."""
    main, _, sub = _media_type(kind).partition("/")
    shown = (main in ("audio", "video") or (main == "image" and not sub.endswith("+xml"))
             or (main, sub) == ("text", "plain"))
    # RFC 8187 §3.2: the name percent-encoded as UTF-8.
    return f"{'inline' if shown else 'attachment'}; filename*=UTF-8''{quote(name, safe='')}"


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """RFC 9110 §14.2: (start, length) of a single byte range, or None for the whole file.

    Raises _Unsatisfiable for a range that starts past the end (§15.5.17: 416). A header that is not one well-formed byte range is ignored, as §14.2 allows.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _BYTE_RANGE.fullmatch(spec.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0:
            raise _Unsatisfiable
        start = max(0, size - suffix)
        return start, size - start
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    end = min(int(last), size - 1) if last != "" else size - 1
    return start, end - start + 1


def _blob_store(server: Server, options: UploadOptions) -> BlobStore:
    """The store the options name, checked."""
    if options.store == "s3":
        for key in ("s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key"):
            if not getattr(options, key):
                raise ConfigError(f"modules.upload.{key}", 'must be set when store = "s3"')
        if urlsplit(options.s3_endpoint).scheme not in ("http", "https") or not urlsplit(options.s3_endpoint).hostname:
            raise ConfigError("modules.upload.s3_endpoint", f"must be an http(s):// URL, got {options.s3_endpoint!r}")
        return S3BlobStore(options.s3_endpoint, options.s3_bucket, options.s3_access_key, options.s3_secret_key,
                           region=options.s3_region, prefix=options.s3_prefix)
    directory = options.directory
    if directory is not None and not directory.is_absolute():
        source = server.config.source
        directory = (source.parent.resolve() if source is not None else Path.cwd()) / directory
    return LocalBlobStore(directory or server.config.data_dir / "uploads")


def _claim_store(slot_id: str) -> str:
    """The key-value store that holds the claim of the slot's one PUT."""
    return f"{CLAIM_STORE}/{slot_id}"


def _only_the_service(stanza: Stanza) -> None:
    """The service is its domain alone; RFC 6120 §8.3.3.19 for any other address there."""
    assert stanza.to is not None
    if stanza.to.local is not None or stanza.to.resource is not None:
        raise StanzaError("service-unavailable")


def _node(stanza: Stanza) -> str | None:
    payload = stanza.payload
    assert payload is not None
    return payload.get("node")
