"""converse.js 14, served at /web/, in headless Debian Chromium driven by Playwright.

Two browser users log in over WebSocket (wss:// on the HTTPS listener, self-signed certificate)
and chat 1:1 with OMEMO (``urn:xmpp:omemo:2``): the server's archives hold only ciphertext. A
file sent with OMEMO on goes up encrypted (XEP-0454: the stored blob is not the file) and shows
at the receiver as a decrypted preview. Our client, logging in as a third device of alice, reads
the conversation from the archive (XEP-0313): it sees both messages as OMEMO:2 messages it cannot
decrypt, since they were encrypted before the device existed. The page asks for nothing its
Content Security Policy forbids, except the third-party logos of converse.js's login page.
Screenshots go to ``test-artifacts/conversejs/``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from schnack.client.client import Client
from schnack.client.features.messages import Message
from schnack.server.app import Server
from schnack.server.modules.pep.store import NODES, items_store
from schnack.server.modules.webclient import find_installation
from schnack.server.storage.base import RosterItem

from ..client.proxy import Proxy
from ..conftest import require_service
from ..harness import DOMAIN, add_user, running

pytestmark = pytest.mark.asyncio

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "conversejs"
PASSWORDS = {"alice": "alice's long passphrase", "bob": "bob's long passphrase"}
SECRET = "the garden gate is open at noon"
WAIT = 60_000  # milliseconds: OMEMO key set-up and two shared cores can be slow


def _available() -> tuple[bool, str]:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False, "the Python package playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return False, "Debian chromium is not installed (apt-get install chromium)"
    if find_installation(None) is None:
        return False, "converse.js is not installed (make web)"
    return True, ""


def _png(width: int, height: int) -> bytes:
    """A small red PNG image (PNG spec §5, §11.2)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"\xcc\x22\x22" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    available, reason = _available()
    require_service(available, reason)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    async with running(tmp_path, listen=True) as srv:
        for name, password in PASSWORDS.items():
            await add_user(srv, name, password)
        # Mutual contacts, so that each finds the other in the roster and OMEMO keys are visible.
        await srv.storage.roster.set_item(DOMAIN, "alice", RosterItem(f"bob@{DOMAIN}", "Bob", "both"))
        await srv.storage.roster.set_item(DOMAIN, "bob", RosterItem(f"alice@{DOMAIN}", "Alice", "both"))
        yield srv


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        # Debian's chromium only: Playwright's own browser builds are never downloaded.
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        browser = Browser(chromium)
        try:
            yield browser
        finally:
            # The last state of every page, also (above all) when the test failed.
            for tab in browser.tabs:
                await tab.shot("last")
            await chromium.close()


