"""HTTP File Upload (XEP-0363) on real sockets: slots over XMPP (raw and slixmpp's xep_0363),
PUT and GET over real HTTP with aiohttp, every bad input's status with no partial file left
behind, CORS, ranges, quota, expiry, account deletion, and ``schnack admin uploads``.

The 20 MB round trip runs against ``schnack serve`` in its own process, so that the server's
memory can be read from /proc while the file passes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import os
import re
import shutil
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit
from xml.etree.ElementTree import Element

import aiohttp
import pytest
from slixmpp import JID, ClientXMPP

from schnack.server.app import Server
from schnack.server.blobs import LocalBlobStore
from schnack.server.modules import upload as upload_module_of
from schnack.server.modules.upload import STORE, Upload
from schnack.xmpp import ns
from schnack.xmpp.jid import JID as Address
from schnack.xmpp.payloads.disco import DiscoInfo, DiscoItems
from schnack.xmpp.payloads.upload import NS, Retry, Slot, max_file_size
from schnack.xmpp.xml import serialize

from ..cli.proc import SCHNACK, client_env, schnack
from ..conftest import require_service
from ..harness import add_user, make_config, running
from ..s3 import seaweedfs
from .slix import PASSWORD
from .wire import Wire

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024
OPTIONS = {"max_file_size": 32 * MiB, "quota": 48 * MiB}
# Short enough for a test to wait out, and only where a test means to stall.
STALL = {"stall_timeout": 1.0}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"upload": OPTIONS}) as srv:
        await add_user(srv, "alice", PASSWORD)
        await add_user(srv, "bob", PASSWORD)
        yield srv


@pytest.fixture
async def impatient(tmp_path: Path) -> AsyncIterator[Server]:
    """A server that gives up on a silent upload after a second."""
    async with running(tmp_path, listen=True, modules={"upload": {**OPTIONS, **STALL}}) as srv:
        await add_user(srv, "alice", PASSWORD)
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        yield session


def upload_module(server: Server) -> Upload:
    module = server.modules["upload"]
    assert isinstance(module, Upload)
    return module


async def session(host: str, port: int, user: str, resource: str = "test") -> Wire:
    """A raw client logged in over STARTTLS and bound."""
    reader, writer = await asyncio.open_connection(host, port)
    wire = Wire(reader, writer)
    await wire.open()
    features = await wire.starttls()
    await wire.login(user, PASSWORD, features)
    await wire.bind(resource)
    return wire


async def logged_in(server: Server, user: str = "alice") -> Wire:
    host, port = server.bound["c2s"][0]
    return await session(host, port, user)


async def ask(wire: Wire, iq: str) -> Element:
    wire.send(iq)
    reply = await wire.next(timeout=30)
    assert reply is not None
    return reply


async def request_slot(wire: Wire, name: str, size: int, kind: str | None = "application/octet-stream",
                       service: str = "upload.localhost") -> Element:
    content_type = f" content-type='{kind}'" if kind else ""
    return await ask(wire, f"<iq type='get' id='slot' to='{service}'><request xmlns='{NS}' filename='{name}' "
                           f"size='{size}'{content_type}/></iq>")


async def slot(wire: Wire, name: str, size: int, kind: str | None = "application/octet-stream") -> Slot:
    reply = await request_slot(wire, name, size, kind)
    assert reply.get("type") == "result", serialize(reply)
    el = reply.find(f"{{{NS}}}slot")
    assert el is not None
    return Slot.from_xml(el)


def condition(reply: Element) -> str:
    assert reply.get("type") == "error", serialize(reply)
    error = reply.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag.startswith(f"{{{ns.STANZA_ERRORS}}}")
                and not c.tag.endswith("}text"))


def local_store(server: Server) -> LocalBlobStore:
    store = upload_module(server).blobs
    assert isinstance(store, LocalBlobStore)
    return store


def leftovers(server: Server) -> list[Path]:
    """Every file under the upload directory: blobs and partial files."""
    return sorted(p for p in local_store(server).root.rglob("*") if p.is_file())


def blob_key(url: str) -> str:
    path = urlsplit(url).path.split("/")
    return f"{path[-3]}/{path[-2]}"


def blob_path(server: Server, url: str) -> Path:
    return local_store(server).root / blob_key(url)


async def put(http: aiohttp.ClientSession, url: str, data: Any, kind: str = "application/octet-stream",
              **headers: str) -> aiohttp.ClientResponse:
    async with http.put(url, data=data, headers={"Content-Type": kind, **headers}) as response:
        await response.read()
        return response


async def upload(server: Server, http: aiohttp.ClientSession, wire: Wire, data: bytes, name: str = "f.bin",
                 kind: str = "application/octet-stream") -> Slot:
    s = await slot(wire, name, len(data), kind)
    response = await put(http, s.put, data, kind)
    assert response.status == 201, await response.text()
    return s


async def raw_http(server: Server, head: str, body: bytes = b"") -> tuple[int, str]:
    """Send a request by hand on the plain HTTP listener; the status and headers of the answer.

    The connection stays open (the server takes a half-closed one for gone), so a body shorter
    than its Content-Length is what a slow client sends.
    """
    host, port = server.bound["http"][0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(60):
            status_line = await reader.readline()
            headers = []
            while (line := await reader.readline()) not in (b"\r\n", b""):
                headers.append(line.decode())
        return int(status_line.split()[1]), "".join(headers)
    finally:
        writer.close()


def on_http_listener(server: Server, url: str) -> str:
    """The same URL on the plain HTTP listener (raw requests need no TLS)."""
    parts = urlsplit(url)
    host, port = server.bound["http"][0]
    return urlunsplit(("http", f"{host}:{port}", parts.path, parts.query, ""))


def target(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# --- discovery and slots over raw XMPP, a small round trip -------------------------------------

async def test_discover_request_put_get(server: Server, http: aiohttp.ClientSession) -> None:
    wire = await logged_in(server)
    items = await ask(wire, f"<iq type='get' id='i' to='localhost'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    query = items.find(f"{{{ns.DISCO_ITEMS}}}query")
    assert query is not None
    services = [item.jid for item in DiscoItems.from_xml(query).items]
    assert "upload.localhost" in services
    info = await ask(wire, f"<iq type='get' id='j' to='upload.localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = info.find(f"{{{ns.DISCO_INFO}}}query")
    assert query is not None
    disco = DiscoInfo.from_xml(query)
    assert NS in disco.features
    assert [max_file_size(form) for form in disco.forms] == [32 * MiB]

    data = os.urandom(100_000)
    s = await slot(wire, "photo of us.jpg", len(data), "image/jpeg")
    https_port = server.bound["https"][0][1]
    assert s.get.startswith(f"https://localhost:{https_port}/upload/localhost/")
    assert s.get.endswith("/photo%20of%20us.jpg")
    assert (await http.get(s.get)).status == 404  # not uploaded yet
    response = await put(http, s.put, data, "image/jpeg")
    assert response.status == 201
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    async with http.get(s.get) as got:
        assert got.status == 200
        assert await got.read() == data
        assert got.headers["Content-Type"] == "image/jpeg"
        assert got.headers["Content-Length"] == str(len(data))
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in got.headers["Content-Security-Policy"]
        assert got.headers["Access-Control-Allow-Origin"] == "*"
        assert got.headers["Accept-Ranges"] == "bytes"
    async with http.head(s.get) as head:
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(data))
        assert await head.read() == b""
    assert blob_path(server, s.get).read_bytes() == data
    # The name is part of the address.
    assert (await http.get(s.get.rsplit("/", 1)[0] + "/other.jpg")).status == 404
    # A used slot takes no second upload.
    assert (await put(http, s.put, data, "image/jpeg")).status == 409
    wire.close()


# --- slixmpp's XEP-0363 plugin ------------------------------------------------------------------

async def test_slixmpp_upload_plugin(tmp_path: Path) -> None:
    """slixmpp finds the service through disco, asks for a slot and PUTs the file; it checks
    TLS certificates, so this server's upload URLs use its plain HTTP listener."""
    server = Server(make_config(tmp_path, listen={"https": []}))
    await server.start()
    try:
        await add_user(server, "alice", PASSWORD)
        client = ClientXMPP("alice@localhost/slix", PASSWORD)
        client.ssl_context.check_hostname = False
        client.ssl_context.verify_mode = ssl.CERT_NONE
        client.enable_direct_tls = False
        for plugin in ("xep_0030", "xep_0128", "xep_0363"):
            client.register_plugin(plugin)
        started = asyncio.Event()
        client.add_event_handler("session_start", lambda _: started.set())
        host, port = server.bound["c2s"][0]
        client.connect(host, port)
        try:
            async with asyncio.timeout(30):
                await started.wait()
            data = os.urandom(300_000)
            source = tmp_path / "voice.ogg"
            source.write_bytes(data)
            with source.open("rb") as f:
                url = await client.plugin["xep_0363"].upload_file(
                    "voice.ogg", input_file=f, domain=JID("localhost"), timeout=30
                )
            assert client.plugin["xep_0363"].max_file_size == 104_857_600
            assert url.startswith("http://localhost:") and url.endswith("/voice.ogg")
            async with aiohttp.ClientSession() as http, http.get(url) as got:
                assert got.status == 200
                assert got.headers["Content-Type"] == "audio/ogg"
                assert await got.read() == data
        finally:
            await client.disconnect()
    finally:
        await server.stop()


