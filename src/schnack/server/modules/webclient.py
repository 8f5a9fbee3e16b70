"""The web client: converse.js served at ``/web/`` of the HTTP listeners, over RFC 7395 WebSocket.

**Files.** converse.js (npm package ``converse.js`` 14.x) is installed by ``make web`` into
``web/node_modules``; its ``dist`` directory is served under ``/web/converse-{version}/``, so a
file's URL changes with the version and can be cached as immutable. ``directory`` points
elsewhere. Without the files ``/web/`` answers 503 with how to install them.

**The page.** ``/web/`` is made for each request: it configures converse.js for the WebSocket
endpoint on the page's own origin (``wss://`` from an HTTPS page, ``ws://`` from an HTTP one),
which ``/web/schnack.js`` puts together in the browser, since behind a TLS-terminating proxy the
server sees plain HTTP where the browser has HTTPS; the server's domain (users log in with their
name only), OMEMO on by default (XEP-0384, ``urn:xmpp:omemo:2`` between converse.js instances)
with ``clear_cache_on_logout`` off, since converse.js disables OMEMO otherwise, and the
configured language and name. The settings travel as a JSON data block that ``/web/schnack.js``
hands to ``converse.initialize``, so the page runs no inline script.

**In the browser.** A browser the user marks as trusted keeps the SCRAM keys (never the
password) so that a reload logs in again; they log in as the user, so ``/web/schnack.js`` deletes
them when the user logs out. OMEMO keys and the message cache stay (``clear_cache_on_logout``).

**Security headers (every answer under /web/).** A Content Security Policy that lets the page
load scripts, styles and fonts from itself only (plus ``'wasm-unsafe-eval'`` for the OMEMO
WebAssembly), connect to itself, the WebSocket endpoint (``wss://``, and ``ws://`` on a page asked
for over plain HTTP, which may be a proxy's HTTPS) and the upload service (XEP-0363) only,
show images and media from itself, the upload service and ``blob:``/``data:`` URLs (decrypted
files, avatars) only, and be framed by nobody; ``nosniff``, ``no-referrer``, no framing, an
isolated browsing context group and no camera, microphone or location.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from ...xmpp.errors import StanzaError
from ..config import ConfigError, bounded
from ..module import Module
from ..websocket import PATH as WEBSOCKET_PATH
from .upload import Upload

if TYPE_CHECKING:
    from ..app import Server

PREFIX = "/web"
INSTALL_HINT = "run `make web` in the schnack checkout (it needs npm: apt-get install npm), then restart the server"
# The checkout this file lives in, where `make web` installs converse.js.
_CHECKOUT = Path(__file__).resolve().parents[4]
_DIST = Path("web/node_modules/converse.js/dist")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})?")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")
_TYPES = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".json": "application/json",
    ".wasm": "application/wasm", ".map": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
}  # fmt: skip
_IMMUTABLE = "public, max-age=31536000, immutable"
_INIT_JS = (
    "// Starts converse.js with the settings the server put into the page.\n"
    'const settings = JSON.parse(document.getElementById("schnack-settings").textContent);\n'
    "// The page's own origin: behind a TLS-terminating proxy the server saw http where this page is https.\n"
    'const scheme = location.protocol === "https:" ? "wss:" : "ws:";\n'
    "settings.websocket_url = `${scheme}//${location.host}${settings.websocket_url}`;\n"
    "// converse.js keeps a trusted browser's SCRAM keys past logout, and they log in as the user.\n"
    'window.converse.plugins.add("schnack", {\n'
    "    initialize() {\n"
    "        const { _converse } = this;\n"
    '        _converse.api.listen.on("logout", () => _converse.state.login_info?.destroy());\n'
    "    },\n"
    "});\n"
    'settings.whitelisted_plugins = ["schnack"];\n'
    "window.converse.initialize(settings);\n"
)


@dataclass(frozen=True)
class WebClientOptions:
    """Where converse.js is installed, and how the page presents itself."""

    directory: Path | None = bounded(None, help="converse.js's dist directory; default: the checkout's web/node_modules")
    name: str = bounded("schnack", help="the page's title")
    language: str = bounded("en", help="converse.js's language, e.g. de or pt_BR")


@dataclass(frozen=True)
class Installation:
    """converse.js's files on disk."""

    dist: Path
    version: str


