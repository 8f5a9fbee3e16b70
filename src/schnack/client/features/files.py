"""XEP-0363: HTTP File Upload (v1.1) on the client side, with XEP-0454: OMEMO Media Sharing (v0.1.0).

**Sending.** The upload service is found as apps find it (XEP-0363 §3): disco#items of the
account's domain, then disco#info of each item until one has ``urn:xmpp:http:upload:0``; its
form gives ``max-file-size``. A file is encrypted with a fresh 32-byte key and 12-byte IV in
AES-256-GCM while it is PUT (XEP-0454 §3), read and sent in chunks so that a large file is
never held in memory; the 16-byte tag goes after the ciphertext. The slot's file name keeps only
the extension (``.ogg`` is what apps take for audio); the real name would leak to the server.
The ``aesgcm://`` URL, whose fragment is the IV and key in hex, is the whole body of an OMEMO
message (§3: nothing else, and no XEP-0066 element, which would be readable by the servers).
Plaintext only when asked (``encrypted=False``): the file goes up as it is, and its ``https``
URL is the body plus an XEP-0066 ``<x><url/></x>``, which is how apps tell an uploaded file
from a link (XEP-0363 §2).

**Receiving.** A message whose whole text is one ``aesgcm://`` or ``https://`` URL names a
file (:func:`attachment`); the fragment's IV has 12 bytes, or the 16 that older apps use (88
or 96 hex digits with the key). :meth:`Files.download` fetches it streaming, refuses more than a
limit, decrypts on the way, checks the tag and only then moves it into the downloads folder
under a name of its own: the URL's last segment with anything that could be a path, or make
the name look like another, taken out; numbered if taken. A failed download leaves no file behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import ssl
import tempfile
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from mimetypes import guess_type
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit
from xml.etree.ElementTree import Element

import aiohttp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import AEADEncryptionContext, Cipher, algorithms, modes

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads.disco import INFO, ITEMS, DiscoInfo, DiscoItems
from ...xmpp.payloads.upload import NS, SLOT, Slot, SlotRequest, UploadError, max_file_size, misleading
from ...xmpp.xml import element, qname, sub
from ..errors import ClientError, XmppError
from ..omemo.errors import NoOmemoDevices
from ..sizes import data_size
from ..tls import context

if TYPE_CHECKING:
    from ..client import Client
    from .messages import Message, Messages

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as a transfer goes on."""

OOB_NS = "jabber:x:oob"
_OOB = qname(OOB_NS, "x")
_OOB_URL = qname(OOB_NS, "url")
_BODY = qname(ns.CLIENT, "body")
_IQ = qname(ns.CLIENT, "iq")
CHUNK = 256 * 1024
TAG_SIZE = 16
KEY_SIZE = 32
IV_SIZE = 12
# Downloads larger than this are refused unless the caller allows more.
DEFAULT_MAX_DOWNLOAD = 512 * 1024 * 1024
# The fragment (XEP-0454 §3): a 12-byte IV and the key; older apps put a 16-byte IV there, and
# their files must open too (Gajim reads both for the same reason).
_URL = re.compile(r"(aesgcm|https)://[^\s#]+(#[0-9a-fA-F]{88}(?:[0-9a-fA-F]{8})?)?")
_UNSAFE = re.compile(r'[/\\:*?"<>|]')


class FileError(ClientError):
    """A file that could not be sent or fetched, with the reason."""


class NoUploadService(FileError):
    """The account's server offers no HTTP upload service (XEP-0363 §3)."""


class FileTooBig(FileError):
    """The file is larger than the upload service takes (XEP-0363 §5)."""


class DownloadFailed(FileError):
    """The file could not be fetched: an HTTP error, a broken link, or more than the limit."""


class TagMismatch(DownloadFailed):
    """The downloaded file is not what the sender encrypted: its AES-GCM tag does not verify."""


@dataclass(frozen=True)
class UploadService:
    """Where files go (the service's JID) and the largest it takes (None: no limit stated)."""

    jid: JID
    max_file_size: int | None


@dataclass(frozen=True)
class Attachment:
    """A file a message points to: ``url`` as shared, ``https`` where to fetch it, and the key
    and IV if it is encrypted (XEP-0454); ``name`` is the file name the URL suggests."""

    url: str
    https: str
    key: bytes | None = None
    iv: bytes | None = None

    @property
    def encrypted(self) -> bool:
        return self.key is not None

    @property
    def name(self) -> str:
        return safe_name(unquote(urlsplit(self.https).path.rsplit("/", 1)[-1]))

    @property
    def content_type(self) -> str | None:
        return guess_type(self.name)[0]


