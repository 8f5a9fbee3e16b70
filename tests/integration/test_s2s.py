"""Server-to-server federation against a real peer: a private Prosody (Debian's package).

There is no DNS for test domains here, so both servers use IP-literal domains (RFC 6120 §3.2
allows them; an IP-literal domain is reached at that address on port 5269), each on a loopback
address of its own (127.0.0.0/8), so that neither needs /etc/hosts nor a port another test
holds. Prosody's pubsub service (a subdomain) is reached through schnack's ``[s2s] hosts``
table. Certificates: by default neither server trusts the other's, so both directions
authenticate with dialback (XEP-0220); one test gives both a common CA, and schnack then uses
SASL EXTERNAL (XEP-0178).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import random
import shutil
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import scramp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from slixmpp import JID, ClientXMPP

from bench.ports import free_port
from bench.servers import ITERATIONS, PrivateServer, _lua_string, _prosody_encode
from schnack.server.app import Server
from schnack.server.s2s.dialback import dialback_key
from schnack.xmpp.payloads.push import NS as PUSH

from ..client.proxy import Proxy
from ..conftest import require_service
from ..harness import add_user, make_config
from ..server.s2s.raw import RawPeer
from .slix import PASSWORD, SlixClient

WAIT = 30
NODE = "push-node-1"


def _loopback_address() -> str | None:
    """A 127.x.y.z address whose port 5269 is free (each test server gets its own)."""
    rng = random.Random()
    for _ in range(50):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        with socket.socket() as sock:
            try:
                sock.bind((address, 5269))
            except OSError:
                continue
        return address
    return None


def _addresses(count: int) -> list[str]:
    found = {a for a in (_loopback_address() for _ in range(count)) if a is not None}
    require_service(len(found) == count, "no free loopback addresses with port 5269 free")
    return sorted(found)


class Authority:
    """A test CA issuing certificates for IP-literal and DNS domains."""

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "schnack s2s test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, domains: Sequence[str], cert_path: Path, key_path: Path) -> None:
        """A certificate for ``domains``; an IP literal is named both as an address (what
        Python checks) and as a DNS name (what Prosody compares with the domain)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for domain in domains:
            sans.append(x509.DNSName(domain))
            with contextlib.suppress(ValueError):
                sans.append(x509.IPAddress(ipaddress.ip_address(domain)))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class ProsodyPeer(PrivateServer):
    """A private Prosody serving ``domain`` (with a pubsub service at ``pubsub.{domain}``): s2s
    on ``domain``:5269, clients on 127.0.0.1. Its certificates come from ``authority``; it
    trusts that CA only when ``trust`` is set. The ``admins`` may create pubsub nodes by
    publishing, as a push app server lets any account publish to it."""

    name = "prosody"

    def __init__(self, domain: str, authority: Authority, *, trust: bool, admins: Sequence[str],
                 smacks: bool = False) -> None:
        super().__init__()
        self.admins = admins
        self.domain = domain
        self.authority = authority
        self.trust = trust
        self.smacks = smacks

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        d = self.dir
        certs = d / "certs"
        certs.mkdir()
        for host in (self.domain, f"pubsub.{self.domain}"):
            self.authority.issue([host], certs / f"{host}.crt", certs / f"{host}.key")
        lines = [
            f"pidfile = {_lua_string(str(d / 'prosody.pid'))}",
            f"data_path = {_lua_string(str(d / 'data'))}",
            f"certificates = {_lua_string(str(certs))}",
            f"run_as_root = {'true' if os.geteuid() == 0 else 'false'}",
            'c2s_interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.port} }}",
            f"s2s_interfaces = {{ {_lua_string(self.domain)} }}",
            "s2s_ports = { 5269 }",
            'modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping" }',
            'authentication = "internal_hashed"',
            'password_hash = "SHA-256"',
            f"default_iteration_count = {ITERATIONS}",
            'storage = "internal"',
            "c2s_require_encryption = true",
            "s2s_require_encryption = true",
            "s2s_secure_auth = false",
            "admins = { " + "; ".join(_lua_string(a) for a in self.admins) + " }",
            f"log = {{ {{ levels = {{ min = \"debug\" }}, to = \"file\", filename = {_lua_string(str(d / 'prosody.log'))} }} }}",
        ]
        if self.trust:
            lines.append(f"ssl = {{ cafile = {_lua_string(str(self.authority.path))} }}")
        if self.smacks:
            # XEP-0198 on s2s; what a broken link leaves unacknowledged is sent again, not bounced.
            lines += ['modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "smacks" }',
                      "smacks_enabled_s2s = true", "smacks_s2s_resend = true"]
        lines += [
            f"VirtualHost {_lua_string(self.domain)}",
            f"Component {_lua_string(f'pubsub.{self.domain}')} \"pubsub\"",
            "    autocreate_on_publish = true",
        ]
        (d / "prosody.cfg.lua").write_text("\n".join(lines) + "\n")
        salt = str(uuid.uuid4())
        _, stored_key, server_key, _ = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
            password, iteration_count=ITERATIONS, salt=salt.encode()
        )
        accounts = d / "data" / _prosody_encode(self.domain) / "accounts"
        accounts.mkdir(parents=True)
        for name in usernames:
            (accounts / f"{_prosody_encode(name)}.dat").write_text(
                f'return {{ ["iteration_count"] = {ITERATIONS}; ["salt"] = {_lua_string(salt)}; '
                f'["server_key"] = "{server_key.hex()}"; ["stored_key"] = "{stored_key.hex()}"; }};\n'
            )
        return ["prosody", "-F", "--config", str(d / "prosody.cfg.lua")]

    def version(self) -> str:
        return "0.12"

    def log(self) -> str:
        path = self.dir / "prosody.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""