# --- bad input ----------------------------------------------------------------------------------

async def test_forged_expired_and_unknown_signatures(server: Server, http: aiohttp.ClientSession) -> None:
    wire = await logged_in(server)
    data = b"x" * 1000
    s = await slot(wire, "a.bin", len(data))
    parts = urlsplit(s.put)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = parts.path
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    forged = query["s"][:-2] + ("AA" if not query["s"].endswith("AA") else "BB")
    for url in (
        f"{base}?e={query['e']}&s={forged}",  # forged signature
        f"{base}?e={int(query['e']) + 3600}&s={query['s']}",  # a later expiry than signed
        f"{base}?e={query['e']}",  # none
        base,
        f"{base.rsplit('/', 1)[0]}/b.bin?e={query['e']}&s={query['s']}",  # another name
        f"{base.rsplit('/', 2)[0]}/{'A' * 22}/a.bin?e={query['e']}&s={query['s']}",  # another slot
    ):
        response = await put(http, url, data)
        assert response.status == 403, url
    # Expired: a correctly signed URL whose time is up.
    slot_id = path.split("/")[-2]
    past = int(time.time()) - 10
    signature = upload_module(server).sign("localhost", slot_id, "a.bin", len(data), "application/octet-stream", past)
    assert (await put(http, f"{base}?e={past}&s={signature}", data)).status == 403
    assert leftovers(server) == []
    # The real URL still works.
    assert (await put(http, s.put, data)).status == 201
    wire.close()


