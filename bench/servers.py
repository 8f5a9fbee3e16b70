"""The servers under test, behind one interface: start with the benchmark users, stop.

The load generator only needs a :class:`Target`: where to connect, which domain, and which
process to measure. How a server is started and how its users are created is each driver's
business:

- :class:`SchnackDriver` runs ``schnack serve`` as a separate process from a temporary directory;
- :class:`ProsodyDriver` runs a private Prosody (Debian's package), never the system service;
- :class:`EjabberdDriver` runs a private ejabberd node (Debian's package), never the system service;
- :class:`ExternalDriver` points at a server someone else started, whose users already exist.

The private servers get the same kind of self-signed certificate (ECDSA P-256), free ports on
127.0.0.1, users sharing one password and one salt (the server's work per login does not depend
on the salt; the generator then derives the salted password once), and warnings-only logs.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import scramp

from schnack.server.tls import make_self_signed

from .ports import free_port
from .procfs import alive

DOMAIN = "bench.localhost"
REPO = Path(__file__).resolve().parent.parent  # where ``python -m bench...`` finds this package
ITERATIONS = 4096  # SCRAM iteration count of every account, as schnack derives them by default
ERL = "/usr/bin/erl"
ERL_LIBS = Path("/usr/lib/x86_64-linux-gnu")  # where Debian puts ejabberd and its Erlang libraries


@dataclass(frozen=True)
class Target:
    """Where the generator connects (STARTTLS port) and which process it measures."""

    name: str  # server and version, for the report
    host: str
    port: int
    domain: str
    pid: int | None = None  # None: the server's CPU time and memory are not measured


class ServerDriver(abc.ABC):
    """Starts (or finds) a server with the given users; :meth:`stop` undoes what :meth:`start` did."""

    @abc.abstractmethod
    def start(self, usernames: Sequence[str], password: str) -> Target: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> ServerDriver:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


class PrivateServer(ServerDriver):
    """A server process of our own: a temporary directory, a certificate, free ports; started
    in its own session (a Ctrl-C meant for the generator must not hit it mid-run) and stopped by
    its PID with SIGTERM, SIGKILL only if it has not gone after a grace period."""

    name = ""
    start_timeout = 30.0
    stop_grace = 10.0

    def __init__(self) -> None:
        self.dir = Path()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] | None = None  # the server's environment, if not ours

    def start(self, usernames: Sequence[str], password: str) -> Target:
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        try:
            self.port = free_port()
            # The same kind of certificate schnack makes for itself (ECDSA P-256).
            make_self_signed([DOMAIN], self.dir / "cert.pem", self.dir / "key.pem")
            argv = self.prepare(usernames, password)
            with (self.dir / "console.log").open("wb") as console:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=self._env,
                )
            self._wait_listening(self._proc.pid)
            return Target(f"{self.name} {self.version()}", "127.0.0.1", self.port, DOMAIN, self._proc.pid)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, pid: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                log = (self.dir / "console.log").read_text(errors="replace").strip()
                raise RuntimeError(f"{self.name} exited during start-up: {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} does not listen on port {self.port} after {self.start_timeout:g} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir != Path():
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = Path()

    @abc.abstractmethod
    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        """Write the configuration and the accounts into ``self.dir``; return the command line."""

    @abc.abstractmethod
    def version(self) -> str: ...


class SchnackDriver(PrivateServer):
    """``python -m schnack.cli serve`` with a generated configuration.

    The accounts are created through schnack's storage API in a one-off process
    (``bench.schnack_accounts``), which is much faster than one ``schnack admin user add`` each.
    Settings that differ from the defaults, and why: log level warning (as Prosody's); the
    certificate is the one Prosody gets; the per-connection read rate limit (Prosody has none by
    default) is raised so that it never throttles a sender at saturation.
    """

    name = "schnack"

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        # JSON strings and lists are valid TOML too: paths are quoted and escaped alike.
        ports = [json.dumps([f"127.0.0.1:{port}"]) for port in (self.port, free_port(), free_port(), free_port())]
        config = self.dir / "schnack.toml"
        config.write_text(
            "# Written by bench/servers.py for one benchmark run.\n"
            f"domains = {json.dumps([DOMAIN])}\n"
            f"data_dir = {json.dumps(str(self.dir / 'data'))}\n"
            'log_level = "warning"\n'
            "[tls]\n"
            f"cert = {json.dumps(str(self.dir / 'cert.pem'))}\n"
            f"key = {json.dumps(str(self.dir / 'key.pem'))}\n"
            "[listen]\n"
            f"c2s = {ports[0]}\nc2s_tls = {ports[1]}\nhttp = {ports[2]}\nhttps = {ports[3]}\n"
            "[limits]\n"
            "bytes_per_second = 1073741824\n"
            "burst_bytes = 1073741824\n"
        )
        created = subprocess.run(
            [sys.executable, "-m", "bench.schnack_accounts", str(config)],
            input=json.dumps({"password": password, "users": list(usernames), "iterations": ITERATIONS}),
            text=True,
            capture_output=True,
            timeout=600,
            cwd=REPO,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"creating the schnack accounts failed: {created.stderr.strip()[-2000:]}")
        return [sys.executable, "-m", "schnack.cli", "serve", "--config", str(config)]

    def version(self) -> str:
        # The server runs from the same packages as this process (sys.executable, and the same
        # PYTHONPATH): compiled with mypyc (make compiled) or not, which changes its CPU a quarter.
        from schnack.server import router

        build = "" if router.__file__ and router.__file__.endswith(".py") else " (mypyc)"
        return importlib.metadata.version("schnack") + build


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _prosody_encode(text: str) -> str:
    """How Prosody's datamanager turns a host or user name into a file name: %xx for non-alphanumerics."""
    return re.sub(r"[^A-Za-z0-9]", lambda m: "".join(f"%{b:02x}" for b in m.group().encode()), text)


# What schnack runs by default, no more and no less (mod_message, mod_presence, mod_iq, mod_offline
# and mod_c2s are always loaded), so that both do the same work per message: archiving included.
PROSODY_MODULES = (
    "roster", "saslauth", "tls", "disco", "ping", "version", "time", "lastactivity", "private", "vcard",
    "pep", "smacks", "carbons", "mam", "csi_simple", "blocklist",
)


class ProsodyDriver(PrivateServer):
    """A private Prosody: configuration, data and log under the temporary directory.

    Accounts are written as Prosody's ``internal_hashed`` files (a Lua table of salt, iteration
    count and hex SCRAM-SHA-256 keys), what ``prosodyctl register`` writes, ~1000 times faster.
    Nagle's algorithm is switched off as asyncio does for schnack: with delayed ACKs it would add
    ~40 ms to small writes and measure TCP instead of the server.
    """

    name = "prosody"

    @staticmethod
    def available() -> bool:
        return shutil.which("prosody") is not None

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        d = self.dir
        (d / "certs").mkdir()
        (d / "cert.pem").rename(d / "certs" / f"{DOMAIN}.crt")
        (d / "key.pem").rename(d / "certs" / f"{DOMAIN}.key")
        lines = [
            "-- Written by bench/servers.py for one benchmark run.",
            f"pidfile = {_lua_string(str(d / 'prosody.pid'))}",
            f"data_path = {_lua_string(str(d / 'data'))}",
            f"certificates = {_lua_string(str(d / 'certs'))}",
            # Prosody refuses to run as root unless told; a container may only have root.
            f"run_as_root = {'true' if os.geteuid() == 0 else 'false'}",
            'interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.port} }}",
            "s2s_ports = { }",
            "modules_enabled = { " + "; ".join(_lua_string(m) for m in PROSODY_MODULES) + " }",
            'modules_disabled = { "s2s"; "s2s_auth_certs" }',
            'authentication = "internal_hashed"',
            'password_hash = "SHA-256"',
            f"default_iteration_count = {ITERATIONS}",
            'storage = "internal"',
            "c2s_require_encryption = true",
            "network_settings = { nagle = false }",
            f"log = {{ {{ levels = {{ min = \"warn\" }}, to = \"file\", filename = {_lua_string(str(d / 'prosody.log'))} }} }}",
            f"VirtualHost {_lua_string(DOMAIN)}",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self._write_accounts(usernames, password)
        return ["prosody", "-F", "--config", str(self.config)]

    @property
    def config(self) -> Path:
        return self.dir / "prosody.cfg.lua"

    def _write_accounts(self, usernames: Sequence[str], password: str) -> None:
        salt = str(uuid.uuid4())  # Prosody's own salts are UUID strings too
        _, stored_key, server_key, _ = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
            password, iteration_count=ITERATIONS, salt=salt.encode()
        )
        record = (
            "return {\n"
            f'\t["iteration_count"] = {ITERATIONS};\n'
            f'\t["salt"] = {_lua_string(salt)};\n'
            f'\t["server_key"] = "{server_key.hex()}";\n'
            f'\t["stored_key"] = "{stored_key.hex()}";\n'
            "};\n"
        )
        accounts = self.dir / "data" / _prosody_encode(DOMAIN) / "accounts"
        accounts.mkdir(parents=True)
        for name in usernames:
            (accounts / f"{_prosody_encode(name)}.dat").write_text(record)

    def version(self) -> str:
        out = subprocess.run(
            ["prosodyctl", "--config", str(self.config), "about"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        match = re.search(r"^Prosody (\d\S*)", out, re.MULTILINE)
        return match.group(1) if match else "(unknown version)"


# The modules matching what schnack runs by default (see PROSODY_MODULES); mod_privacy is what
# mod_blocking builds on, mod_caps what PEP notifications use, and mod_mam archives every message.
EJABBERD_MODULES: dict[str, dict[str, object]] = {
    "mod_roster": {},
    "mod_disco": {},
    "mod_ping": {},
    "mod_version": {"show_os": False},
    "mod_time": {},
    "mod_last": {},
    "mod_private": {},
    "mod_vcard": {},
    "mod_caps": {},
    "mod_pubsub": {"plugins": ["flat", "pep"]},
    "mod_stream_mgmt": {},
    "mod_carboncopy": {},
    "mod_mam": {"default": "always", "db_type": "sql"},
    "mod_client_state": {},
    "mod_privacy": {},
    "mod_blocking": {},
    # A user's offline store holds up to 5,000 messages by default; the suite's burst may be larger.
    "mod_offline": {"access_max_user_messages": "max_user_offline_messages", "db_type": "sql"},
}

# Run in the ejabberd node once it has started. First the one SQLite connection gets schnack's
# durability setting (WAL synced at checkpoints, not at every commit). Then the first user is
# registered (ejabberd derives its SCRAM keys) and that record copied for every other user,
# straight into Mnesia: `ejabberdctl register` would start an Erlang node per user. The outcome
# appears at once under its name (a rename), never half written.
EJABBERD_ACCOUNTS = """
Outcome = try
    {ok, [Host, Password, [First | Rest]]} = file:consult(os:getenv("BENCH_USERS")),
    {updated, _} = ejabberd_sql:sql_query(Host, [<<"PRAGMA synchronous=NORMAL">>]),
    ok = ejabberd_auth:try_register(First, Host, Password),
    [Record] = mnesia:dirty_read(passwd, {First, Host}),
    lists:foreach(fun(User) -> ok = mnesia:dirty_write(setelement(2, Record, {User, Host})) end, Rest),
    <<"ok">>
catch Class:Reason ->
    io_lib:format("~p:~p", [Class, Reason])
end,
Ready = os:getenv("BENCH_READY"),
file:write_file(Ready ++ ".part", Outcome),
file:rename(Ready ++ ".part", Ready).
"""


def _erlang_binary(text: str) -> str:
    return "<<" + json.dumps(text) + "/utf8>>"


class EjabberdDriver(PrivateServer):
    """A private ejabberd (Debian's package): its own configuration, Mnesia spool and log under
    the temporary directory, and its own Erlang node.

    The node is started with ``erl`` directly rather than through ``ejabberdctl`` (which would
    switch to the package's system user and its directories). Its distribution port is fixed at
    a free port with ``-erl_epmd_port`` and ``-start_epmd false`` (OTP 23 and later), so that no
    EPMD is started or asked at all, and the node name and cookie are random per run: nothing is
    shared with the package's service or any other Erlang node on the machine. ``erl`` execs
    ``beam.smp``, so the process started is the one measured; SIGTERM makes the node stop in
    order (``init:stop/0``). Accounts: see :data:`EJABBERD_ACCOUNTS`. Accounts and rosters are in
    Mnesia, ejabberd's default; offline messages and the archive in SQLite, which needs Debian's
    erlang-p1-sqlite3 beside ejabberd.
    """

    name = "ejabberd"
    start_timeout = 60.0

    @staticmethod
    def available() -> bool:
        return (
            Path(ERL).exists()
            and any(ERL_LIBS.glob("ejabberd-*/ebin/ejabberd.app"))
            and any(Path("/usr/lib/erlang/lib").glob("p1_sqlite3-*/ebin/sqlite3.app"))
        )

    def prepare(self, usernames: Sequence[str], password: str) -> list[str]:
        d = self.dir
        listener: dict[str, object] = {
            "port": self.port,
            "ip": "127.0.0.1",
            "module": "ejabberd_c2s",
            "starttls_required": True,
            "max_stanza_size": 262144,
        }
        config = {
            "hosts": [DOMAIN],
            "loglevel": "warning",
            "certfiles": [str(d / "cert.pem"), str(d / "key.pem")],
            "listen": [listener],
            "auth_method": "internal",
            "auth_password_format": "scram",
            "auth_scram_hash": "sha256",
            "acl": {"local": {"user_regexp": ""}},
            "access_rules": {"local": {"allow": "local"}, "c2s": {"allow": "all"}},
            "shaper_rules": {"max_user_offline_messages": "infinity"},
            # Accounts stay in Mnesia (see EJABBERD_ACCOUNTS); what grows with the traffic goes
            # to SQLite, as ejabberd advises for the archive and as schnack stores by default.
            "default_db": "mnesia",
            "sql_type": "sqlite",
            "sql_database": str(d / "ejabberd.db"),
            "sql_pool_size": 1,
            "new_sql_schema": True,
            "s2s_access": "none",
            "modules": EJABBERD_MODULES,
        }
        # JSON is valid YAML: the configuration needs no YAML writer.
        (d / "ejabberd.yml").write_text(json.dumps(config, indent=1) + "\n")
        users = ", ".join(_erlang_binary(u) for u in usernames)
        (d / "users.eterm").write_text(f"{_erlang_binary(DOMAIN)}.\n{_erlang_binary(password)}.\n[{users}].\n")
        (d / "spool").mkdir()
        self._create_database(d / "ejabberd.db")
        self._env = {
            **os.environ,
            "EJABBERD_CONFIG_PATH": str(d / "ejabberd.yml"),
            "EJABBERD_LOG_PATH": str(d / "ejabberd.log"),
            "ERL_LIBS": str(ERL_LIBS),
            "ERL_CRASH_DUMP": str(d / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "BENCH_USERS": str(d / "users.eterm"),
            "BENCH_READY": str(d / "accounts.ready"),
            "HOME": str(d),
        }
        node = f"bench{uuid.uuid4().hex[:12]}@localhost"
        return [
            ERL, "-sname", node, "-setcookie", uuid.uuid4().hex, "-noinput",
            "-start_epmd", "false", "-erl_epmd_port", str(free_port()),
            # What ejabberdctl passes (kernel poll, 250,000 processes, 32,000 ports), and no
            # busy-waiting schedulers: they spin for a while before sleeping, CPU time that
            # /proc counts but that does no work, which neither other server spends.
            "+K", "true", "+P", "250000", "-env", "ERL_MAX_PORTS", "32000",
            "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none",
            "-mnesia", "dir", json.dumps(str(d / "spool")),
            "-s", "ejabberd", "-eval", EJABBERD_ACCOUNTS,
        ]  # fmt: skip

    @staticmethod
    def _create_database(path: Path) -> None:
        """ejabberd's own SQLite schema, in WAL mode as schnack's database (ejabberd would create
        the file in rollback-journal mode, one more fsync per commit)."""
        schema = next(ERL_LIBS.glob("ejabberd-*/priv/sql/lite.new.sql")).read_text()
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)

    def _wait_listening(self, pid: int) -> None:
        super()._wait_listening(pid)
        ready = self.dir / "accounts.ready"
        deadline = time.monotonic() + self.start_timeout
        while not ready.exists() and alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        outcome = ready.read_text() if ready.exists() else "no answer"
        if outcome != "ok":
            raise RuntimeError(f"creating the ejabberd accounts failed: {outcome}")

    def version(self) -> str:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "ejabberd"], capture_output=True, text=True, check=False
        ).stdout
        return out.split("-")[0] or "(unknown version)"


class ExternalDriver(ServerDriver):
    """A server started by someone else, whose accounts PREFIX0, PREFIX1, ... exist already."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def start(self, usernames: Sequence[str], password: str) -> Target:
        if self.target.pid is not None and not alive(self.target.pid):
            raise RuntimeError(f"server process {self.target.pid} is not running")
        return self.target

    def stop(self) -> None:
        """Nothing: the server belongs to whoever started it."""


DRIVERS: dict[str, type[PrivateServer]] = {
    "schnack": SchnackDriver,
    "prosody": ProsodyDriver,
    "ejabberd": EjabberdDriver,
}
SERVERS = tuple(DRIVERS)


def chosen_servers(parser: argparse.ArgumentParser, names: str) -> list[str]:
    """The servers a comma-separated ``--servers`` names; a parser error for one that is unknown
    or not installed."""
    servers = names.split(",")
    for server in servers:
        if server not in SERVERS:
            parser.error(f"--servers: unknown server {server!r} (known: {', '.join(SERVERS)})")
    if "prosody" in servers and not ProsodyDriver.available():
        parser.error("prosody is not installed (as root: bash .ci/bench-packages)")
    if "ejabberd" in servers and not EjabberdDriver.available():
        parser.error("ejabberd is not installed (as root: bash .ci/bench-packages)")
    return servers


def private_driver(name: str) -> PrivateServer:
    """A driver for one of :data:`SERVERS`."""
    return DRIVERS[name]()