class ProsodyUser:
    """A slixmpp client of the Prosody peer."""

    def __init__(self, peer: ProsodyPeer, jid: str) -> None:
        self.peer = peer
        self.xmpp = ClientXMPP(jid, PASSWORD)
        for plugin in ("xep_0060", "xep_0199"):
            self.xmpp.register_plugin(plugin)
        ctx = self.xmpp.ssl_context
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.xmpp.enable_direct_tls = False
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_event_handler("message", self.messages.put_nowait)

    async def start(self) -> None:
        self.xmpp.connect("127.0.0.1", self.peer.port)
        async with asyncio.timeout(WAIT):
            await self.started.wait()
        self.xmpp.send_presence()

    async def next_message(self) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.messages.get()


class Relay(Proxy):
    """The test's TCP relay (tests/client/proxy.py), listening at a chosen address and port."""

    def __init__(self, listen: tuple[str, int], host: str, target: int) -> None:
        super().__init__(host, target)
        self.listen = listen

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self


class Federation:
    """A schnack server and a Prosody peer that know each other only by their domains; with
    relays, each direction's connections run through one the test can cut."""

    def __init__(self, server: Server, peer: ProsodyPeer, domain: str, relays: Sequence[Relay] = ()) -> None:
        self.server = server
        self.peer = peer
        self.domain = domain
        self.clients: list[Any] = []
        # schnack -> Prosody and Prosody -> schnack.
        self.outgoing: Relay | None = relays[0] if relays else None
        self.incoming: Relay | None = relays[1] if relays else None

    async def schnack_user(self, name: str) -> SlixClient:
        client = SlixClient(self.server, f"{name}@{self.domain}/desk")
        self.clients.append(client)
        client.xmpp.add_event_handler("message_error", client.messages.put_nowait)
        assert await client.start()
        client.xmpp.send_presence()
        return client

    async def prosody_user(self, name: str) -> ProsodyUser:
        user = ProsodyUser(self.peer, f"{name}@{self.peer.domain}/phone")
        self.clients.append(user)
        await user.start()
        return user