async def test_path_traversal(server: Server, http: aiohttp.ClientSession) -> None:
    wire = await logged_in(server)
    for name in ("../../etc/passwd", "..", "a/../../b"):
        assert condition(await request_slot(wire, name, 10)) == "bad-request"
    s = await slot(wire, "a.bin", 10)
    e, sig = parse_qs(urlsplit(s.put).query)["e"][0], parse_qs(urlsplit(s.put).query)["s"][0]
    slot_id = urlsplit(s.put).path.split("/")[-2]
    for path in (f"/upload/localhost/{slot_id}/..%2F..%2F..%2Fetc%2Fpasswd",
                 f"/upload/localhost/{slot_id}/%2e%2e",
                 f"/upload/..%2F..%2Fetc/{slot_id}/a.bin",
                 f"/upload/localhost/..%2F{slot_id}/a.bin"):
        status, _ = await raw_http(server, f"PUT {path}?e={e}&s={sig} HTTP/1.1\nHost: localhost\n"
                                           "Content-Type: application/octet-stream\nContent-Length: 10\n", b"0123456789")
        assert status in (403, 404), path
        status, _ = await raw_http(server, f"GET {path} HTTP/1.1\nHost: localhost\n")
        assert status == 404, path
    assert leftovers(server) == []
    wire.close()


async def test_oversized_wrong_length_wrong_type(server: Server, http: aiohttp.ClientSession) -> None:
    wire = await logged_in(server)
    too_large = await request_slot(wire, "big.bin", 32 * MiB + 1)
    assert condition(too_large) == "not-acceptable"
    assert too_large.find(f"{{{NS}}}error/{{{NS}}}file-too-large") is None  # it sits in <error/>
    error = too_large.find(f"{{{ns.CLIENT}}}error")
    assert error is not None and error.findtext(f"{{{NS}}}file-too-large/{{{NS}}}max-file-size") == str(32 * MiB)

    s = await slot(wire, "a.txt", 1000, "text/plain")
    # 413: a body over the limit is refused before a byte of it is read.
    status, headers = await raw_http(
        server, f"PUT {target(s.put)} HTTP/1.1\nHost: localhost\nContent-Type: text/plain\n"
                f"Content-Length: {32 * MiB + 1}\n", b"x" * 1000)
    assert status == 413
    assert "access-control-allow-origin: *" in headers.lower()
    # 400: a length or a type other than the slot's.
    assert (await put(http, s.put, b"x" * 999, "text/plain")).status == 400
    assert (await put(http, s.put, b"x" * 1000, "text/html")).status == 400
    # A charset parameter or other case is still the same type.
    assert (await put(http, s.put, b"x" * 1000, "Text/Plain; charset=utf-8")).status == 201
    assert leftovers(server) == [blob_path(server, s.get)]
    # 411: no length at all (chunked).
    s2 = await slot(wire, "b.txt", 10, "text/plain")
    status, _ = await raw_http(server, f"PUT {target(s2.put)} HTTP/1.1\nHost: localhost\nContent-Type: text/plain\n"
                                       "Transfer-Encoding: chunked\n", b"a\r\n0123456789\r\n0\r\n\r\n")
    assert status == 411
    wire.close()


async def test_a_compressed_body_is_refused(server: Server, http: aiohttp.ClientSession,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """The slot is for the file's bytes as they are: a body with a content coding would be
    unpacked into something else, of another size (RFC 9110 §15.5.16: 415, Accept-Encoding)."""
    wire = await logged_in(server)
    packed = gzip.compress(bytes(100_000))
    s = await slot(wire, "zeros.bin", len(packed))
    response = await put(http, s.put, packed, **{"Content-Encoding": "gzip"})
    assert response.status == 415
    assert response.headers["Accept-Encoding"] == "identity"
    assert (await http.get(s.get)).status == 404
    assert (await put(http, s.put, packed)).status == 201
    async with http.get(s.get, headers={"Accept-Encoding": "identity"}) as got:
        assert await got.read() == packed
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    wire.close()


async def test_expect_100_continue(server: Server) -> None:
    """A client that waits for 100 Continue hears of a refusal before it sends the body."""
    wire = await logged_in(server)
    s = await slot(wire, "e.bin", 1000)
    head = "HTTP/1.1\nHost: localhost\nContent-Type: application/octet-stream\nExpect: 100-continue\n"
    assert (await raw_http(server, f"PUT {target(s.put)}x {head}Content-Length: 1000\n"))[0] == 403
    assert (await raw_http(server, f"PUT {target(s.put)} {head}Content-Length: {33 * MiB}\n"))[0] == 413
    assert (await raw_http(server, f"PUT {target(s.put)} {head}Content-Length: 999\n"))[0] == 400
    host, port = server.bound["http"][0]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"PUT {target(s.put)} {head}Content-Length: 1000\n\n".replace("\n", "\r\n").encode())
        async with asyncio.timeout(30):
            assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
            assert await reader.readline() == b"\r\n"
            writer.write(b"e" * 1000)
            assert (await reader.readline()).split()[1] == b"201"
    finally:
        writer.close()
    wire.close()