class Tab:
    """One browser user: a context of its own (its own IndexedDB, so its own OMEMO device)."""

    def __init__(self, page: Any, name: str, origin: str) -> None:
        self.page = page
        self.name = name
        self.origin = origin
        self.violations: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.errors.append(str(err)))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)

    def own_violations(self) -> list[str]:
        """CSP violations other than converse.js's sponsor logos from its own web site."""
        return [v for v in self.violations if "https://conversejs.org/" not in v]

    async def shot(self, step: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{step}-{self.name}.png"))

    async def log_in(self) -> None:
        page = self.page
        response = await page.goto(f"{self.origin}/web/")
        assert response is not None and response.status == 200
        await page.get_by_placeholder("Username").fill(self.name)
        await page.get_by_placeholder("Password").fill(PASSWORDS[self.name])
        await page.get_by_role("button", name="Log in").click()
        await page.get_by_text(f"{self.name}@{DOMAIN}").first.wait_for(timeout=WAIT)

    async def stored(self) -> list[str]:
        """What the page keeps in the browser's storage."""
        found: list[str] = await self.page.evaluate(STORED)
        return found

    async def log_out(self) -> None:
        page = self.page
        await page.locator("a.show-profile").first.click()
        await page.get_by_role("button", name="Log out").click()
        await page.get_by_role("button", name="Confirm").click()
        await page.get_by_placeholder("Password").wait_for(timeout=WAIT)

    async def open_chat(self, contact: str) -> None:
        await self.page.locator("converse-roster").get_by_text(contact, exact=True).first.click()
        await self.page.locator("textarea.chat-textarea").wait_for(timeout=WAIT)


# Every key and value the page keeps in localStorage and IndexedDB, as text.
STORED = """async () => {
    const found = [];
    for (let i = 0; i < localStorage.length; i++) {
        found.push(localStorage.key(i), localStorage.getItem(localStorage.key(i)));
    }
    for (const info of await indexedDB.databases()) {
        const db = await new Promise((ok, fail) => {
            const open = indexedDB.open(info.name);
            open.onsuccess = () => ok(open.result);
            open.onerror = fail;
        });
        for (const name of db.objectStoreNames) {
            const store = db.transaction(name).objectStore(name);
            for (const ask of [store.getAllKeys(), store.getAll()]) {
                const got = await new Promise((ok) => { ask.onsuccess = () => ok(ask.result); });
                found.push(...got.map((v) => typeof v === "string" ? v : JSON.stringify(v)));
            }
        }
        db.close();
    }
    return found;
}"""


class Browser:
    """The Chromium instance and the tabs opened in it."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium
        self.tabs: list[Tab] = []

    async def open(self, name: str, origin: str) -> Tab:
        # The certificate is the server's self-signed one; a real deployment has a trusted one.
        context = await self.chromium.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 700})
        tab = Tab(await context.new_page(), name, origin)
        self.tabs.append(tab)
        return tab


async def omemo_published(server: Server, username: str) -> None:
    """Wait until ``username``'s browser published its OMEMO:2 device list and a bundle (PEP)."""
    maps = server.storage.maps
    async with asyncio.timeout(WAIT / 1000):
        while True:
            nodes = await maps.items(DOMAIN, username, NODES)
            if "urn:xmpp:omemo:2:devices" in nodes and "urn:xmpp:omemo:2:bundles" in nodes:
                bundles = await maps.items(DOMAIN, username, items_store("urn:xmpp:omemo:2:bundles"))
                if bundles:
                    return
            await asyncio.sleep(0.1)


async def archived(server: Server, username: str, count: int) -> list[bytes]:
    """The payloads of ``username``'s archive once it holds ``count`` chat messages with bodies."""
    async with asyncio.timeout(30):
        while True:
            page = await server.storage.archive.query(DOMAIN, username, "mam")
            chats = [i.payload for i in page.items if b"<body>" in i.payload]
            if len(chats) >= count:
                return chats
            await asyncio.sleep(0.1)


async def test_two_browsers_chat_with_omemo_send_a_file_and_a_third_device_reads_the_archive(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    # Not https://localhost: on a page of "localhost" converse.js fetches encrypted files from
    # "localhost" over plain http, which the HTTPS listener's upload URLs do not answer.
    host, port = server.bound["https"][0]
    origin = f"https://{host}:{port}"

    # bob logs in first: his OMEMO device list is then on the server when alice opens the chat.
    bob = await browser.open("bob", origin)
    await bob.log_in()
    await omemo_published(server, "bob")
    alice = await browser.open("alice", origin)
    await alice.log_in()
    await omemo_published(server, "alice")
    # Both are in over the WebSocket endpoint (RFC 7395), the only way converse.js was given.
    sessions = {c.stream.session.username for c in server.connections
                if c.websocket and c.stream is not None and c.stream.session is not None}  # fmt: skip
    assert sessions == {"alice", "bob"}
    await alice.shot("1-logged-in")

    await alice.open_chat("Bob")
    composer = alice.page.locator("textarea.chat-textarea")
    await composer.fill(SECRET)
    await composer.press("Enter")
    sent = alice.page.locator(".chat-msg__text", has_text=SECRET)
    await expect(sent).to_be_visible(timeout=WAIT)

    await bob.open_chat("Alice")
    await expect(bob.page.locator(".chat-msg__text", has_text=SECRET)).to_be_visible(timeout=WAIT)
    await bob.shot("2-message")

    # The archives (alice's sent copy and bob's) hold the message, encrypted, and never its text.
    for username in ("alice", "bob"):
        (payload,) = await archived(server, username, 1)
        assert b'<encrypted xmlns="urn:xmpp:omemo:2">' in payload
        assert SECRET.encode() not in payload and b"<payload>" in payload

    # A picture sent with OMEMO on: uploaded encrypted, shown decrypted at bob's.
    picture = _png(48, 32)
    source = tmp_path / "red.png"
    source.write_bytes(picture)
    await alice.page.locator("input.fileupload").set_input_files(str(source))
    # The decrypted picture, shown from a blob: URL made in the page.
    preview = bob.page.locator(".chat-msg img[src^='blob:']").first
    await expect(preview).to_be_visible(timeout=WAIT)
    await bob.shot("3-file")
    await alice.shot("3-file")
    stored = [p for p in (server.config.data_dir / "uploads").rglob("*") if p.is_file()]
    assert len(stored) == 1
    # AES-256-GCM adds a 16-byte tag (XEP-0454); the server never had the picture itself.
    blob = stored[0].read_bytes()
    assert len(blob) == len(picture) + 16 and picture not in blob
    payloads = await archived(server, "bob", 2)
    assert all(b"urn:xmpp:omemo:2" in p and b"aesgcm://" not in p for p in payloads)

    # Our client as a third device of alice: both messages come from the archive as OMEMO:2 it
    # cannot read, since neither was encrypted for a device that did not exist yet.
    c2s = server.bound["c2s"][0]
    seen: list[Message] = []
    client = Client(f"alice@{DOMAIN}", PASSWORDS["alice"], host=c2s[0], port=c2s[1], verify=False,
                    direct_tls=False, reconnect=False, data_dir=tmp_path / "third-device")  # fmt: skip
    async with client:
        messages = client.messages()
        await client.caught_up(timeout=30)
        async with asyncio.timeout(30):
            async for message in messages:
                if message.history and message.encrypted:
                    seen.append(message)
                if len(seen) == 2:
                    break
    assert all(m.outgoing and m.to is not None and str(m.to.bare) == f"bob@{DOMAIN}" for m in seen), seen
    assert all(m.text is None and m.undecryptable == "the message is not encrypted for this device" for m in seen), seen

    for tab in (alice, bob):
        assert tab.own_violations() == [], tab.own_violations()
        assert tab.errors == [], tab.errors
        assert urlsplit(tab.page.url).path == "/web/"


async def test_behind_a_tls_proxy_the_page_connects_over_wss_to_its_own_origin(server: Server, browser: Browser) -> None:
    # docs/clients.md: plain HTTP on the listener, TLS on a proxy in front. The browser sees an
    # https:// page where the server sees http://; a ws:// URL would be blocked as mixed content.
    proxy = await Proxy("127.0.0.1", server.bound["http"][0][1], tls=server.tls.http_context).start()
    try:
        origin = f"https://127.0.0.1:{proxy.port}"
        bob = await browser.open("bob", origin)
        sockets: list[str] = []
        bob.page.on("websocket", lambda socket: sockets.append(socket.url))
        await bob.log_in()
        assert sockets == [f"wss://127.0.0.1:{proxy.port}/xmpp-websocket"]
        assert bob.own_violations() == [] and bob.errors == [], (bob.own_violations(), bob.errors)
    finally:
        await proxy.stop()


async def test_the_browser_keeps_no_password_and_logging_out_forgets_the_login(server: Server, browser: Browser) -> None:
    host, port = server.bound["https"][0]
    alice = await browser.open("alice", f"https://{host}:{port}")
    await alice.log_in()
    await omemo_published(server, "alice")
    stored = await alice.stored()
    # converse.js keeps the SCRAM keys of a trusted browser (never the password), to log in again on reload.
    keys = [s for s in stored if "scram-keys" in s]
    assert keys
    assert not any(PASSWORDS["alice"] in s for s in stored)
    await alice.log_out()
    # They log in as alice all the same: whoever uses the browser next must not find them.
    stored = await alice.stored()
    assert not any(s in stored for s in keys), keys
    await alice.page.reload()
    await alice.page.get_by_placeholder("Password").wait_for(timeout=WAIT)
    assert alice.own_violations() == [] and alice.errors == [], (alice.own_violations(), alice.errors)