@contextlib.asynccontextmanager
async def federation(tmp_path: Path, *, trust: bool = False, smacks: bool = False,
                     relay: bool = False) -> AsyncIterator[Federation]:
    require_service(shutil.which("prosody") is not None, "Prosody is not installed (Debian package prosody)")
    ours, theirs = _addresses(2)
    authority = await asyncio.to_thread(Authority, tmp_path)
    peer = ProsodyPeer(theirs, authority, trust=trust, admins=[f"alice@{ours}"], smacks=smacks)
    await asyncio.to_thread(peer.start, ["bob"], PASSWORD)
    server: Server | None = None
    fed: Federation | None = None
    relays: list[Relay] = []
    try:
        overrides: dict[str, Any] = {}
        s2s_port = 5269
        hosts = {f"pubsub.{theirs}": f"{theirs}:5269"}
        if relay:
            # Prosody reaches schnack at ours:5269, where the relay listens; schnack listens behind it.
            s2s_port = free_port(ours)
            relays = [await Relay(("127.0.0.1", 0), theirs, 5269).start(),
                      await Relay((ours, 5269), ours, s2s_port).start()]
            hosts[theirs] = f"127.0.0.1:{relays[0].port}"
        if trust:
            await asyncio.to_thread(authority.issue, [ours], tmp_path / "ours.crt", tmp_path / "ours.key")
            overrides["tls"] = {"cert": str(tmp_path / "ours.crt"), "key": str(tmp_path / "ours.key")}
        server = Server(make_config(
            tmp_path,
            domains=[ours],
            listen={"s2s": [f"{ours}:{s2s_port}"]},
            s2s={"enabled": True, "hosts": hosts, "connect_timeout": 15,
                 **({"ca_file": str(authority.path)} if trust else {})},
            modules={"e2e": {"policy": "optional"}},
            **overrides,
        ))
        fed = Federation(server, peer, ours, relays)
        await server.start()
        await add_user(server, "alice", PASSWORD, host=ours)
        yield fed
    except BaseException:
        print(peer.log())
        raise
    finally:
        for client in fed.clients if fed is not None else ():
            with contextlib.suppress(Exception):
                await client.xmpp.disconnect()
        if server is not None:
            await server.stop()
        for each in relays:
            await each.stop()
        await asyncio.to_thread(peer.stop)


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not await check():  # noqa: ASYNC110 (the state lives in another process or in storage)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT} s: {what}") from None