async def test_body_that_ends_early(server: Server) -> None:
    wire = await logged_in(server)
    s = await slot(wire, "a.bin", 100_000)
    host, port = server.bound["http"][0]
    _, writer = await asyncio.open_connection(host, port)
    writer.write(f"PUT {target(s.put)} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: 100000\r\n\r\n".encode() + b"x" * 50_000)
    await writer.drain()
    # Hang up only once the server is writing this upload, so that its end is what the test sees.
    async with asyncio.timeout(30):
        while not upload_module(server)._putting:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()
    # The server notices the connection is gone and drops the partial file; the slot stays usable.
    async with asyncio.timeout(30):
        while upload_module(server)._putting or leftovers(server):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        assert (await put(http, s.put, b"y" * 100_000)).status == 201
    wire.close()


async def test_slow_upload_gets_408_and_leaves_nothing(impatient: Server, http: aiohttp.ClientSession) -> None:
    """Slow-loris: half the body, then silence past the stall timeout (1 s here)."""
    server = impatient
    wire = await logged_in(server)
    s = await slot(wire, "slow.bin", 100_000)
    status, _ = await raw_http(
        server, f"PUT {target(s.put)} HTTP/1.1\nHost: localhost\nContent-Type: application/octet-stream\n"
                "Content-Length: 100000\n", b"x" * 50_000)
    assert status == 408
    assert leftovers(server) == []
    assert (await http.get(s.get)).status == 404
    # The slot is still there for a better connection.
    assert (await put(http, s.put, b"z" * 100_000)).status == 201
    wire.close()


async def test_active_content_is_served_as_a_download(server: Server, http: aiohttp.ClientSession) -> None:
    """A page, a script or an SVG would run on the server's origin if a browser showed it: such
    files come as attachments under their own name; pictures, sound, video and plain text show."""
    wire = await logged_in(server)
    for name, kind, disposition in (
        ("login.html", "text/html", "attachment"),
        ("cat.svg", "image/svg+xml", "attachment"),
        ("app.js", "text/javascript", "attachment"),
        ("report.pdf", "application/pdf", "attachment"),
        ("data.xml", "application/xml", "attachment"),
        ("Grüße und co.bin", "application/octet-stream", "attachment"),
        ("cat.jpg", "image/jpeg", "inline"),
        ("voice.ogg", "audio/ogg", "inline"),
        ("clip.mp4", "video/mp4", "inline"),
        ("notes.txt", "text/plain", "inline"),
    ):
        s = await upload(server, http, wire, b"<html><script>alert(1)</script></html>", name, kind)
        for method in ("GET", "HEAD"):
            async with http.request(method, s.get) as got:
                assert got.status == 200
                assert got.headers["Content-Disposition"] == f"{disposition}; filename*=UTF-8''{quote(name, safe='')}"
    wire.close()


async def test_a_media_type_with_parameters(server: Server, http: aiohttp.ClientSession) -> None:
    """RFC 9110 §8.3.1: a content type may carry parameters (a text file's charset); the slot is
    granted and the file served with them. What is no media type is still refused."""
    wire = await logged_in(server)
    data = "Grüße".encode()
    s = await slot(wire, "notes.txt", len(data), "text/plain; charset=utf-8")
    assert (await put(http, s.put, data, "text/plain; charset=utf-8")).status == 201
    async with http.get(s.get) as got:
        assert got.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await got.text() == "Grüße"
    s = await slot(wire, "song.ogg", 10, 'audio/ogg ; codecs="opus"')
    assert (await put(http, s.put, b"x" * 10, "audio/ogg")).status == 201
    for bad in ("text/plain; charset", "text/plain; =utf-8", "text/plain; a=b c", 'text/plain; a="b',
                "text/plain;&#10;Set-Cookie: a=b", "text/plain; a=\"b&#13;\""):
        assert condition(await request_slot(wire, "x.txt", 10, bad)) == "bad-request", bad
    wire.close()


# --- CORS, ranges -------------------------------------------------------------------------------

async def test_cors_preflight(server: Server, http: aiohttp.ClientSession) -> None:
    """What a browser asks before converse.js PUTs with Authorization and Content-Type."""
    wire = await logged_in(server)
    s = await slot(wire, "pic.png", 10, "image/png")
    async with http.options(s.put, headers={
        "Origin": "https://chat.example.org", "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization,content-type",
    }) as response:
        assert response.status in (200, 204)
        assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://chat.example.org")
        assert "PUT" in response.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
    response = await put(http, s.put, b"0123456789", "image/png", Origin="https://chat.example.org")
    assert response.status == 201 and response.headers["Access-Control-Allow-Origin"] == "*"
    wire.close()


