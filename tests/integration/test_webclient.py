"""The web client's HTTP side on real sockets: the generated page and its settings, the security
headers, converse.js's files (immutable caching, nothing outside the directory), the page that
says how to install it, and the start-up line.

Most tests serve a small dist directory made here, so they run without npm; the last ones serve
the converse.js that ``make web`` installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from schnack.server.app import Server
from schnack.server.config import ConfigError
from schnack.server.modules.webclient import WebClient, find_installation

from ..conftest import require_service
from ..harness import make_config, running

pytestmark = pytest.mark.asyncio

VERSION = "14.0.0"
SETTINGS = re.compile(r'<script type="application/json" id="schnack-settings">(.*?)</script>', re.S)


def make_dist(root: Path) -> Path:
    """A dist directory laid out as the npm package's, with a secret beside it."""
    dist = root / "converse.js" / "dist"
    (dist / "images").mkdir(parents=True)
    (root / "converse.js" / "package.json").write_text(json.dumps({"name": "converse.js", "version": VERSION}))
    (dist / "converse.min.js").write_text("window.converse = {plugins: {add() {}}, initialize() {}};\n")
    (dist / "curve25519_compiled.wasm").write_bytes(b"\0asm\1\0\0\0")
    (dist / "images" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (dist / ".hidden").write_text("not for the web")
    (root / "secret.txt").write_text("outside the directory")
    (dist / "escape.txt").symlink_to(root / "secret.txt")
    return dist


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    dist = make_dist(tmp_path / "web")
    async with running(tmp_path, listen=True, modules={"webclient": {"directory": str(dist), "name": "Chat </script>"}}) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        yield session


def base(server: Server, scheme: str = "http") -> str:
    host, port = server.bound[scheme][0]
    return f"{scheme}://{host}:{port}"


def policy(response: aiohttp.ClientResponse) -> dict[str, list[str]]:
    """The Content Security Policy as directive -> sources."""
    directives = [d.split() for d in response.headers["Content-Security-Policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


def settings(page: str) -> dict[str, Any]:
    match = SETTINGS.search(page)
    assert match is not None, page
    value: dict[str, Any] = json.loads(match.group(1))
    return value


async def test_page_configures_converse_for_this_server_and_the_browsers_scheme(
    server: Server, http: aiohttp.ClientSession
) -> None:
    for scheme in ("http", "https"):
        async with http.get(f"{base(server, scheme)}/web/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert r.headers["Cache-Control"] == "no-store"
            page = await r.text()
        got = settings(page)
        # The path only: schnack.js adds the page's origin (test_conversejs.py runs it behind a proxy).
        assert got["websocket_url"] == "/xmpp-websocket"
        assert got["omemo_default"] is True and got["clear_cache_on_logout"] is False
        assert got["default_domain"] == "localhost" and got["i18n"] == "en"
        assert got["assets_path"] == f"/web/converse-{VERSION}/"
        # The register module is off by default, so converse.js offers no sign-up form.
        assert got["allow_registration"] is False
    # The name is escaped in the title; the data block cannot be ended by a value.
    assert "<title>Chat &lt;/script&gt;</title>" in page
    assert page.count("</script>") == 3
    assert f'<script type="module" src="/web/converse-{VERSION}/converse.min.js"></script>' in page
    assert '<script type="module" src="/web/schnack.js"></script>' in page
    async with http.get(f"{base(server)}/web/schnack.js") as r:
        assert r.status == 200 and r.content_type == "text/javascript"
        script = await r.text()
    assert "location.host" in script and "converse.initialize(settings)" in script


async def test_security_headers_allow_only_the_server_its_websocket_and_uploads(
    server: Server, http: aiohttp.ClientSession
) -> None:
    host = base(server, "https").split("://")[1]
    upload_port = server.bound["https"][0][1]
    async with http.get(f"{base(server, 'https')}/web/") as r:
        csp = policy(r)
        headers = r.headers
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert csp["connect-src"] == [
        "'self'", f"https://{host}", f"wss://{host}/xmpp-websocket", f"https://localhost:{upload_port}"
    ]
    # Over plain HTTP (perhaps a TLS proxy's HTTPS in the browser) the page may use either.
    async with http.get(f"{base(server)}/web/") as r:
        plain = policy(r)["connect-src"]
    host = base(server).split("://")[1]
    assert plain[2:4] == [f"wss://{host}/xmpp-websocket", f"ws://{host}/xmpp-websocket"]
    assert csp["img-src"] == ["'self'", f"https://localhost:{upload_port}", "blob:", "data:"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    assert "camera=()" in headers["Permissions-Policy"]


async def test_a_forged_host_header_does_not_reach_the_page(server: Server, http: aiohttp.ClientSession) -> None:
    port = server.bound["http"][0][1]
    async with http.get(f"{base(server)}/web/", headers={"Host": "evil.example'\"><script>"}) as r:
        assert r.status == 200
        page = await r.text()
        csp = r.headers["Content-Security-Policy"]
    assert "evil" not in page and "evil" not in csp
    assert f"ws://localhost:{port}/xmpp-websocket" in csp


async def test_files_are_served_immutable_with_their_types(server: Server, http: aiohttp.ClientSession) -> None:
    root = f"{base(server)}/web/converse-{VERSION}"
    for path, kind in (("converse.min.js", "text/javascript"), ("curve25519_compiled.wasm", "application/wasm"),
                       ("images/logo.svg", "image/svg+xml")):  # fmt: skip
        async with http.get(f"{root}/{path}") as r:
            assert r.status == 200, path
            assert r.headers["Content-Type"] == kind
            assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "Content-Security-Policy" in r.headers


async def test_nothing_outside_the_directory_nor_another_version_is_served(
    server: Server, http: aiohttp.ClientSession
) -> None:
    root = f"{base(server)}/web/converse-{VERSION}"
    for path in ("escape.txt", ".hidden", "images", "nothing.js", "%2e%2e/package.json", "images/%2e%2e/%2e%2e/package.json",
                 "..%2fpackage.json", "images//logo.svg"):  # fmt: skip
        async with http.get(f"{root}/{path}") as r:
            assert r.status == 404, path
            assert "outside the directory" not in await r.text()
    async with http.get(f"{base(server)}/web/converse-13.0.0/converse.min.js") as r:
        assert r.status == 404


async def test_web_without_slash_redirects(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base(server)}/web", allow_redirects=False) as r:
        assert r.status == 308 and r.headers["Location"] == "/web/"


async def test_without_converse_the_page_says_how_to_install_it(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    empty = tmp_path / "nothing-here"
    async with running(tmp_path, listen=True, modules={"webclient": {"directory": str(empty)}}) as srv:
        async with http.get(f"{base(srv)}/web/") as r:
            assert r.status == 503
            text = await r.text()
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        module = srv.modules["webclient"]
        assert isinstance(module, WebClient)
        line = module.announcement()
    assert "make web" in text and "npm" in text
    assert line.startswith("not installed") and str(empty) in line and "make web" in line


async def test_the_announcement_names_the_https_url(server: Server) -> None:
    module = server.modules["webclient"]
    assert isinstance(module, WebClient)
    assert module.announcement() == f"https://localhost:{server.bound['https'][0][1]}/web/ (converse.js {VERSION})"


@pytest.mark.parametrize(("options", "key"), [
    ({"language": "en'; alert(1)"}, "modules.webclient.language"),
    ({"name": ""}, "modules.webclient.name"),
    ({"name": "line\nbreak"}, "modules.webclient.name"),
])  # fmt: skip
async def test_bad_options_name_their_key(tmp_path: Path, options: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        Server(make_config(tmp_path, modules={"webclient": options}))
    assert str(err.value).startswith(key)


async def test_the_installed_converse_is_served(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    installed = find_installation(None)
    require_service(installed is not None, "converse.js is not installed (make web)")
    assert installed is not None
    assert installed.version.startswith("14.")
    async with running(tmp_path, listen=True) as srv:
        async with http.get(f"{base(srv)}/web/") as r:
            assert r.status == 200
            assert settings(await r.text())["assets_path"] == f"/web/converse-{installed.version}/"
        root = f"{base(srv)}/web/converse-{installed.version}"
        for path in ("converse.min.js", "converse.min.css", "libomemo.esm.min.js", "curve25519_compiled.wasm"):
            async with http.get(f"{root}/{path}") as r:
                assert r.status == 200, path
                assert len(await r.read()) == (installed.dist / path).stat().st_size