async def test_messages_both_ways_through_prosody(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        alice = await fed.schnack_user("alice")
        bob = await fed.prosody_user("bob")
        alice.send(f"bob@{fed.peer.domain}/phone", "hello from schnack", "m1")
        got = await bob.next_message()
        assert (str(got["from"]), got["body"], got["id"]) == (f"alice@{fed.domain}/desk", "hello from schnack", "m1")
        reply = bob.xmpp.make_message(mto=JID(f"alice@{fed.domain}/desk"), mbody="hello from prosody", mtype="chat")
        reply.send()
        back = await alice.next_message()
        assert (str(back["from"]), back["body"]) == (f"bob@{fed.peer.domain}/phone", "hello from prosody")
        # Both directions were authenticated by dialback: neither server trusts the other's CA.
        assert fed.server.s2s.routes[(fed.domain, fed.peer.domain)].method == "dialback"
        pair = (fed.peer.domain, fed.domain)
        assert [s.authenticated[pair] for s in fed.server.s2s.incoming if pair in s.authenticated] == ["dialback"]


async def test_presence_subscription_across_servers(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        alice = await fed.schnack_user("alice")
        bob = await fed.prosody_user("bob")
        seen: asyncio.Queue[Any] = asyncio.Queue()
        alice.xmpp.add_event_handler("presence_available", seen.put_nowait)
        bob_jid = f"bob@{fed.peer.domain}"
        # slixmpp approves subscription requests and asks back (auto_authorize, auto_subscribe).
        alice.xmpp.send_presence(pto=bob_jid, ptype="subscribe")

        async def mutual() -> bool:
            item = await fed.server.storage.roster.get_item(fed.domain, "alice", bob_jid)
            return item is not None and item.subscription == "both"

        await _until(mutual, "alice and bob subscribed to each other")

        async def mutual_at_prosody() -> bool:
            roster = await bob.xmpp.get_roster(timeout=WAIT)
            assert roster is not None
            items = {str(item["jid"]): item["subscription"] for item in roster["roster"]}
            return items.get(f"alice@{fed.domain}") == "both"

        await _until(mutual_at_prosody, "bob's roster at Prosody shows the mutual subscription")
        async with asyncio.timeout(WAIT):
            while str((await seen.get())["from"]) != f"{bob_jid}/phone":
                pass


async def test_unknown_domain_bounces_with_remote_server_not_found(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:
        (nowhere,) = _addresses(1)  # nothing listens there
        alice = await fed.schnack_user("alice")
        alice.send(f"nobody@{nowhere}", "anyone there?", "lost-1")
        error = await alice.next_message()
        assert (error["type"], error["id"], str(error["from"])) == ("error", "lost-1", f"nobody@{nowhere}")
        assert error["error"]["condition"] == "remote-server-not-found"


async def test_forged_from_ends_the_stream_with_invalid_from(tmp_path: Path) -> None:
    """A second schnack is the authoritative server of the raw peer's domain; the raw peer knows
    its dialback secret, authenticates, sends one good stanza and then one from Prosody's domain."""
    async with federation(tmp_path / "a") as fed:
        (other,) = _addresses(1)
        secret = "the second server's dialback secret"
        second = Server(make_config(tmp_path / "b", domains=[other], listen={"s2s": [f"{other}:5269"]},
                                    s2s={"enabled": True, "dialback_secret": secret}))
        await second.start()
        try:
            alice = await fed.schnack_user("alice")
            peer = await RawPeer.connect(fed.domain, 5269)
            features = await peer.starttls(other, fed.domain)
            assert features.find("{urn:xmpp:features:dialback}dialback") is not None
            key = dialback_key(secret, fed.domain, other, peer.stream_id)
            peer.send(f"<db:result from='{other}' to='{fed.domain}'>{key}</db:result>")
            verdict = await peer.element()
            assert (verdict.tag, verdict.get("type")) == ("{jabber:server:dialback}result", "valid")
            peer.send(f"<message from='eve@{other}/x' to='alice@{fed.domain}/desk' type='chat'>"
                      "<body>legit</body></message>")
            assert (await alice.next_message())["body"] == "legit"
            peer.send(f"<message from='bob@{fed.peer.domain}/x' to='alice@{fed.domain}/desk' type='chat'>"
                      "<body>forged</body></message>")
            assert await peer.stream_error() == "invalid-from"
            peer.writer.close()
            assert alice.messages.empty()
        finally:
            await second.stop()


async def test_push_notification_reaches_an_app_server_on_prosody(tmp_path: Path) -> None:
    """XEP-0357 with the app server at another server: Prosody's pubsub service stands in for it."""
    async with federation(tmp_path) as fed:
        pubsub = f"pubsub.{fed.peer.domain}"
        phone = await fed.schnack_user("alice")
        enable = phone.xmpp.make_iq_set()
        enable.append(ET.fromstring(f"<enable xmlns='{PUSH}' jid='{pubsub}' node='{NODE}'/>"))
        assert (await enable.send(timeout=WAIT))["type"] == "result"
        await phone.xmpp.disconnect()
        await phone.disconnected.wait()
        bob = await fed.prosody_user("bob")
        message = bob.xmpp.make_message(mto=JID(f"alice@{fed.domain}"), mbody="wake up", mtype="chat")
        message.send()

        async def published() -> bool:
            try:
                items = await bob.xmpp.plugin["xep_0060"].get_items(JID(pubsub), NODE, timeout=WAIT)
            except Exception:
                return False
            return len(items["pubsub"]["items"]) > 0

        await _until(published, "the notification reached the app server")
        items = await bob.xmpp.plugin["xep_0060"].get_items(JID(pubsub), NODE, timeout=WAIT)
        fields = {
            field.get("var"): field.findtext("{jabber:x:data}value")
            for field in items.xml.iter("{jabber:x:data}field")
        }
        assert fields["message-count"] == "1"
        assert fields["last-message-sender"] == f"bob@{fed.peer.domain}"
        assert "wake up" not in ET.tostring(items.xml, encoding="unicode")


async def test_trusted_certificates_use_sasl_external(tmp_path: Path) -> None:
    async with federation(tmp_path, trust=True) as fed:
        alice = await fed.schnack_user("alice")
        bob = await fed.prosody_user("bob")
        alice.send(f"bob@{fed.peer.domain}/phone", "verified", "v1")
        assert (await bob.next_message())["body"] == "verified"
        assert fed.server.s2s.routes[(fed.domain, fed.peer.domain)].method == "SASL EXTERNAL"
        bob.xmpp.make_message(mto=JID(f"alice@{fed.domain}/desk"), mbody="verified too", mtype="chat").send()
        assert (await alice.next_message())["body"] == "verified too"
        pair = (fed.peer.domain, fed.domain)
        assert [s.authenticated[pair] for s in fed.server.s2s.incoming if pair in s.authenticated] == ["SASL EXTERNAL"]


async def _all_arrive(messages: asyncio.Queue[Any], expected: set[str], earlier: set[str] | None = None) -> None:
    """Wait until every id in ``expected`` arrived. A message sent again may come twice (the
    receiver dedupes by id), so ``earlier`` ones may come once more; nothing else may."""
    seen: set[str] = set()
    async with asyncio.timeout(WAIT):
        while not expected <= seen:
            got = await messages.get()
            assert got["type"] != "error", got
            seen.add(got["id"])
    assert seen <= expected | (earlier or set())


async def test_cut_link_to_prosody_loses_no_message(tmp_path: Path) -> None:
    """XEP-0198 on our outgoing stream: what vanished into a dying link is sent again."""
    async with federation(tmp_path, trust=True, smacks=True, relay=True) as fed:
        assert fed.outgoing is not None
        alice = await fed.schnack_user("alice")
        bob = await fed.prosody_user("bob")
        to = f"bob@{fed.peer.domain}/phone"
        for n in range(10):
            alice.send(to, f"before {n}", f"a{n}")
        await _all_arrive(bob.messages, {f"a{n}" for n in range(10)})
        route = fed.server.s2s.routes[(fed.domain, fed.peer.domain)]

        async def acknowledged() -> bool:
            return route.acks is not None and not route.acks.stanzas

        await _until(acknowledged, "Prosody acknowledged the first ten")
        # The link goes dead: what is written now reaches nobody, and then it breaks.
        fed.outgoing.swallowing = True
        for n in range(10):
            alice.send(to, f"lost? {n}", f"b{n}")

        async def unacknowledged() -> bool:
            return route.acks is not None and len(route.acks.stanzas) >= 10

        await _until(unacknowledged, "ten stanzas unacknowledged")
        fed.outgoing.cut()
        fed.outgoing.swallowing = False
        for n in range(10):
            alice.send(to, f"after {n}", f"c{n}")
        await _all_arrive(bob.messages, {f"{k}{n}" for k in "bc" for n in range(10)})
        assert route.connections == 2
        assert route.acks is not None
        assert alice.messages.empty()


async def test_cut_link_from_prosody_loses_no_message(tmp_path: Path) -> None:
    """XEP-0198 on Prosody's outgoing stream to us: we acknowledge, Prosody sends again."""
    async with federation(tmp_path, trust=True, smacks=True, relay=True) as fed:
        assert fed.incoming is not None
        alice = await fed.schnack_user("alice")
        bob = await fed.prosody_user("bob")

        def send(prefix: str) -> None:
            for n in range(10):
                message = bob.xmpp.make_message(mto=JID(f"alice@{fed.domain}/desk"), mbody=f"{prefix} {n}",
                                                mtype="chat")
                message["id"] = f"{prefix}{n}"
                message.send()

        send("a")
        await _all_arrive(alice.messages, {f"a{n}" for n in range(10)})
        pair = (fed.peer.domain, fed.domain)

        async def enabled() -> bool:
            # Prosody enables stream management once its queued stanzas went out.
            return any(s.handled is not None for s in fed.server.s2s.incoming if pair in s.authenticated)

        await _until(enabled, "Prosody enabled stream management on its stream to us")
        fed.incoming.swallowing = True
        send("b")
        await asyncio.sleep(1)
        fed.incoming.cut()
        fed.incoming.swallowing = False
        send("c")
        await _all_arrive(alice.messages, {f"{k}{n}" for k in "bc" for n in range(10)}, {f"a{n}" for n in range(10)})
        assert fed.incoming.connections == 2