async def test_range_requests(server: Server, http: aiohttp.ClientSession) -> None:
    wire = await logged_in(server)
    data = os.urandom(1_000_000)
    s = await upload(server, http, wire, data, "clip.mp4", "video/mp4")
    for header, start, end in (("bytes=10-19", 10, 19), ("bytes=-5", len(data) - 5, len(data) - 1),
                               ("bytes=999990-", 999_990, 999_999), ("bytes=300000-2000000", 300_000, 999_999)):
        async with http.get(s.get, headers={"Range": header}) as got:
            assert got.status == 206, header
            assert got.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
            assert await got.read() == data[start:end + 1]
    async with http.get(s.get, headers={"Range": f"bytes={len(data)}-"}) as got:
        assert got.status == 416
        assert got.headers["Content-Range"] == f"bytes */{len(data)}"
    async with http.get(s.get, headers={"Range": "bytes=0-1,5-6"}) as got:
        assert got.status == 200 and await got.read() == data
    wire.close()


async def test_a_reader_that_leaves_early_is_no_error(server: Server, http: aiohttp.ClientSession,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Browsers drop a download half-way all the time (a video skipped through): that is no
    failure of the server's to log as one."""
    caplog.set_level(logging.DEBUG, logger="schnack.server.modules.upload")
    wire = await logged_in(server)
    s = await upload(server, http, wire, os.urandom(24 * MiB), "film.mp4", "video/mp4")
    host, port = server.bound["http"][0]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {urlsplit(s.get).path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    async with asyncio.timeout(30):
        assert (await reader.readline()).split()[1] == b"200"
    writer.close()
    # The server notices when its next write fails, and says so.
    async with asyncio.timeout(30):
        while blob_key(s.get) not in caplog.text:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    wire.close()


# --- quota, expiry, deletion --------------------------------------------------------------------

async def test_quota_counts_stored_files(server: Server, http: aiohttp.ClientSession) -> None:
    wire = await logged_in(server)
    for i in range(2):
        await upload(server, http, wire, bytes(20 * MiB), f"{i}.bin")
    reply = await request_slot(wire, "more.bin", 8 * MiB + 1)
    assert condition(reply) == "resource-constraint"
    error = reply.find(f"{{{ns.CLIENT}}}error")
    assert error is not None and error.find(f"{{{NS}}}retry") is not None
    await slot(wire, "fits.bin", 8 * MiB)
    bob = await logged_in(server, "bob")
    await slot(bob, "bob.bin", 32 * MiB)
    usage = await upload_module(server).usage()
    assert usage == [{"jid": "alice@localhost", "files": 2, "bytes": 40 * MiB}]
    wire.close()
    bob.close()


async def test_waiting_until_the_retry_stamp_gets_the_slot(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """§5: a client over its quota that waits until the <retry/> stamp gets its slot, though the
    file that frees the space is still on disk until the next sweep."""
    options = {"max_file_size": 1000, "quota": 1000, "expire_after_days": 1.5 / 86400, "sweep_interval": 86400}
    async with running(tmp_path, listen=True, modules={"upload": options}) as server:
        await add_user(server, "alice", PASSWORD)
        wire = await logged_in(server)
        s = await upload(server, http, wire, b"x" * 1000)
        refused = await request_slot(wire, "next.bin", 1000)
        assert condition(refused) == "resource-constraint"
        retry = refused.find(f"{{{ns.CLIENT}}}error/{{{NS}}}retry")
        assert retry is not None
        await asyncio.sleep(Retry.from_xml(retry).stamp.timestamp() - time.time())
        await slot(wire, "next.bin", 1000)
        assert (await http.get(s.get)).status == 200
        wire.close()


async def test_an_upload_under_way_keeps_its_quota_past_the_slots_expiry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PUT started just before its slot expired is still a file to come: its bytes stay in
    the quota, or slow uploads, one after the other, would store many times the quota."""
    # No grace after a slot's expiry: what holds the quota is the upload under way, not the wait.
    monkeypatch.setattr(upload_module_of, "_PUT_GRACE", 0.0)
    options = {"max_file_size": 1000, "quota": 1000, "slot_lifetime": 1.0}
    async with running(tmp_path, listen=True, modules={"upload": options}) as server:
        await add_user(server, "alice", PASSWORD)
        wire = await logged_in(server)
        s = await slot(wire, "slow.bin", 1000)
        # The URL's expiry is in whole seconds; the slot's ends within the next one.
        expires = int(parse_qs(urlsplit(s.put).query)["e"][0]) + 1
        host, port = server.bound["http"][0]
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"PUT {target(s.put)} HTTP/1.1\r\nHost: localhost\r\n"
                         "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n".encode()
                         + b"x" * 500)
            await writer.drain()
            async with asyncio.timeout(30):
                while not upload_module(server)._putting or time.time() <= expires:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert condition(await request_slot(wire, "more.bin", 1000)) == "resource-constraint"
            writer.write(b"x" * 500)
            async with asyncio.timeout(30):
                assert (await reader.readline()).split()[1] == b"201"
        finally:
            writer.close()
        assert [row["bytes"] for row in await upload_module(server).usage()] == [1000]
        await upload_module(server).purge(owner=Address.parse("alice@localhost"))

        # A PUT that failed holds nothing once its slot expired: the quota is free at once.
        s = await slot(wire, "cut.bin", 1000)
        expires = int(parse_qs(urlsplit(s.put).query)["e"][0]) + 1
        _, writer = await asyncio.open_connection(host, port)
        writer.write(f"PUT {target(s.put)} HTTP/1.1\r\nHost: localhost\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 500)
        await writer.drain()
        async with asyncio.timeout(30):
            while not upload_module(server)._putting:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        writer.close()
        async with asyncio.timeout(30):
            while upload_module(server)._putting or time.time() <= expires:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await slot(wire, "more.bin", 1000)
        wire.close()


async def test_old_files_expire(server: Server, http: aiohttp.ClientSession) -> None:
    wire = await logged_in(server)
    s = await upload(server, http, wire, b"old news")
    module = upload_module(server)
    assert await module.sweep() == 0
    assert (await http.get(s.get)).status == 200
    assert await module.sweep(now=time.time() + 31 * 86400) == 1
    assert (await http.get(s.get)).status == 404
    assert leftovers(server) == []
    wire.close()


async def block_first(server: Server, slots: list[Slot]) -> Path:
    """Of these files, make the first one the sweep meets impossible to delete: a directory
    stands in its place. The path to clear is returned."""
    order = list(await server.storage.maps.items("localhost", "", STORE))
    first = min(slots, key=lambda s: order.index(urlsplit(s.get).path.split("/")[-2]))
    path = blob_path(server, first.get)
    path.unlink()
    (path / "in the way").mkdir(parents=True)
    return path


async def test_a_file_that_cannot_be_deleted_holds_up_no_other(server: Server, http: aiohttp.ClientSession,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A blob the store fails to delete is logged and left for the next sweep; the expiry of the
    other files, and the deletion of an account, go on without it."""
    wire = await logged_in(server)
    module = upload_module(server)
    slots = [await upload(server, http, wire, f"file {i}".encode()) for i in range(3)]
    path = await block_first(server, slots)
    later = time.time() + 31 * 86400
    assert await module.sweep(now=later) == 2
    assert "cannot delete" in caplog.text
    for s in slots:
        assert (await http.get(s.get)).status == 404
    (path / "in the way").rmdir()
    path.rmdir()
    assert await module.sweep(now=later) == 1
    assert leftovers(server) == []

    slots = [await upload(server, http, wire, f"file {i}".encode()) for i in range(3)]
    path = await block_first(server, slots)
    wire.close()
    assert await server.delete_account("localhost", "alice")
    assert not any(p.is_file() for p in local_store(server).root.rglob("*"))
    # The next sweep deletes what the account's deletion could not, whatever its age.
    (path / "in the way").rmdir()
    path.rmdir()
    assert await module.sweep() == 1
    assert await module.usage() == []


async def test_files_go_with_the_account(server: Server, http: aiohttp.ClientSession) -> None:
    alice = await logged_in(server)
    bob = await logged_in(server, "bob")
    mine = await upload(server, http, alice, b"alice's")
    theirs = await upload(server, http, bob, b"bob's")
    pending = await slot(alice, "later.bin", 5)
    alice.close()
    assert await server.delete_account("localhost", "alice")
    assert (await http.get(mine.get)).status == 404
    assert (await put(http, pending.put, b"12345")).status == 403
    assert (await http.get(theirs.get)).status == 200
    assert leftovers(server) == [blob_path(server, theirs.get)]
    bob.close()


async def test_admin_uploads_cli(server: Server, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """``schnack admin uploads`` and ``purge`` as processes, through the running server."""
    config = tmp_path / "cli.toml"
    config.write_text(f'domains = ["localhost"]\ndata_dir = "{server.config.data_dir}"\n')
    env = client_env(tmp_path)
    alice, bob = await logged_in(server), await logged_in(server, "bob")
    first = await upload(server, http, alice, b"a" * 1000)
    await upload(server, http, alice, b"b" * 500)
    bobs = await upload(server, http, bob, b"c" * 300)

    usage = await schnack(env, "admin", "uploads", "--config", str(config))
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.splitlines() == ["alice@localhost\t2 files\t1500 bytes", "bob@localhost\t1 files\t300 bytes"]
    one = await schnack(env, "admin", "uploads", "--config", str(config), "--user", "bob@localhost", "--json")
    assert one.returncode == 0 and '"bytes": 300' in one.stdout

    purged = await schnack(env, "admin", "uploads", "purge", "--config", str(config), "--user", "alice@localhost")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "deleted 2 files (1500 bytes)"
    assert (await http.get(first.get)).status == 404
    assert (await http.get(bobs.get)).status == 200
    old = await schnack(env, "admin", "uploads", "purge", "--config", str(config), "--older-than", "1")
    assert old.stdout.strip() == "deleted 0 files (0 bytes)"
    everything = await schnack(env, "admin", "uploads", "purge", "--config", str(config), "--older-than", "0")
    assert everything.stdout.strip() == "deleted 1 files (300 bytes)"
    assert leftovers(server) == []

    for args, message in (
        (("purge",), "name either --user JID or --older-than DAYS"),
        (("purge", "--user", "alice@localhost", "--older-than", "1"), "name either"),
        (("purge", "--older-than", "soon"), "--older-than must be a number of days"),
        (("purge", "--older-than", "nan"), "--older-than must be a number of days"),
        (("purge", "--user", "alice@elsewhere.test"), "does not serve elsewhere.test"),
        (("purge", "--user", "not a jid@@"), "invalid JID"),
        (("--user", "bob"), "is not an account address"),
    ):
        result = await schnack(env, "admin", "uploads", *args, "--config", str(config))
        assert result.returncode == 2, (args, result.stdout)
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    alice.close()
    bob.close()


async def test_admin_uploads_without_a_server(tmp_path: Path) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(f'domains = ["localhost"]\ndata_dir = "{tmp_path / "none"}"\n')
    result = await schnack(client_env(tmp_path), "admin", "uploads", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"schnack: no server is running on {tmp_path / 'none'} "
                                                  f"(no admin socket at {tmp_path / 'none' / 'admin.sock'})"]


# --- files in an S3 bucket ----------------------------------------------------------------------

async def test_files_in_s3(tmp_path: Path) -> None:
    """The same service with ``store = "s3"`` on a real S3-compatible server (SeaweedFS)."""
    async with seaweedfs(tmp_path / "s3") as s3:
        options = {**OPTIONS, **STALL, "store": "s3", "s3_endpoint": s3.endpoint, "s3_bucket": s3.bucket,
                   "s3_access_key": s3.access_key, "s3_secret_key": s3.secret_key, "s3_prefix": "schnack/"}
        async with running(tmp_path / "node", listen=True, modules={"upload": options}) as server, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            await add_user(server, "alice", PASSWORD)
            wire = await logged_in(server)
            data = os.urandom(3 * MiB)
            s = await upload(server, http, wire, data, "clip.mp4", "video/mp4")
            store = upload_module(server).blobs
            assert await store.size(blob_key(s.get)) == len(data)
            async with http.get(s.get) as got:
                assert got.status == 200 and got.headers["Content-Type"] == "video/mp4"
                assert await got.read() == data
            async with http.get(s.get, headers={"Range": "bytes=1000-1999"}) as got:
                assert got.status == 206 and await got.read() == data[1000:2000]
            # A stalled PUT leaves no object behind.
            slow = await slot(wire, "slow.bin", 100_000)
            status, _ = await raw_http(
                server, f"PUT {target(slow.put)} HTTP/1.1\nHost: localhost\nContent-Type: application/octet-stream\n"
                        "Content-Length: 100000\n", b"x" * 50_000)
            assert status == 408
            assert await store.size(blob_key(slow.get)) is None
            assert await upload_module(server).purge(owner=Address.parse("alice@localhost")) == (1, len(data))
            assert await store.size(blob_key(s.get)) is None
            assert (await http.get(s.get)).status == 404
            wire.close()


# --- 20 MB through a server in its own process --------------------------------------------------

def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, int]]]:
    """``schnack serve`` in its own process with alice's account; its ports."""
    config = tmp_path / "schnack.toml"
    config.write_text(
        'domains = ["localhost"]\ndata_dir = "state"\n[listen]\n'
        'c2s = ["127.0.0.1:0"]\nc2s_tls = ["127.0.0.1:0"]\nhttp = ["127.0.0.1:0"]\nhttps = ["127.0.0.1:0"]\n'
    )
    env = client_env(tmp_path)
    added = await schnack(env, "admin", "user", "add", "--config", str(config), "--password-stdin",
                          "alice@localhost", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    proc = await asyncio.create_subprocess_exec(*SCHNACK, "serve", "--config", str(config),
                                                stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        seen = ""
        async with asyncio.timeout(120):
            while "add a user" not in seen:
                line = await proc.stderr.readline()
                assert line, seen
                seen += line.decode()
        ports = {
            "c2s": int(re.findall(r"port (\d+) \(STARTTLS\)", seen)[0]),
            "http": int(re.findall(r"ws://localhost:(\d+)/", seen)[0]),
            "https": int(re.findall(r"wss://localhost:(\d+)/", seen)[0]),
        }
        yield proc, ports
    finally:
        proc.terminate()
        async with asyncio.timeout(60):
            await proc.wait()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, int]]]:
    async with serving(tmp_path) as running_server:
        yield running_server


