"""Files between clients (XEP-0363 upload, XEP-0454 aesgcm URLs) through the real server and real HTTPS.

Two of our clients exchange a file byte for byte inside an OMEMO message; the blob the server
stores is ciphertext (not the file, near 8 bits of entropy per byte); a changed blob fails the
tag check and leaves nothing in the downloads folder; plaintext goes only when asked, with an
XEP-0066 element. slixmpp, with slixmpp-omemo for the message and its own xep_0454 plugin for
the file, decrypts a file our client sent and sends one our client decrypts.
"""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import aiohttp.connector
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from slixmpp.plugins.xep_0454 import XEP_0454

from schnack.client import Client, EncryptionRequired
from schnack.client.features.files import (
    CHUNK,
    Attachment,
    DownloadFailed,
    FileError,
    FileTooBig,
    NoUploadService,
    TagMismatch,
    attachment,
    attachment_of,
    entropy,
    safe_name,
)
from schnack.server.app import Server
from schnack.server.blobs import LocalBlobStore
from schnack.server.modules.upload import Upload
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.xml import qname

from ...harness import add_user, make_config, running
from ..conftest import PASSWORD, next_of, online
from ..omemo.test_slixmpp import Peer

MiB = 1024 * 1024
LIMIT = 4 * MiB
_OOB_URL = f"{qname('jabber:x:oob', 'x')}/{qname('jabber:x:oob', 'url')}"
_BODY = qname(ns.CLIENT, "body")