def attachment(text: str | None) -> Attachment | None:
    """The file a message body names: the body must be one URL and nothing else (XEP-0454 §3
    allows a second line with a thumbnail, which is ignored)."""
    if not text:
        return None
    first = text.strip().split("\n", 1)[0].strip()
    match = _URL.fullmatch(first)
    if match is None:
        return None
    scheme, fragment = match.group(1), match.group(2)
    if scheme == "https":
        return None if fragment else Attachment(first, first)
    if fragment is None:
        return None
    secret = bytes.fromhex(fragment[1:])
    iv_size = len(secret) - KEY_SIZE
    https = "https://" + first[len("aesgcm://"):-len(fragment)]
    return Attachment(first, https, key=secret[iv_size:], iv=secret[:iv_size])


def attachment_of(message: Message) -> Attachment | None:
    """The file a message carries: an ``aesgcm://`` URL, or an ``https://`` one that the sender
    marked as a file with XEP-0066 (a link someone pasted is not fetched)."""
    found = attachment(message.text)
    if found is None or found.encrypted:
        return found
    return found if message.element.findtext(f"{_OOB}/{_OOB_URL}") == found.url else None


def safe_name(name: str) -> str:
    """A file name that cannot leave the folder it is written to, nor hide in it, nor pass for
    another (a control or reordering character is replaced, as the upload service refuses it)."""
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if misleading(c) else c for c in _UNSAFE.sub("_", name)).strip().lstrip(".")
    if not name:
        return "file"
    encoded = name.encode()
    if len(encoded) > 200:
        stem, dot, suffix = name.rpartition(".")
        suffix = suffix[:16] if dot else ""
        stem = (stem if dot else name).encode()[:180].decode(errors="ignore")
        name = f"{stem}.{suffix}" if suffix else stem
    return name


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per byte: 8 for random bytes, much less for text or audio."""
    if not data:
        return 0.0
    counts = Counter(data)
    return -sum(c / len(data) * math.log2(c / len(data)) for c in counts.values())


class Files:
    """Sends files through the account's upload service and fetches the ones that arrive."""

    def __init__(self, client: Client, messages: Messages, verify: bool | str | Path) -> None:
        self.client = client
        self._verify = verify
        self._service: UploadService | None = None
        # https URLs of plaintext uploads about to be sent, to be marked with XEP-0066.
        self._plain_urls: set[str] = set()
        messages.on_send(self._decorate)

    def _ssl(self) -> ssl.SSLContext | bool:
        return False if self._verify is False else context(self._verify, direct_tls=False)

    async def service(self) -> UploadService:
        """XEP-0363 §3: the upload service of the account's domain (looked up once)."""
        if self._service is not None:
            return self._service
        domain = self.client.account.domain
        reply = await self.client.iq(_query(domain, ITEMS))
        query = reply.find(ITEMS)
        candidates = [domain, *(item.jid for item in DiscoItems.from_xml(query).items)] if query is not None \
            else [domain]
        for jid in candidates:
            try:
                answer = await self.client.iq(_query(jid, INFO))
            except XmppError:
                continue
            info_el = answer.find(INFO)
            if info_el is None:
                continue
            info = DiscoInfo.from_xml(info_el)
            if NS in info.features:
                limits = [size for form in info.forms if (size := max_file_size(form)) is not None]
                self._service = UploadService(JID.parse(jid), limits[0] if limits else None)
                return self._service
        raise NoUploadService(f"{domain} offers no file upload service")

    async def upload(self, path: Path, *, encrypted: bool = True, content_type: str | None = None,
                     progress: Progress | None = None) -> str:
        """Upload a file; the URL to share is returned: ``aesgcm://`` (encrypted) or ``https://``."""
        size = _readable_size(path)
        service = await self.service()
        upload_size = size + TAG_SIZE if encrypted else size
        if service.max_file_size is not None and upload_size > service.max_file_size:
            raise FileTooBig(f"{path.name} is {data_size(size)}; {service.jid} takes at most "
                             f"{data_size(service.max_file_size)}")
        kind = content_type or guess_type(path.name)[0] or "application/octet-stream"
        # The server sees the extension only: it tells apps the kind of file, not its name.
        name = secrets.token_hex(12) + path.suffix.lower()[:16] if encrypted else path.name
        slot = await self._slot(service, SlotRequest(name, upload_size, kind))
        if encrypted and not slot.get.startswith("https://"):
            # XEP-0454 §3: only an https URL becomes an aesgcm one; told before any byte goes up.
            raise FileError(f"the upload service hands out a non-https URL ({slot.get}); not sharing a key over it")
        key, iv = (os.urandom(KEY_SIZE), os.urandom(IV_SIZE)) if encrypted else (None, None)
        headers = dict(slot.headers)
        headers.update({"Content-Type": kind, "Content-Length": str(upload_size)})
        encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor() if key is not None and iv is not None \
            else None
        body = _chunks(path, size, encryptor, progress, upload_size)
        try:
            async with aiohttp.ClientSession() as http, http.put(
                slot.put, data=body, headers=headers, ssl=self._ssl(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.client.timeout,
                                              sock_read=self.client.timeout),
            ) as response:
                if response.status not in (200, 201):
                    raise FileError(f"the upload was refused: HTTP {response.status} {response.reason}")
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as err:
            # aiohttp reports a failing body as its own connection error, caused by the real one.
            if isinstance(err.__cause__, FileError):
                raise err.__cause__ from None
            raise FileError(f"the upload failed: {err or type(err).__name__}") from None
        if key is None or iv is None:
            return slot.get
        return "aesgcm://" + slot.get[len("https://"):] + "#" + (iv + key).hex()

    async def _slot(self, service: UploadService, request: SlotRequest) -> Slot:
        iq = element(_IQ, {"type": "get", "to": str(service.jid)})
        iq.append(request.to_xml())
        try:
            reply = await self.client.iq(iq)
        except XmppError as err:
            # §5: not-acceptable is a file over the limit, resource-constraint a full quota.
            if err.condition == "not-acceptable":
                raise FileTooBig(f"the file is too large for {service.jid}"
                                 + (f": {err.text}" if err.text else "")) from None
            if err.condition == "resource-constraint":
                raise FileTooBig(f"no room left in this account's uploads on {service.jid}"
                                 + (f": {err.text}" if err.text else "")) from None
            raise FileError(f"{service.jid} refused the upload: {err}") from None
        slot_el = reply.find(SLOT)
        if slot_el is None:
            raise FileError(f"{service.jid} answered without a slot")
        try:
            return Slot.from_xml(slot_el)
        except UploadError as err:
            raise FileError(f"{service.jid} answered with a broken slot: {err}") from None

    async def send_file(self, to: JID, path: Path, *, encrypted: bool = True, content_type: str | None = None,
                        progress: Progress | None = None) -> str:
        """Upload ``path`` and send its URL to ``to``; the message's id is returned.

        Whether the recipient has OMEMO devices is checked before the upload, so that no file is
        left on the server for a message that cannot go.
        """
        if encrypted and not any(device.active for device in await self.client.omemo.devices(to)):
            raise NoOmemoDevices(to)
        url = await self.upload(path, encrypted=encrypted, content_type=content_type, progress=progress)
        if not encrypted:
            self._plain_urls.add(url)
        try:
            return await self.client.send(to, url, encrypted=encrypted)
        finally:
            self._plain_urls.discard(url)

    def _decorate(self, el: Element, _to: JID) -> None:
        """XEP-0066 for a plaintext upload: its body repeated as the out-of-band URL."""
        body = el.findtext(_BODY)
        if body is not None and body in self._plain_urls:
            oob = sub(el, _OOB)
            sub(oob, _OOB_URL, text=body)

    async def download(self, source: Message | Attachment | str, dest: Path, *, progress: Progress | None = None,
                       max_size: int = DEFAULT_MAX_DOWNLOAD) -> Path:
        """Fetch the file a message points to into the folder ``dest``; its path is returned."""
        from .messages import Message

        if isinstance(source, Message):
            found = attachment_of(source)
        else:
            found = source if isinstance(source, Attachment) else attachment(source)
        if found is None:
            raise DownloadFailed("the message does not point to a file")
        fd, partial = _partial_file(dest)
        try:
            with os.fdopen(fd, "wb") as out:
                await self._fetch(found, out, progress, max_size)
            return _place(partial, dest / found.name)
        finally:
            partial.unlink(missing_ok=True)

    async def _fetch(self, found: Attachment, sink: BinaryIO, progress: Progress | None, max_size: int) -> None:
        decryptor = Cipher(algorithms.AES(found.key), modes.GCM(found.iv)).decryptor() \
            if found.key is not None and found.iv is not None else None
        try:
            async with aiohttp.ClientSession() as http, http.get(
                found.https, ssl=self._ssl(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.client.timeout,
                                              sock_read=self.client.timeout),
            ) as response:
                if response.status != 200:
                    raise DownloadFailed(f"cannot fetch {found.name}: HTTP {response.status} {response.reason}")
                total = response.content_length or 0
                if total > max_size:
                    raise DownloadFailed(f"{found.name} is {data_size(total)}, more than the limit of {data_size(max_size)}")
                done = 0
                held = b""
                async for chunk in response.content.iter_chunked(CHUNK):
                    done += len(chunk)
                    if done > max_size:
                        raise DownloadFailed(f"{found.name} is more than the limit of {data_size(max_size)}")
                    if decryptor is None:
                        sink.write(chunk)
                    else:
                        # The last 16 bytes are the tag: keep them back until the end.
                        held += chunk
                        if len(held) > TAG_SIZE:
                            sink.write(decryptor.update(held[:-TAG_SIZE]))
                            held = held[-TAG_SIZE:]
                    if progress is not None:
                        progress(done, max(total, done))
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, ValueError) as err:
            raise DownloadFailed(f"cannot fetch {found.name}: {err or type(err).__name__}") from None
        if decryptor is not None:
            if len(held) < TAG_SIZE:
                raise TagMismatch(f"{found.name} is too short to be an encrypted file")
            try:
                sink.write(decryptor.finalize_with_tag(held))
            except InvalidTag:
                raise TagMismatch(f"{found.name} does not verify: it was changed after it was sent") from None