async def test_20_mb_round_trip_with_flat_server_memory(
    served: tuple[asyncio.subprocess.Process, dict[str, int]], tmp_path: Path
) -> None:
    proc, ports = served
    size = 20 * MiB
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as f:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            f.write(chunk)
    wire = await session("127.0.0.1", ports["c2s"], "alice")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:

        async def round_trip(name: str, length: int) -> str:
            s = await slot(wire, name, length)
            assert f"https://localhost:{ports['https']}/" in s.put
            with source.open("rb") as f:
                body = f if length == size else f.read(length)
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
                async with http.put(s.put, data=body, headers=headers) as response:
                    assert response.status == 201, await response.text()
            got = hashlib.sha256()
            async with http.get(s.get) as response:
                assert response.status == 200
                async for chunk in response.content.iter_chunked(256 * 1024):
                    got.update(chunk)
            return got.hexdigest()

        # A first, small file warms every code path up, so what follows is the file's own cost.
        await round_trip("warm-up.bin", MiB)
        before = _memory(proc.pid)["VmRSS"]
        started = time.monotonic()
        assert await round_trip("big.bin", size) == digest.hexdigest()
        took = time.monotonic() - started
        peak = _memory(proc.pid)["VmHWM"]
    growth = peak - before
    # Figures for the record, not assertions: the machine is shared.
    print(f"server RSS before {before / MiB:.1f} MiB, peak during the 20 MiB round trip {peak / MiB:.1f} MiB; "
          f"up and down over HTTPS in {took:.2f} s")
    # Holding the file (or a copy of it) would add 20 MiB at least.
    assert growth < 10 * MiB, f"server memory grew by {growth / MiB:.1f} MiB"
    stored = list((tmp_path / "state" / "uploads" / "localhost").iterdir())
    assert len(stored) == 2
    wire.close()