@pytest.fixture
async def file_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A listening server with the upload service (4 MiB per file), alice and bob, plaintext allowed."""
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"},
                                                      "upload": {"max_file_size": LIMIT}}) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        yield server


def stored_blob(server: Server, url: str) -> bytes:
    """What the server keeps for an uploaded file: the bytes in its blob store."""
    module = server.modules["upload"]
    assert isinstance(module, Upload) and isinstance(module.blobs, LocalBlobStore)
    path = urlsplit(url).path.split("/")
    return (module.blobs.root / path[-3] / path[-2]).read_bytes()


def readable_file(size: int) -> bytes:
    """Text-like content: low entropy, so that encryption shows."""
    line = b"The same sentence, again and again, as a document would repeat itself.\n"
    return (line * (size // len(line) + 1))[:size]


async def test_a_file_travels_encrypted_and_arrives_byte_for_byte(file_server: Server, clients: list[Client],
                                                                  tmp_path: Path) -> None:
    alice = await online(file_server, clients, "alice@localhost/phone")
    bob = await online(file_server, clients, "bob@localhost/laptop")
    inbox = bob.messages()
    data = readable_file(3 * MiB + 7)
    source = tmp_path / "report.txt"
    source.write_bytes(data)
    sent: list[tuple[int, int]] = []
    id = await alice.send_file("bob@localhost", source, progress=lambda done, total: sent.append((done, total)))
    assert sent[-1] == (len(data) + 16, len(data) + 16)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(sent))

    got = await next_of(inbox, lambda m: m.id == id)
    assert got.encrypted and got.text is not None
    # XEP-0454 §3: the body is the URL alone, and nothing about the file is outside the encryption.
    found = attachment(got.text)
    assert found is not None and found.encrypted and got.text == found.url
    assert got.text.startswith("aesgcm://localhost:") and got.text.endswith(".txt#" + got.text[-88:])
    assert got.element.find(_OOB_URL) is None and "aesgcm" not in (got.element.findtext(_BODY) or "")

    blob = stored_blob(file_server, found.https)
    assert len(blob) == len(data) + 16 and blob != data and data[:4096] not in blob
    assert entropy(data) < 5 and entropy(blob) > 7.99

    downloads = tmp_path / "downloads"
    fetched: list[tuple[int, int]] = []
    path = await bob.download(got, downloads, progress=lambda done, total: fetched.append((done, total)))
    assert path.parent == downloads and path.suffix == ".txt"
    assert path.read_bytes() == data
    assert fetched[-1] == (len(data) + 16, len(data) + 16)
    # A second download takes a name of its own; nothing half-written is left.
    again = await bob.download(got, downloads)
    assert again != path and again.read_bytes() == data
    assert sorted(p.name for p in downloads.iterdir()) == sorted([path.name, again.name])


async def test_a_changed_blob_fails_the_tag_check_and_leaves_no_file(file_server: Server, clients: list[Client],
                                                                     tmp_path: Path) -> None:
    alice = await online(file_server, clients, "alice@localhost")
    bob = await online(file_server, clients, "bob@localhost")
    inbox = bob.messages()
    source = tmp_path / "photo.jpg"
    source.write_bytes(os.urandom(200_000))
    id = await alice.send_file("bob@localhost", source)
    got = await next_of(inbox, lambda m: m.id == id)
    found = attachment(got.text)
    assert found is not None
    module = file_server.modules["upload"]
    assert isinstance(module, Upload) and isinstance(module.blobs, LocalBlobStore)
    parts = urlsplit(found.https).path.split("/")
    blob = module.blobs.root / parts[-3] / parts[-2]
    tampered = bytearray(blob.read_bytes())
    tampered[1000] ^= 0x01
    blob.write_bytes(bytes(tampered))
    downloads = tmp_path / "downloads"
    with pytest.raises(TagMismatch, match="does not verify"):
        await bob.download(got, downloads)
    assert list(downloads.iterdir()) == []
    # A wrong key is the same failure; a missing file an HTTP one.
    wrong = Attachment(found.url, found.https, key=bytes(32), iv=found.iv)
    with pytest.raises(TagMismatch):
        await bob.download(wrong, downloads)
    with pytest.raises(DownloadFailed, match="HTTP 404"):
        await bob.download(Attachment(found.url, found.https.rsplit("/", 1)[0] + "/x.jpg", found.key, found.iv),
                           downloads)
    with pytest.raises(DownloadFailed, match="more than the limit"):
        await bob.download(found, downloads, max_size=1000)
    assert list(downloads.iterdir()) == []


async def test_plaintext_only_when_asked_and_with_oob(file_server: Server, clients: list[Client],
                                                      tmp_path: Path) -> None:
    alice = await online(file_server, clients, "alice@localhost")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"plain notes")
    # bob has no OMEMO devices until his client logs in: nothing is uploaded then.
    with pytest.raises(EncryptionRequired):
        await alice.send_file("bob@localhost", source)
    module = file_server.modules["upload"]
    assert isinstance(module, Upload) and isinstance(module.blobs, LocalBlobStore)
    assert not any(p.is_file() for p in module.blobs.root.rglob("*"))
    bob = await online(file_server, clients, "bob@localhost")
    inbox = bob.messages()
    id = await alice.send_file("bob@localhost", source, encrypted=False)
    got = await next_of(inbox, lambda m: m.id == id)
    assert not got.encrypted and got.text is not None and got.text.startswith("https://localhost:")
    assert got.element.findtext(_OOB_URL) == got.text
    path = await bob.download(got, tmp_path / "in")
    assert (path.name, path.read_bytes()) == ("notes.txt", b"plain notes")
    # A link someone pastes is not a file: only one marked with XEP-0066 is fetched.
    link = await alice.send("bob@localhost", got.text, encrypted=False)
    pasted = await next_of(inbox, lambda m: m.id == link)
    assert attachment_of(pasted) is None and attachment_of(got) is not None
    with pytest.raises(DownloadFailed, match="does not point to a file"):
        await bob.download(pasted, tmp_path / "in")


async def test_sending_errors(file_server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice = await online(file_server, clients, "alice@localhost")
    await online(file_server, clients, "bob@localhost")
    service = await alice.upload_service()
    assert (str(service.jid), service.max_file_size) == ("upload.localhost", LIMIT)
    with pytest.raises(FileError, match="no such file"):
        await alice.send_file("bob@localhost", tmp_path / "missing.bin")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (LIMIT - 8))  # over the limit once the tag is added
    with pytest.raises(FileTooBig, match="takes at most"):
        await alice.send_file("bob@localhost", big)
    empty = tmp_path / "empty.bin"
    empty.touch()
    with pytest.raises(FileError, match="is empty"):
        await alice.send_file("bob@localhost", empty)


@pytest.mark.parametrize("change", ["grew", "shrank"])
async def test_a_file_that_changes_size_on_the_way_is_not_sent(file_server: Server, clients: list[Client],
                                                               tmp_path: Path, change: str) -> None:
    """A recording still being written when it is sent: what goes up would not be the file (and
    an encrypted one would lose its tag, so the recipient could not open it), so nothing is sent."""
    alice = await online(file_server, clients, "alice@localhost")
    await online(file_server, clients, "bob@localhost")
    source = tmp_path / "recording.ogg"
    source.write_bytes(os.urandom(MiB))

    def write_on(done: int, _total: int) -> None:
        if done <= CHUNK:
            if change == "grew":
                with source.open("ab") as f:
                    f.write(os.urandom(1000))
            else:
                os.truncate(source, CHUNK + 1000)

    for encrypted in (True, False):
        source.write_bytes(os.urandom(MiB))
        with pytest.raises(FileError, match=f"recording.ogg {change} while it was being sent"):
            await alice.send_file("bob@localhost", source, encrypted=encrypted, progress=write_on)
    module = file_server.modules["upload"]
    assert isinstance(module, Upload)
    assert await module.usage(JID.parse("alice@localhost")) == [{"jid": "alice@localhost", "files": 0, "bytes": 0}]


async def test_no_key_goes_to_a_plain_http_url_nor_any_file_to_the_server(tmp_path: Path,
                                                                         clients: list[Client]) -> None:
    """XEP-0454 §3: only an https URL becomes an aesgcm one. A service whose files would be
    fetched over plain HTTP is told before the upload, so that no file is left on the server."""
    server = Server(make_config(tmp_path, listen={"https": []}, modules={"e2e": {"policy": "optional"}}))
    await server.start()
    try:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        alice = await online(server, clients, "alice@localhost")
        await online(server, clients, "bob@localhost")
        source = tmp_path / "secret.txt"
        source.write_bytes(b"for bob only")
        with pytest.raises(FileError, match="non-https URL"):
            await alice.send_file("bob@localhost", source)
        module = server.modules["upload"]
        assert isinstance(module, Upload)
        assert await module.usage() == []
    finally:
        await server.stop()


async def test_no_upload_service(tmp_path: Path, clients: list[Client]) -> None:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"},
                                                      "disable": ["upload"]}) as server:
        await add_user(server, "alice", PASSWORD)
        alice = await online(server, clients, "alice@localhost")
        source = tmp_path / "a.txt"
        source.write_bytes(b"a")
        with pytest.raises(NoUploadService, match="localhost offers no file upload service"):
            await alice.send_file("alice@localhost", source, encrypted=False)


async def test_a_file_with_the_older_16_byte_iv_is_read(file_server: Server, clients: list[Client],
                                                        tmp_path: Path) -> None:
    """XEP-0454: apps that began with OMEMO file sharing put a 16-byte IV in the URL's fragment
    (96 hex digits, not 88); their files are read too."""
    alice = await online(file_server, clients, "alice@localhost")
    data = readable_file(50_000)
    key, iv = os.urandom(32), os.urandom(16)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    blob = tmp_path / "blob.jpg"
    blob.write_bytes(encryptor.update(data) + encryptor.finalize() + encryptor.tag)
    https = await alice._files.upload(blob, encrypted=False)
    url = "aesgcm://" + https[len("https://"):] + "#" + (iv + key).hex()
    found = attachment(url)
    assert found is not None and (found.iv, found.key) == (iv, key)
    path = await alice.download(url, tmp_path / "downloads")
    assert path.read_bytes() == data


def test_urls_and_names() -> None:
    key, iv = bytes(range(32)), bytes(range(12))
    url = "aesgcm://example.org/upload/a/b/voice.ogg#" + (iv + key).hex()
    found = attachment(url)
    assert found == Attachment(url, "https://example.org/upload/a/b/voice.ogg", key=key, iv=iv)
    assert (found.name, found.content_type) == ("voice.ogg", "audio/ogg")
    assert attachment("https://example.org/f.png") == Attachment("https://example.org/f.png", "https://example.org/f.png")
    for text in ("look at https://example.org/f.png", "aesgcm://example.org/f.png", "http://example.org/f.png",
                 "aesgcm://example.org/f#abc", "https://example.org/f.png#" + "0" * 88, "", None):
        assert attachment(text) is None, text
    # A name from a URL never leaves the downloads folder nor hides in it.
    assert attachment("https://h/%2e%2e%2f%2e%2e%2fetc%2fpasswd") is not None
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert safe_name("..") == "file" and safe_name(".bashrc") == "bashrc"
    assert safe_name("a\\b:c\x00d") == "a_b_c_d"
    # Characters that reorder or break how the name is shown: "invoice<RLO>gpj.exe" would show as
    # "invoiceexe.jpg" (Unicode UAX #9). Joiners belong to words and emoji, and stay.
    assert safe_name("invoice\u202egpj.exe") == "invoice_gpj.exe"
    assert safe_name("a\u2066b\u2069c\u2028d\x85e") == "a_b_c_d_e"
    assert safe_name("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt") == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt"
    assert len(safe_name("x" * 300 + ".ogg").encode()) <= 200 and safe_name("x" * 300 + ".ogg").endswith(".ogg")


# --- slixmpp ------------------------------------------------------------------------------------


@pytest.fixture
async def slixmpp_bob(file_server: Server) -> AsyncIterator[Peer]:
    peer = Peer(file_server, "bob@localhost/slixmpp")
    peer.xmpp.register_plugin("xep_0363")
    peer.xmpp.register_plugin("xep_0454")
    await peer.start()
    yield peer
    await peer.stop()


async def test_slixmpp_decrypts_our_file_and_we_decrypt_its_file(
        file_server: Server, clients: list[Client], slixmpp_bob: Peer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both directions with implementations nobody here wrote: slixmpp-omemo carries the URL in
    an OMEMO message and slixmpp's xep_0454 plugin encrypts and decrypts the file.

    slixmpp's upload goes through aiohttp's default certificate checks; the test server's
    self-signed certificate is made trusted there for the length of this test.
    """
    alice = await online(file_server, clients, "alice@localhost/schnack")
    data = os.urandom(150_000) + readable_file(100_000)
    source = tmp_path / "voice.ogg"
    source.write_bytes(data)
    await alice.send_file("bob@localhost", source)
    url, _device = await slixmpp_bob.received()
    assert url.startswith("aesgcm://")
    found = attachment(url)
    assert found is not None
    async with aiohttp.ClientSession() as http, http.get(found.https, ssl=False) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "audio/ogg"
        ciphertext = await response.read()
    assert XEP_0454.decrypt(BytesIO(ciphertext), url.rsplit("#", 1)[1]) == data

    trusted = ssl.create_default_context(cafile=str(file_server.config.data_dir / "certs" / "server.crt"))
    monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", trusted)
    theirs = os.urandom(70_000)
    inbox = alice.messages()
    with BytesIO(theirs) as f:
        their_url = await slixmpp_bob.xmpp.plugin["xep_0454"].upload_file(
            Path("clip.ogg"), input_file=f, domain=slixmpp_bob.xmpp.boundjid.domain, timeout=30)
    await slixmpp_bob.send("alice@localhost", their_url)
    got = await next_of(inbox, lambda m: m.text == their_url)
    assert got.encrypted
    path = await alice.download(got, tmp_path / "downloads")
    assert path.read_bytes() == theirs and path.suffix == ".ogg"
