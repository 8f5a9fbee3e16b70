"""The Redis cluster bus behind Redis Sentinel, against real sentinels.

The tests start Redis groups of their own on free loopback ports: a primary, a replica and three
sentinels (quorum 2), all with passwords. The bus contract suite runs again on one such group,
reached through a ``redis+sentinel://`` URL that lists a dead sentinel first, and on a group that
speaks only TLS (``rediss+sentinel://``, certificates of a CA the test makes). Then, on a group per
test, the primary is killed (kill -9, along with a hung sentinel, as when its machine goes down;
over TLS too), hung (SIGSTOP, as a primary cut off from the network) or switched by hand: the
sentinels promote the replica, and the nodes must follow it, write their sessions there again (the
replica is made to miss one, as it would miss a write the primary took just before it died) and
keep delivering.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis.exceptions import RedisError

from bench.ports import free_port
from schnack.server.cluster import ClusterUnavailable, RedisBus, open_bus
from schnack.server.cluster.bus import Entry
from schnack.server.cluster.sentinel import SentinelTarget, is_sentinel_url, parse_sentinel_url
from schnack.server.config import ConfigError, build

from ...conftest import require_service
from . import test_bus_contract as contract
from .conftest import Cluster, eventually
from .test_bus_contract import Inbox, stanza

SERVICE = "schnack"
# Characters that must be escaped in the URL, to check that they are unescaped.
PASSWORD = "p@ss:word/1"
SENTINEL_PASSWORD = "sentinel secret"
PG = "postgresql://schnack@127.0.0.1/schnack"
# Generous bounds for a loaded machine; the tests end as soon as the condition holds.
FAILOVER = 60.0


@dataclass(frozen=True)
class Certificates:
    """A CA of its own and a certificate it signed for 127.0.0.1, with its key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path) -> Certificates:
    """A new CA and a certificate for 127.0.0.1 in ``directory``. The certificate serves clients
    too: Redis presents it when it connects to the others (replication, sentinels)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "schnack test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    made = Certificates(directory / "ca.pem", directory / "redis.pem", directory / "redis.key")
    made.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    made.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return made


def _promotable(replica: dict[str, Any]) -> bool:
    """Whether a sentinel would pick ``replica`` in a failover now. It learns of a replica from
    the primary's INFO some seconds before it has the replica's own: until then, a failover
    finds no replica to promote (NOGOODSLAVE). So: connected, answering pings, and with an INFO
    reply well within the 30 s a sentinel trusts one for."""
    return (not replica["is_sdown"] and not replica["is_disconnected"]
            and replica["info-refresh"] < 10_000 and replica["last-ok-ping-reply"] < 5_000)


class RedisGroup:
    """A primary, a replica and three sentinels of the test's own, without persistence; with
    ``tls``, each of them listens on TLS only and they speak TLS among themselves."""

    def __init__(self, workdir: Path, *, tls: bool = False) -> None:
        self.workdir = workdir
        self.primary = free_port()
        self.replica = free_port()
        self.sentinels = [free_port() for _ in range(3)]
        # Listed first in the URL and never started: clients must go on to the next sentinel.
        self.dead_sentinel = free_port()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.certificates = make_certificates(workdir / "tls") if tls else None

    def url(self, db: int = 2, *, host: str = "127.0.0.1", ca: Path | None = None, check_hostname: bool = True) -> str:
        """The ``redis+sentinel://`` URL of the group (``rediss+sentinel://`` with TLS, trusting
        ``ca``, by default the group's own CA), naming the sentinels by ``host``."""
        hosts = ",".join(f"{host}:{port}" for port in (self.dead_sentinel, *self.sentinels))
        url = (f"redis+sentinel://:{quote(PASSWORD, safe='')}@{hosts}/{SERVICE}/{db}"
               f"?sentinel_password={quote(SENTINEL_PASSWORD)}")
        if self.certificates is None:
            return url
        url = f"rediss{url.removeprefix('redis')}&ssl_ca_certs={quote(str(ca or self.certificates.ca))}"
        return url if check_hostname else f"{url}&ssl_check_hostname=false"

    def _tls(self) -> dict[str, Any]:
        """What a redis-py client needs to reach the group (by the address its certificates carry)."""
        if self.certificates is None:
            return {"host": "127.0.0.1"}
        return {"host": "127.0.0.1", "ssl": True, "ssl_ca_certs": str(self.certificates.ca)}

    def client(self, port: int, password: str, **options: Any) -> aioredis.Redis:
        """A client of the server or sentinel on ``port`` alone."""
        return aioredis.Redis(port=port, password=password, socket_timeout=2, **self._tls(), **options)

    def _spawn(self, port: int, *args: str) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        workdir = self.workdir / str(port)
        workdir.mkdir()
        listen = ["--port", str(port)]
        if self.certificates is not None:
            # No client certificate is asked for: schnack sends none.
            listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.certificates.cert),
                      "--tls-key-file", str(self.certificates.key), "--tls-ca-cert-file", str(self.certificates.ca),
                      "--tls-replication", "yes", "--tls-auth-clients", "no"]
        self.processes[port] = subprocess.Popen(
            [binary, *args, *listen, "--bind", "127.0.0.1", "--dir", str(workdir), "--logfile", str(workdir / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start every process and wait until the sentinels know the replica and each other."""
        data = ("--save", "", "--appendonly", "no", "--requirepass", PASSWORD, "--masterauth", PASSWORD)
        self._spawn(self.primary, *data)
        # Writable, so that a test can make it miss a write (see diverge()).
        self._spawn(self.replica, *data, "--replicaof", "127.0.0.1", str(self.primary), "--replica-read-only", "no")
        for port in self.sentinels:
            config = self.workdir / f"sentinel-{port}.conf"
            # Sentinel rewrites its configuration file as it learns, so each has its own.
            config.write_text(
                f'requirepass "{SENTINEL_PASSWORD}"\n'
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
                f'sentinel auth-pass {SERVICE} "{PASSWORD}"\n'
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
            )
            self._spawn(port, str(config), "--sentinel")
        deadline = time.monotonic() + FAILOVER
        while not self._ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"the Redis group did not come up in {FAILOVER} s; logs in {self.workdir}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with redis.Redis(port=self.replica, password=PASSWORD, socket_timeout=1, **self._tls()) as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for port in self.sentinels:
                with redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1, **self._tls()) as sentinel:
                    replicas = sentinel.sentinel_slaves(SERVICE)
                    if not any(r["port"] == self.replica and _promotable(r) for r in replicas):
                        return False
                    if len(sentinel.sentinel_sentinels(SERVICE)) < len(self.sentinels) - 1:
                        return False
        except (RedisError, OSError):
            return False
        return True

    def kill(self, port: int) -> None:
        """Kill the server on ``port`` (kill -9)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(30)

    def hang(self, port: int) -> None:
        """Stop the server or sentinel on ``port`` (SIGSTOP): its connections stay open, and
        nothing answers."""
        self.processes[port].send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        """Kill every process (a stopped one too)."""
        for port in list(self.processes):
            self.kill(port)

    async def switch(self) -> None:
        """Fail over by hand (``SENTINEL FAILOVER``): the old primary lives on as a replica."""
        async with self.client(self.sentinels[-1], SENTINEL_PASSWORD) as sentinel:
            assert await sentinel.sentinel_failover(SERVICE)

    async def primary_port(self) -> int | None:
        """The port of the primary the last sentinel names (the tests hang only the first)."""
        async with self.client(self.sentinels[-1], SENTINEL_PASSWORD) as sentinel:
            address = await sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1]) if isinstance(address, tuple) else None

    async def diverge(self, key: str, field: str) -> None:
        """Drop ``field`` of the hash ``key`` on the replica only, as a write it never got."""
        async with self.client(self.replica, PASSWORD, db=2) as replica:
            # Replication is asynchronous: the write may not be there yet.
            await eventually(lambda: replica.hexists(key, field), bool)
            assert await replica.hdel(key, field) == 1


@contextlib.contextmanager
def redis_group(workdir: Path, *, tls: bool = False) -> Iterator[RedisGroup]:
    """A started :class:`RedisGroup`, killed at the end."""
    require_service(shutil.which("redis-server") is not None, "redis-server is not installed")
    group = RedisGroup(workdir, tls=tls)
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="module")
def shared_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisGroup]:
    """One group for the contract suite (each test has its own key prefix)."""
    with redis_group(tmp_path_factory.mktemp("sentinel")) as group:
        yield group