def _readable_size(path: Path) -> int:
    try:
        if not path.is_file():
            raise FileError(f"{path} is not a file" if path.exists() else f"no such file: {path}")
        size = path.stat().st_size
    except OSError as err:
        raise FileError(f"cannot read {path}: {err.strerror or err}") from None
    if size == 0:
        raise FileError(f"{path} is empty")
    return size


def _partial_file(dest: Path) -> tuple[int, Path]:
    """A hidden file in ``dest`` for a download under way: renamed when it is complete and verified."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest, prefix=".download-", suffix=".part")
    except OSError as err:
        raise DownloadFailed(f"cannot write to {dest}: {err.strerror or err}") from None
    return fd, Path(name)


def _query(to: str, payload: str) -> Element:
    iq = element(_IQ, {"type": "get", "to": to})
    sub(iq, payload)
    return iq


async def _chunks(path: Path, size: int, encryptor: AEADEncryptionContext | None, progress: Progress | None,
                  total: int) -> AsyncIterator[bytes]:
    """The file's ``size`` bytes in chunks; encrypted, XEP-0454 §3: AES-256-GCM, then the tag.

    A file that grows or shrinks on the way (a recording still being written) raises FileError
    before its last byte goes: what the server got would not be the file, and an encrypted one
    would lack its tag.
    """
    done = 0
    left = size
    with path.open("rb") as source:
        while left:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise FileError(f"{path.name} shrank while it was being sent")
            left -= len(chunk)
            if not left and source.read(1):
                raise FileError(f"{path.name} grew while it was being sent")
            data = chunk if encryptor is None else encryptor.update(chunk)
            done += len(data)
            if progress is not None:
                progress(done, total)
            yield data
    if encryptor is not None:
        tail = encryptor.finalize() + encryptor.tag
        if progress is not None:
            progress(done + len(tail), total)
        yield tail


def _place(partial: Path, wanted: Path) -> Path:
    """Give the finished file its name without replacing another: "name (2).ext" if taken."""
    stem, suffix = wanted.stem, wanted.suffix
    for n in range(1, 10_000):
        target = wanted if n == 1 else wanted.with_name(f"{stem} ({n}){suffix}")
        with contextlib.suppress(FileExistsError):
            # link() fails rather than replace: two downloads cannot take the same name.
            os.link(partial, target)
            return target
    raise DownloadFailed(f"no free file name for {wanted.name} in {wanted.parent}")