# --- a finished upload is on disk before 201 ------------------------------------------------------

_SYSCALL = re.compile(r"(\d+) +(?:<\.\.\. (\w+) resumed>|(\w+)\((.*?)(?: <unfinished \.\.\.>$|\) += (-?\d+)))")


def _finished_calls(trace: str) -> list[tuple[str, str]]:
    """(name, arguments) of each system call in an ``strace -f`` log, in the order the calls
    returned; a call one thread began while another ran appears where it ended."""
    begun: dict[str, tuple[str, str]] = {}
    calls = []
    for line in trace.splitlines():
        match = _SYSCALL.match(line)
        if match is None:
            continue
        pid, resumed, name, arguments, _ = match.groups()
        if resumed is not None:
            calls.append(begun.pop(pid))
        elif line.endswith("<unfinished ...>"):
            begun[pid] = (name, arguments)
        else:
            calls.append((name, arguments))
    return calls


async def test_a_file_is_on_disk_before_201(tmp_path: Path) -> None:
    """The server's system calls, as the kernel saw them: the partial file is synced, renamed into
    place, its directory synced, and only then is 201 Created sent. That the disk keeps what an
    fsync was told to keep through a power loss is the disk's part, which no test here can show."""
    strace = shutil.which("strace")
    require_service(strace is not None, "strace is not installed")
    assert strace is not None
    log = tmp_path / "strace.log"
    traced = ("fsync", "fdatasync", "rename", "renameat", "renameat2", "write", "writev", "sendmsg", "sendto")
    tracer = None
    try:
        async with serving(tmp_path) as (proc, ports):
            tracer = await asyncio.create_subprocess_exec(
                strace, "-f", "-y", "-s", "32", "-o", str(log), "-e", f"trace={','.join(traced)}", "-p", str(proc.pid),
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert tracer.stderr is not None
            async with asyncio.timeout(60):
                attached = await tracer.stderr.readline()
            assert b"attached" in attached, attached
            wire = await session("127.0.0.1", ports["c2s"], "alice")
            s = await slot(wire, "notes.txt", 5, "text/plain")
            url = urlunsplit(("http", f"127.0.0.1:{ports['http']}", urlsplit(s.put).path, urlsplit(s.put).query, ""))
            async with aiohttp.ClientSession() as http:
                response = await put(http, url, b"hello", "text/plain")
            assert response.status == 201
            wire.close()
    finally:
        # The tracer ends with the server, its log complete.
        if tracer is not None:
            async with asyncio.timeout(60):
                await tracer.wait()
    uploads = tmp_path / "state" / "uploads"
    target = f"{uploads / blob_key(s.put)}"
    calls = _finished_calls(log.read_text())
    renamed = next(i for i, (name, arguments) in enumerate(calls)
                   if name.startswith("rename") and f'"{target}"' in arguments)
    partial = re.search(r'"([^"]*/\.partial/[0-9a-f]+)"', calls[renamed][1])
    assert partial is not None, calls[renamed]
    file_synced = [i for i, (name, arguments) in enumerate(calls)
                   if name in ("fsync", "fdatasync") and arguments.endswith(f"<{partial[1]}>")]
    directory_synced = [i for i, (name, arguments) in enumerate(calls)
                        if name in ("fsync", "fdatasync") and arguments.endswith(f"<{uploads / 'localhost'}>")]
    created = next(i for i, (name, arguments) in enumerate(calls) if "HTTP/1.1 201" in arguments)
    assert file_synced and file_synced[0] < renamed, "the file was not synced before it was renamed into place"
    assert any(renamed < i < created for i in directory_synced), "the rename was not synced before 201"