@pytest.fixture(scope="module")
def tls_shared_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisGroup]:
    """One group on TLS, for the contract suite and the tests of its certificates."""
    with redis_group(tmp_path_factory.mktemp("sentinel-tls"), tls=True) as group:
        yield group


@pytest.fixture
def group(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisGroup]:
    """A group of the test's own, for a test that fails its primary over; on TLS when the test
    passes True (indirect parametrization)."""
    with redis_group(tmp_path, tls=getattr(request, "param", False)) as made:
        yield made


@dataclass
class SentinelCluster(Cluster):
    """Bus nodes on a Redis that Sentinel names."""

    backend: str = "redis"

    async def close(self) -> None:
        # The group is private: its keys go with it.
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await bus.stop()


@pytest.fixture(params=["plain", "tls"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """For the contract suite below: nodes on a shared group, through Sentinel, once without TLS
    and once with it."""
    group: RedisGroup = request.getfixturevalue("tls_shared_group" if request.param == "tls" else "shared_group")
    made = SentinelCluster(url=group.url())
    try:
        yield made
    finally:
        await made.close()


# The bus contract (test_bus_contract.py), run again through Sentinel.
test_publish_reaches_the_node_it_names = contract.test_publish_reaches_the_node_it_names
test_messages_arrive_in_the_order_published = contract.test_messages_arrive_in_the_order_published
test_publish_to_a_node_that_is_not_there_is_refused = contract.test_publish_to_a_node_that_is_not_there_is_refused
test_directory_register_lookup_unregister = contract.test_directory_register_lookup_unregister
test_a_full_jid_taken_over_by_another_node_stays_with_it = contract.test_a_full_jid_taken_over_by_another_node_stays_with_it
test_nodes_lists_live_nodes_and_their_sessions = contract.test_nodes_lists_live_nodes_and_their_sessions
test_a_node_whose_heartbeats_stop_expires = contract.test_a_node_whose_heartbeats_stop_expires
test_a_node_that_leaves_takes_its_sessions_along = contract.test_a_node_that_leaves_takes_its_sessions_along
test_unknown_versions_and_garbage_are_dropped_and_logged = contract.test_unknown_versions_and_garbage_are_dropped_and_logged
test_a_failing_handler_does_not_stop_the_node = contract.test_a_failing_handler_does_not_stop_the_node
test_info_travels_with_the_entry_and_only_its_node_writes_it = (
    contract.test_info_travels_with_the_entry_and_only_its_node_writes_it)
test_the_node_that_reaps_a_dead_one_gets_its_entries_once = contract.test_the_node_that_reaps_a_dead_one_gets_its_entries_once
test_a_claim_stays_with_its_live_owner_and_passes_on_when_it_dies = (
    contract.test_a_claim_stays_with_its_live_owner_and_passes_on_when_it_dies)
test_a_deliver_that_asks_is_answered_with_done = contract.test_a_deliver_that_asks_is_answered_with_done


@pytest.mark.parametrize(("fail", "group"), [("kill", False), ("hang", False), ("switch", False), ("kill", True)],
                         ids=["kill", "hang", "switch", "kill-tls"], indirect=["group"])
async def test_the_bus_follows_the_primary_sentinel_promotes(group: RedisGroup, fail: str) -> None:
    cluster = SentinelCluster(url=group.url())
    try:
        a = await cluster.node("a", heartbeat_interval=0.2, node_ttl=5.0)
        b = await cluster.node("b", heartbeat_interval=0.2, node_ttl=5.0)
        assert isinstance(a, RedisBus)
        inbox_a = Inbox(a)
        await a.register("alice@example.org/phone", "a")
        await a.set_info("alice@example.org/phone", "available")
        await b.register("bob@example.org/desk", "b")
        before = stanza("alice@example.org/phone", "bob@example.org/desk", "before")
        assert await b.publish("a", before)
        await inbox_a.wait(count=1)
        await group.diverge(f"{cluster.prefix}dir:alice@example.org", "alice@example.org/phone")

        if fail == "kill":
            # The primary's machine goes down, with the sentinel the nodes asked so far on it.
            group.hang(group.sentinels[0])
            group.kill(group.primary)
        elif fail == "hang":
            group.hang(group.primary)
        else:
            await group.switch()
        await eventually(group.primary_port, lambda port: port == group.replica, timeout=FAILOVER)

        async with group.client(group.replica, PASSWORD, db=2) as promoted:
            # a wrote its session to the promoted replica, which had missed it, and both listen there.
            await eventually(lambda: promoted.hget(f"{cluster.prefix}dir:alice@example.org", "alice@example.org/phone"),
                             lambda node: node == b"a", timeout=FAILOVER)
            await eventually(lambda: promoted.pubsub_numsub(f"{cluster.prefix}to:a", f"{cluster.prefix}to:b"),
                             lambda counts: [count for _, count in counts] == [1, 1], timeout=FAILOVER)
        after = stanza("alice@example.org/phone", "bob@example.org/desk", "after")
        assert await b.publish("a", after)
        await inbox_a.wait(count=2)
        assert inbox_a.messages[-1] == after
        assert await b.entries("alice@example.org") == {"alice@example.org/phone": Entry("a", "available")}
        assert await a.lookup("bob@example.org") == {"bob@example.org/desk": "b"}
        await a.register("alice@example.org/tablet", "a")
        assert await b.lookup("alice@example.org") == {"alice@example.org/phone": "a", "alice@example.org/tablet": "a"}
        assert set(await b.nodes()) == {"a", "b"}
    finally:
        await cluster.close()


def test_sentinel_urls_name_their_parts() -> None:
    url = "redis+sentinel://user:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]/mymaster/3?sentinel_password=s%20p"
    assert parse_sentinel_url(url) == SentinelTarget(
        (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379)), "mymaster", 3, "user", "p@ss", "s p")
    assert parse_sentinel_url("redis+sentinel://h/m") == SentinelTarget((("h", 26379),), "m")


def test_tls_sentinel_urls_name_their_parts_and_options() -> None:
    url = ("rediss+sentinel://:p%40ss@10.0.0.1,10.0.0.2:26380/mymaster/3"
           "?ssl_check_hostname=false&sentinel_password=s&ssl_ca_certs=/etc/redis/ca%20bundle.pem")
    assert parse_sentinel_url(url) == SentinelTarget(
        (("10.0.0.1", 26379), ("10.0.0.2", 26380)), "mymaster", 3, None, "p@ss", "s",
        tls=True, ssl_ca_certs="/etc/redis/ca bundle.pem", ssl_check_hostname=False)
    # The system's CA bundle, and certificates that must name the host.
    assert parse_sentinel_url("rediss+sentinel://h/m?ssl_check_hostname=true") == SentinelTarget(
        (("h", 26379),), "m", tls=True, ssl_ca_certs=None, ssl_check_hostname=True)
    assert parse_sentinel_url("rediss+sentinel://h/m") == parse_sentinel_url("rediss+sentinel://h/m?ssl_check_hostname=true")
    assert not parse_sentinel_url("redis+sentinel://h/m").tls


@pytest.mark.parametrize(("url", "sentinel"), [
    ("redis+sentinel://h/m", True), ("rediss+sentinel://h/m", True), ("redis://h", False), ("rediss://h", False),
])
def test_both_sentinel_schemes_are_sentinel_urls(url: str, sentinel: bool) -> None:
    assert is_sentinel_url(url) is sentinel


@pytest.mark.parametrize("url", ["redis+sentinel://h1,h2/mymaster", "rediss+sentinel://h1,h2/mymaster"])
def test_a_sentinel_url_makes_a_redis_node(tmp_path: Path, url: str) -> None:
    config = build({"storage": {"url": PG}, "cluster": {"redis_url": url}}, tmp_path)
    assert isinstance(open_bus(config.cluster), RedisBus)


@pytest.mark.parametrize(("url", "error"), [
    ("redis+sentinel://:secret@h1:26379", "name the service the sentinels monitor after the hosts: "
     "redis+sentinel://host:26379/mymaster, got 'redis+sentinel://:***@h1:26379'"),
    ("redis+sentinel:///mymaster", "list the sentinels as host:port separated by commas"),
    ("redis+sentinel://h1,,h2/mymaster", "list the sentinels as host:port separated by commas"),
    ("redis+sentinel://h1:70000/mymaster", "'h1:70000' is not a sentinel host:port"),
    ("redis+sentinel://h1/mymaster/zero", "after the service name only a database number may follow (/mymaster/0)"),
    ("redis+sentinel://h1/mymaster/\u00b2", "after the service name only a database number may follow (/mymaster/0)"),
    ("redis+sentinel://h1/mymaster?sentinel=x", "unknown parameter 'sentinel' (known: sentinel_password)"),
    ("rediss+sentinel://:secret@h1:26379", "name the service the sentinels monitor after the hosts: "
     "rediss+sentinel://host:26379/mymaster, got 'rediss+sentinel://:***@h1:26379'"),
    ("rediss+sentinel://h1,/mymaster", "list the sentinels as host:port separated by commas: "
     "rediss+sentinel://h1:26379,h2:26379/mymaster"),
    ("rediss+sentinel://h1/mymaster?ssl_verify=none", "unknown parameter 'ssl_verify' "
     "(known: sentinel_password, ssl_ca_certs, ssl_check_hostname)"),
    ("redis+sentinel://:secret@h1/mymaster?ssl_ca_certs=/ca.pem",
     "parameter 'ssl_ca_certs' is for TLS, which needs a rediss+sentinel:// URL, got 'redis+sentinel://:***@h1/mymaster'"),
    ("rediss+sentinel://h1/mymaster?ssl_check_hostname=no", "ssl_check_hostname is true or false, got 'no'"),
    ("rediss+sentinel://:secret@h1/mymaster?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs: no such file: /no/such/ca.pem"),
])
def test_a_bad_sentinel_url_is_a_clear_config_error(tmp_path: Path, url: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({"storage": {"url": PG}, "cluster": {"redis_url": url}}, tmp_path)
    assert str(info.value).startswith(f"cluster.redis_url: {error}")
    assert "secret" not in str(info.value)


async def test_no_sentinel_at_start_is_a_clear_error_without_the_password() -> None:
    url = f"redis+sentinel://:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/{SERVICE}"
    bus = RedisBus(url, "a", op_timeout=1.0)
    with pytest.raises(ClusterUnavailable, match=r"cannot reach Redis at redis\+sentinel://:\*\*\*@127\.0\.0\.1") as info:
        await bus.start()
    assert str(info.value).endswith(f"/{SERVICE}: No master found for '{SERVICE}': no sentinel answers, or they fail over now")
    assert "p@ss" not in str(info.value) and "p%40ss" not in str(info.value)


async def test_a_ca_that_did_not_sign_the_sentinels_is_a_clear_error_at_start(
        tls_shared_group: RedisGroup, tmp_path: Path) -> None:
    other = make_certificates(tmp_path)
    bus = RedisBus(tls_shared_group.url(ca=other.ca), "a", op_timeout=1.0)
    with pytest.raises(ClusterUnavailable, match=r"cannot reach Redis at rediss\+sentinel://:\*\*\*@127\.0\.0\.1") as info:
        await bus.start()
    head, _, why = str(info.value).partition(": TLS with the sentinels fails: ")
    assert head.endswith(f"/{SERVICE}/2: No master found for '{SERVICE}'")
    # OpenSSL's own words follow (they differ between its versions).
    assert why.startswith("certificate verify failed: ")
    assert "p@ss" not in str(info.value) and "p%40ss" not in str(info.value)


async def test_sentinels_named_otherwise_than_their_certificates_need_ssl_check_hostname_false(
        tls_shared_group: RedisGroup) -> None:
    # The certificates carry 127.0.0.1 only; the sentinels name the primary by that address.
    checked = RedisBus(tls_shared_group.url(host="localhost"), "a", op_timeout=1.0)
    with pytest.raises(ClusterUnavailable) as info:
        await checked.start()
    assert str(info.value).endswith(
        "TLS with the sentinels fails: certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost'")
    cluster = SentinelCluster(url=tls_shared_group.url(host="localhost", check_hostname=False))
    try:
        a = await cluster.node("a")
        b = await cluster.node("b")
        inbox = Inbox(b)
        message = stanza("bob@example.org/desk", "alice@example.org/phone", "hi")
        assert await a.publish("b", message)
        await inbox.wait(count=1)
        assert inbox.messages == [message]
    finally:
        await cluster.close()