def find_installation(directory: Path | None) -> Installation | None:
    """converse.js's dist directory and version, or None when it is not installed."""
    candidates = [directory] if directory is not None else [Path.cwd() / _DIST, _CHECKOUT / _DIST]
    for dist in candidates:
        try:
            manifest = json.loads((dist.parent / "package.json").read_text())
            version = manifest["version"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (dist / "converse.min.js").is_file() and isinstance(version, str) and re.fullmatch(r"[0-9A-Za-z.+-]+", version):
            return Installation(dist.resolve(), version)
    return None


def _json_for_html(value: Any) -> str:
    """JSON that cannot end the ``<script>`` element it sits in (HTML §4.12.1.3)."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class WebClient(Module[WebClientOptions]):
    """converse.js at ``/web/``, configured for this server."""

    name = "webclient"
    Options = WebClientOptions

    def __init__(self, server: Server, options: WebClientOptions) -> None:
        super().__init__(server, options)
        if not _LANGUAGE.fullmatch(options.language):
            raise ConfigError("modules.webclient.language", f"must be a language code such as en or pt_BR, got {options.language!r}")
        if not options.name or len(options.name) > 64 or any(c < " " for c in options.name):
            raise ConfigError("modules.webclient.name", "must be 1 to 64 printable characters")
        directory = options.directory
        if directory is not None and not directory.is_absolute():
            source = server.config.source
            directory = (source.parent if source is not None else Path.cwd()) / directory
        self.directory = directory
        self.installation = find_installation(directory)

    def setup(self) -> None:
        router = self.server.http_app.router
        router.add_get(PREFIX, self.redirect)
        router.add_get(PREFIX + "/", self.page)
        router.add_get(PREFIX + "/schnack.js", self.init_script)
        router.add_get(PREFIX + "/converse-{version}/{path:.+}", self.asset)

    def announcement(self) -> str:
        """One line for the start-up summary: where the web client is, or how to install it."""
        if self.installation is None:
            where = self.directory or _CHECKOUT / _DIST
            return f"not installed (no converse.js in {where}): {INSTALL_HINT}"
        domain = self.server.config.domains[0]
        urls = [f"{scheme}://{domain}:{addrs[0][1]}{PREFIX}/"
                for scheme in ("https", "http") if (addrs := self.server.bound.get(scheme))]  # fmt: skip
        if not urls:
            return "no HTTP listener (listen.http or listen.https) to serve it on"
        return f"{urls[0]} (converse.js {self.installation.version})"

    # --- HTTP ------------------------------------------------------------------------------

    def _headers(self, request: web.Request) -> dict[str, str]:
        """The security headers of every answer under /web/, with the page's own CSP."""
        host = self._host(request)
        origin = f"{request.scheme}://{host}"
        # Plain HTTP may be the proxy's HTTPS in the browser (docs/clients.md): both then.
        schemes = ("wss",) if request.scheme == "https" else ("wss", "ws")
        sockets = [f"{scheme}://{host}{WEBSOCKET_PATH}" for scheme in schemes]
        uploads = self._upload_origins()
        media = " ".join(dict.fromkeys(("'self'", *uploads, "blob:", "data:")))
        policy = "; ".join((
            "default-src 'none'",
            "script-src 'self' 'wasm-unsafe-eval'",
            # converse.js adds <style> elements and style attributes; no script comes in through them.
            "style-src 'self' 'unsafe-inline'",
            "font-src 'self'",
            f"img-src {media}",
            f"media-src {media}",
            "connect-src " + " ".join(dict.fromkeys(("'self'", origin, *sockets, *uploads))),
            "worker-src 'self'",
            "manifest-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "frame-src 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        ))  # fmt: skip
        return {
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        }

    def _host(self, request: web.Request) -> str:
        """The host (and port) the browser asked for; a malformed Host header gets the listener's."""
        host = request.host
        if _HOST.fullmatch(host):
            return host.lower()
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = f":{sockname[1]}" if isinstance(sockname, tuple) else ""
        return f"{self.server.config.domains[0]}{port}"

    def _upload_origins(self) -> list[str]:
        """The origins of the upload service's URLs (XEP-0363 §4), which the page PUTs to and shows."""
        upload = self.optional(Upload)
        if upload is None:
            return []
        origins: list[str] = []
        for domain in self.server.config.domains:
            try:
                parts = urlsplit(upload.base_url(domain))
            except StanzaError:  # no HTTP listener for uploads: nothing to allow
                continue
            origin = f"{parts.scheme}://{parts.netloc}"
            if origin not in origins:
                origins.append(origin)
        return origins

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(PREFIX + "/", headers=self._headers(request))

    async def page(self, request: web.Request) -> web.Response:
        """The page that starts converse.js, or how to install it."""
        headers = {**self._headers(request), "Cache-Control": "no-store"}
        name = html.escape(self.options.name)
        if self.installation is None:
            hint = html.escape(INSTALL_HINT)
            body = (
                f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{name}</title></head>"
                f"<body><h1>The web client is not installed</h1><p>To serve it, {hint}.</p></body></html>\n"
            )
            return web.Response(status=503, text=body, content_type="text/html", headers=headers)
        assets = f"{PREFIX}/converse-{self.installation.version}/"
        body = (
            f"<!DOCTYPE html>\n<html lang=\"{self.options.language.replace('_', '-')}\">\n<head>\n"
            "<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{name}</title>\n"
            f"<link rel=\"icon\" href=\"{assets}images/favicon.ico\">\n"
            f"<link rel=\"stylesheet\" href=\"{assets}converse.min.css\">\n"
            f"<script type=\"application/json\" id=\"schnack-settings\">{_json_for_html(self.settings())}</script>\n"
            f"<script type=\"module\" src=\"{assets}converse.min.js\"></script>\n"
            f"<script type=\"module\" src=\"{PREFIX}/schnack.js\"></script>\n"
            "</head>\n<body class=\"converse-fullscreen\"></body>\n</html>\n"
        )
        return web.Response(text=body, content_type="text/html", headers=headers)

    def settings(self) -> dict[str, Any]:
        """converse.js's settings for the page."""
        assert self.installation is not None
        domain = self.server.config.domains[0]
        return {
            "assets_path": f"{PREFIX}/converse-{self.installation.version}/",
            # A path: /web/schnack.js adds the page's origin.
            "websocket_url": WEBSOCKET_PATH,
            "discover_connection_methods": False,
            "default_domain": domain,
            "domain_placeholder": domain,
            "omemo_default": True,
            "clear_cache_on_logout": False,
            "i18n": self.options.language,
            "view_mode": "fullscreen",
            "allow_registration": "register" in self.server.modules,
            "registration_domain": domain,
            "show_client_info": False,
            "allow_url_history_change": False,
            "play_sounds": False,
            "show_images_inline": True,
            "embed_3rd_party_media_players": False,
            "sounds_path": f"{PREFIX}/converse-{self.installation.version}/sounds/",
            "message_archiving": "always",
        }

    async def init_script(self, request: web.Request) -> web.Response:
        headers = {**self._headers(request), "Cache-Control": "no-cache"}
        if self.installation is None:
            return web.Response(status=503, text="// the web client is not installed\n", content_type="text/javascript", headers=headers)
        return web.Response(text=_INIT_JS, content_type="text/javascript", headers=headers)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """A file of converse.js's dist directory, cached as immutable: its URL names the version."""
        headers = self._headers(request)
        installation = self.installation
        if installation is None or request.match_info["version"] != installation.version:
            return web.Response(status=404, text="no such file\n", headers=headers)
        relative = request.match_info["path"]
        parts = relative.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
            return web.Response(status=404, text="no such file\n", headers=headers)
        path = installation.dist.joinpath(*parts)
        try:
            # A symbolic link out of the directory is not served.
            inside = path.resolve(strict=True).is_relative_to(installation.dist) and path.is_file()
        except OSError:
            inside = False
        if not inside:
            return web.Response(status=404, text="no such file\n", headers=headers)
        kind = _TYPES.get(path.suffix.lower(), "application/octet-stream")
        headers.update({"Cache-Control": _IMMUTABLE, "Content-Type": kind})
        return web.FileResponse(path, headers=headers)
