"""``schnack``: run the server (``serve``), check its configuration, and administer it; the client
commands (``login``, ``send``, ``listen``, ...) are in client.py.

Every failure is one line on stderr and a non-zero exit: 2 for a bad configuration or usage,
130 for an interrupt (Ctrl-C), 1 for anything else. schnack's own warnings (a contact's new OMEMO
key) are lines on stderr too; other libraries' log records only from ERROR up (``serve`` logs
them all, at its configured level). A command whose standard output is closed by
its reader (``schnack listen | head -1``) ends silently with 141, as the tools that SIGPIPE ends
(128 + 13): the reader had what it wanted, and a pipeline run with ``pipefail`` still sees that
the command did not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.exceptions import NoArgsIsHelpError

from ..server import admin as admin_channel
from ..server.config import Config, ConfigError, load
from ..xmpp.jid import JID, JIDError
from .call_history import calls
from .calls import answer, call
from .chat import chat
from .check import check as compliance_check
from .client import COMMANDS as CLIENT_COMMANDS
from .client import broken_pipe, read_password
from .files import COMMANDS as FILE_COMMANDS
from .groups import group, key_warnings
from .phone import register
from .verify import verify

if TYPE_CHECKING:
    from ..xmpp.sasl import ScramCredential

T = TypeVar("T")

config_option = click.option(
    "--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False),
    envvar="SCHNACK_CONFIG", help="TOML configuration file (default: built-in defaults, data in ./data).",
)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"schnack: {message}", err=True)
    sys.exit(code)


def _os_error(err: OSError) -> str:
    """The line for a file or directory the command cannot use."""
    return f"cannot use {err.filename}: {err.strerror}"


def _load(config_path: Path | None) -> Config:
    try:
        config = load(config_path)
        # Building the server checks every module's options too, without opening anything.
        from ..server.app import build_modules

        build_modules(_NoServer(config), config)  # type: ignore[arg-type]
        return config
    except ConfigError as err:
        _fail(f"bad configuration: {err}", 2)
        raise AssertionError from None


class _NoServer:
    """Enough of a server for modules to be constructed and their options checked."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hosts = frozenset(config.domains)


def _run(coro: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await coro

    return asyncio.run(wrap())


def _usage_error(err: click.UsageError, command_path: str) -> None:
    """End with the one line of a usage error, naming the help of the command it is about; a group
    without its command shows its help as click does, since that is what was asked for."""
    if isinstance(err, NoArgsIsHelpError):
        err.show()
        sys.exit(err.exit_code)
    where = err.ctx.command_path if err.ctx is not None else command_path
    _fail(f"{err.format_message().rstrip('.')} (see '{where} --help')", err.exit_code)


class _Schnack(click.Group):
    """The command group; an interrupt ends any command with one line and status 130 (128 + SIGINT),
    where click would print "Aborted!" and exit 1, a closed standard output silently with 141, and
    a usage error (an unknown command or option, a missing argument) with one line and status 2,
    where click would print the usage and a hint around it; a group without its command still
    shows its help."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        # schnack's own options are parsed here, before invoke: `schnack --bogus`.
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as err:
            _usage_error(err, info_name or "schnack")
            raise AssertionError from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            _usage_error(err, ctx.command_path)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError as err:
            broken_pipe(err)


@click.group(cls=_Schnack)
@click.version_option(package_name="schnack")
def main() -> None:
    """schnack: a self-hosted, end-to-end encrypted messenger that speaks XMPP."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[_terminal_handler()])


class _OwnWarnings(logging.Filter):
    """schnack's own warnings reach the terminal (a contact's new OMEMO key above all), other
    libraries' records only from ERROR up: their warnings (python-omemo's about its own device
    missing from a first device list, which it then publishes) are no news to the user and read
    like failures."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.partition(".")[0] == "schnack"


def _terminal_handler() -> logging.Handler:
    """Log records on stderr as bare lines, as Python shows them when nothing is configured."""
    handler = logging.StreamHandler()
    handler.addFilter(_OwnWarnings())
    return handler


# How long the event loop's thread keeps the GIL while another thread waits for it. SQLite's
# thread needs it back after each statement it runs; with CPython's 5 ms it waited that long
# whenever the loop was busy, and an archive commit took several times its own work
# (docs/benchmarks.md, "Threads and the GIL").
_SWITCH_INTERVAL = 0.0005


@main.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    config = _load(config_path)
    # The server's log has every library's records, at the configured level.
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    from ..server.app import Server
    from ..server.cluster.redis import ClusterUnavailable
    from ..server.collector import Collector
    from ..server.storage import StorageError

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = Server(config)
        try:
            await server.start()
        except ClusterUnavailable as err:
            await server.stop()
            _fail(f"cannot join the cluster: {err}")
        except StorageError as err:
            await server.stop()
            _fail(f"cannot open storage: {err}")
        except OSError as err:
            await server.stop()
            # A file (the data directory, a certificate) rather than an address.
            _fail(_os_error(err) if err.filename else f"cannot listen: {err}")
        except BaseException:
            # Storage runs a worker thread; leaving it open would keep the process alive.
            await server.stop()
            raise
        collector = Collector(lambda: server.connections_ended, lambda: len(server.connections))
        collector.start()
        _announce(server)
        # SIGINT/SIGTERM, or the end of a drain (``schnack admin drain``).
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.drained.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        logging.getLogger("schnack").info("shutting down")
        await collector.stop()
        await server.stop()

    sys.setswitchinterval(_SWITCH_INTERVAL)
    runner: Callable[[Any], Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    runner(run())


def _announce(server: Any) -> None:
    config: Config = server.config
    domain = config.domains[0]
    ports = {name: [port for _, port in addrs] for name, addrs in server.bound.items()}
    lines = [
        f"schnack is serving {', '.join(config.domains)} (data in {config.data_dir})",
        f"  XMPP apps: connect to {domain}, port {ports.get('c2s', ['-'])[0]} (STARTTLS)"
        f" or {ports.get('c2s_tls', ['-'])[0]} (direct TLS)",
        f"  WebSocket: ws://{domain}:{ports.get('http', ['-'])[0]}/xmpp-websocket,"
        f" wss://{domain}:{ports.get('https', ['-'])[0]}/xmpp-websocket",
        *([f"  web client: {webclient.announcement()}"] if (webclient := server.modules.get("webclient")) else []),
        *([f"  phone sign-up: {phone.announcement()}"] if (phone := server.modules.get("phone")) else []),
        f"  certificate: {server.tls.cert_path}",
        f"  add a user:  schnack admin user add alice@{domain}"
        + (f" --config {config.source}" if config.source else ""),
    ]
    click.echo("\n".join(lines), err=True)


@main.group()
def config() -> None:
    """Configuration tools."""


@config.command("check")
@config_option
def config_check(config_path: Path | None) -> None:
    """Check the configuration and exit: 0 if good, 2 with the offending key if not."""
    cfg = _load(config_path)
    click.echo(f"configuration OK: domains {', '.join(cfg.domains)}; modules {', '.join(cfg.modules)}")


@main.group()
def admin() -> None:
    """Administer accounts and the running server."""


@admin.group()
def user() -> None:
    """Accounts: add, delete, change password, list."""


def _account(jid: str, config: Config) -> tuple[str, str]:
    try:
        parsed = JID.parse(jid)
    except JIDError as err:
        _fail(f"invalid JID {jid!r}: {err}", 2)
        raise AssertionError from None
    if parsed.local is None or parsed.resource is not None:
        _fail(f"{jid!r} is not an account address (user@domain)", 2)
    if parsed.domain not in config.domains:
        _fail(f"this server does not serve {parsed.domain} (domains: {', '.join(config.domains)})", 2)
    assert parsed.local is not None
    return parsed.domain, parsed.local


async def _with_storage(config: Config, action: Callable[[Any], Awaitable[T]]) -> T:
    from ..server.storage import StorageError, open_storage

    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _fail(_os_error(err))
    try:
        storage = await open_storage(config.storage_url)
    except StorageError as err:
        _fail(f"cannot open storage: {err}")
        raise AssertionError from None
    try:
        return await action(storage)
    finally:
        await storage.close()


password_stdin = click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")


def _new_credentials(from_stdin: bool) -> dict[str, ScramCredential]:
    """The SCRAM keys of a new password read as the user chose; one SCRAM cannot take fails."""
    from ..xmpp.sasl import UNUSABLE_PASSWORD, derive_credentials, usable_password

    password = read_password(from_stdin, confirm=True)
    if not usable_password(password):
        _fail(UNUSABLE_PASSWORD, 2)
    return derive_credentials(password)


@user.command("add")
@config_option
@password_stdin
@click.argument("jid")
def user_add(config_path: Path | None, password_stdin: bool, jid: str) -> None:
    """Create the account JID."""
    from ..server import deletion
    from ..server.storage import AlreadyExists

    cfg = _load(config_path)
    host, username = _account(jid, cfg)
    credentials = _new_credentials(password_stdin)

    async def add(storage: Any) -> None:
        if await deletion.pending(storage, host, username):
            _fail(f"{username}@{host} is still being deleted: start the server, which finishes that, then add it")
        try:
            await storage.accounts.create(host, username, credentials)
        except AlreadyExists:
            _fail(f"{username}@{host} already exists")

    _run(_with_storage(cfg, add))
    click.echo(f"created {username}@{host}")


@user.command("passwd")
@config_option
@password_stdin
@click.argument("jid")
def user_passwd(config_path: Path | None, password_stdin: bool, jid: str) -> None:
    """Set a new password for JID."""
    cfg = _load(config_path)
    host, username = _account(jid, cfg)
    credentials = _new_credentials(password_stdin)

    async def passwd(storage: Any) -> bool:
        ok: bool = await storage.accounts.set_credentials(host, username, credentials)
        return ok

    if not _run(_with_storage(cfg, passwd)):
        _fail(f"no such account: {username}@{host}")
    click.echo(f"password changed for {username}@{host}")


@user.command("delete")
@config_option
@click.argument("jid")
def user_delete(config_path: Path | None, jid: str) -> None:
    """Delete the account JID with all its data; its sessions are disconnected."""
    from ..server import deletion

    cfg = _load(config_path)
    host, username = _account(jid, cfg)
    if (cfg.data_dir / admin_channel.SOCKET_NAME).exists():
        # A running server deletes it itself: contacts are told and sessions closed.
        try:
            _run(admin_channel.request(cfg.data_dir, "delete-user", jid=f"{username}@{host}"))
        except admin_channel.AdminError as err:
            if "no server is running" not in str(err):
                _fail(str(err))
                raise AssertionError from None
        else:
            click.echo(f"deleted {username}@{host}")
            return

    async def delete(storage: Any) -> bool:
        if await storage.accounts.get(host, username) is None:
            return False
        # What the modules keep elsewhere (uploads, group affiliations) goes when a server starts.
        await deletion.note_stopped(storage, host, username)
        ok: bool = await storage.accounts.delete(host, username)
        return ok

    if not _run(_with_storage(cfg, delete)):
        _fail(f"no such account: {username}@{host}")
    click.echo(f"deleted {username}@{host}")


@user.command("list")
@config_option
@click.argument("domain", required=False)
def user_list(config_path: Path | None, domain: str | None) -> None:
    """List the accounts of DOMAIN (default: every domain served)."""
    cfg = _load(config_path)
    domains = [domain] if domain else cfg.domains
    for d in domains:
        if d not in cfg.domains:
            _fail(f"this server does not serve {d}", 2)

    async def listing(storage: Any) -> list[str]:
        names: list[str] = []
        for d in domains:
            names += [f"{u}@{d}" for u in await storage.accounts.list(d)]
        return names

    for name in _run(_with_storage(cfg, listing)):
        click.echo(name)


@admin.command("sessions")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def sessions(config_path: Path | None, as_json: bool) -> None:
    """List the sessions of the running server."""
    cfg = _load(config_path)
    try:
        reply = _run(admin_channel.request(cfg.data_dir, "sessions"))
    except admin_channel.AdminError as err:
        _fail(str(err))
        raise AssertionError from None
    _rows(reply["sessions"], as_json, "no sessions", lambda row: (
        f"{row['jid']}\t{row['peer']}\t{'TLS' if row['secure'] else 'plain'}\t"
        f"{'available' if row['available'] else 'connected'}"))


def _rows(rows: list[dict[str, Any]], as_json: bool, empty: str, line: Callable[[dict[str, Any]], str]) -> None:
    """Print a listing: JSON, one ``line`` a row, or ``empty`` when there are no rows."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(empty)
    for row in rows:
        click.echo(line(row))


@admin.command("cluster")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def cluster(config_path: Path | None, as_json: bool) -> None:
    """List the live nodes of the cluster, their client sessions and component links, as the running server sees them."""
    cfg = _load(config_path)
    try:
        reply = _run(admin_channel.request(cfg.data_dir, "cluster"))
    except admin_channel.AdminError as err:
        _fail(str(err))
        raise AssertionError from None
    rows = sorted(reply["nodes"], key=lambda row: row["name"])
    if as_json:
        click.echo(json.dumps({"node": reply["node"], "nodes": rows}, indent=2))
        return
    for row in rows:
        here = " (this node)" if row["name"] == reply["node"] else ""
        started = datetime.datetime.fromtimestamp(row["started"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"{row['name']}\t{row['sessions']} sessions\t{row['components']} components\tup since {started}{here}")


@admin.command("drain")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a sentence.")
def drain(config_path: Path | None, as_json: bool) -> None:
    """Move the running node's clients to the other cluster nodes, then stop it (rolling restarts)."""
    cfg = _load(config_path)
    try:
        reply = _run(admin_channel.request(cfg.data_dir, "drain"))
    except admin_channel.AdminError as err:
        _fail(str(err))
        raise AssertionError from None
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    where = ", ".join(reply["targets"]) or "no other node (clients were told the service shuts down)"
    click.echo(f"node {reply['node']} drained: {reply['redirected']} clients sent to {where}; it stops now")


@admin.command("turn-config")
@config_option
@click.option("--loopback", is_flag=True, help="Listen and relay on 127.0.0.1 only (tests, local trials).")
def turn_config(config_path: Path | None, loopback: bool) -> None:
    """Print a coturn configuration that accepts the TURN credentials of [modules.extdisco]."""
    from ..server.config import parse_section
    from ..server.modules.extdisco import ExtdiscoOptions, coturn_config

    cfg = _load(config_path)
    if "extdisco" not in cfg.modules:
        _fail('module extdisco is not enabled (add it to modules.enable = ["extdisco"])', 2)
    options = parse_section(ExtdiscoOptions, cfg.modules["extdisco"], "modules.extdisco")
    if not options.turn_host:
        _fail("modules.extdisco.turn_host is not set: there is no TURN relay to configure", 2)
    click.echo(coturn_config(options, cfg.domains, loopback=loopback), nl=False)


def _module_request(cfg: Config, module: str, command: str, **args: Any) -> dict[str, Any]:
    """A command that ``module`` of the running server serves: the server owns what it changes
    (uploaded files, login tokens and the devices using them, rooms and their occupants)."""
    if module not in cfg.modules:
        _fail(f"the {module} module is not enabled in this configuration")
    try:
        return _run(admin_channel.request(cfg.data_dir, command, **args))
    except admin_channel.AdminError as err:
        _fail(str(err))
        raise AssertionError from None


@admin.group("uploads", invoke_without_command=True)
@config_option
@click.option("--user", "jid", help="Only this account (user@domain).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def uploads(ctx: click.Context, config_path: Path | None, jid: str | None, as_json: bool) -> None:
    """Files uploaded over HTTP (XEP-0363): stored files and bytes per account; see also `purge`."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = _load(config_path)
    args: dict[str, Any] = {}
    if jid is not None:
        host, username = _account(jid, cfg)
        args["jid"] = f"{username}@{host}"
    _rows(_module_request(cfg, "upload", "uploads", **args)["usage"], as_json, "no uploaded files",
          lambda row: f"{row['jid']}\t{row['files']} files\t{row['bytes']} bytes")


@uploads.command("purge")
@config_option
@click.option("--user", "jid", help="Delete every file of this account (user@domain).")
@click.option("--older-than", "days", metavar="DAYS", help="Delete every file stored more than DAYS days ago.")
def uploads_purge(config_path: Path | None, jid: str | None, days: str | None) -> None:
    """Delete uploaded files: those of one account, or those older than some days."""
    cfg = _load(config_path)
    if (jid is None) == (days is None):
        _fail("name either --user JID or --older-than DAYS", 2)
    args: dict[str, Any] = {}
    if jid is not None:
        host, username = _account(jid, cfg)
        args["jid"] = f"{username}@{host}"
    if days is not None:
        try:
            age = float(days)
        except ValueError:
            age = -1.0
        if not 0 <= age < float("inf"):
            _fail(f"--older-than must be a number of days, at least 0, got {days!r}", 2)
        args["older_than_days"] = age
    reply = _module_request(cfg, "upload", "uploads-purge", **args)
    click.echo(f"deleted {reply['files']} files ({reply['bytes']} bytes)")


@admin.group("tokens")
def tokens() -> None:
    """Login tokens of devices (XEP-0484 FAST): list and revoke them."""


@tokens.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.argument("jid")
def tokens_list(config_path: Path | None, as_json: bool, jid: str) -> None:
    """List the devices of JID that hold a login token."""
    cfg = _load(config_path)
    host, username = _account(jid, cfg)
    rows = _module_request(cfg, "fast", "tokens", action="list", jid=f"{username}@{host}")["devices"]

    def line(row: dict[str, Any]) -> str:
        name = " / ".join(part for part in (row["software"], row["device"]) if part) or "-"
        return f"{row['id']}\t{name}\t{row['mechanism']}\texpires {row['expiry']}\tused {row['used'] or 'never'}"

    _rows(rows, as_json, f"no login tokens for {username}@{host}", line)


@tokens.command("revoke")
@config_option
@click.option("--device", help="The device's id, as `tokens list` shows it.")
@click.option("--all", "everything", is_flag=True, help="Revoke the tokens of every device.")
@click.argument("jid")
def tokens_revoke(config_path: Path | None, device: str | None, everything: bool, jid: str) -> None:
    """Revoke login tokens of JID and disconnect the devices that used them."""
    cfg = _load(config_path)
    if (device is None) == (not everything):
        _fail("name either --device ID or --all", 2)
    host, username = _account(jid, cfg)
    reply = _module_request(cfg, "fast", "tokens", action="revoke", jid=f"{username}@{host}", device=device)
    click.echo(f"revoked the tokens of {reply['revoked']} devices of {username}@{host}")


@admin.group("room")
def room() -> None:
    """Group chats (XEP-0045): list, show, set an affiliation, destroy; as their owners would."""


@room.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.argument("domain", required=False)
def room_list(config_path: Path | None, as_json: bool, domain: str | None) -> None:
    """List the groups (of DOMAIN, a served domain or its group service) with occupants and owners,
    from storage and from the memory of every node of a cluster (temporary groups)."""
    cfg = _load(config_path)
    args = {"domain": domain} if domain is not None else {}
    reply = _module_request(cfg, "muc", "rooms", action="list", **args)
    _rows(reply["rooms"], as_json, "no groups",
          lambda row: f"{row['room']}\t{_occupants(row['occupants'])}\towners: {', '.join(row['owners']) or 'no owner'}")
    for why in reply.get("unanswered", {}).values():
        click.echo(f"schnack: warning: {why}: the groups only it holds are not listed", err=True)


def _occupants(count: int | None) -> str:
    # None: a node of the cluster that did not answer may serve the group, and only it knows who is in it.
    return "occupants unknown" if count is None else f"{count} occupants"


@room.command("show")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.argument("jid", metavar="ROOM@SERVICE")
def room_show(config_path: Path | None, as_json: bool, jid: str) -> None:
    """Show a group's configuration, affiliations and occupants."""
    cfg = _load(config_path)
    reply = _module_request(cfg, "muc", "rooms", action="show", room=jid)
    del reply["ok"]
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    click.echo(f"{reply['room']}{' (locked: not configured yet)' if reply['locked'] else ''}")
    click.echo(f"  {_occupants(reply['occupants'])}")
    if reply["subject"]:
        click.echo(f"  subject: {reply['subject']}")
    for key, value in reply["config"].items():
        click.echo(f"  {key.replace('_', ' ')}: {str(value).lower() if isinstance(value, bool) else value}")
    if not reply["affiliations"]:
        click.echo("  no affiliations")
    for row in reply["affiliations"]:
        why = f" ({row['reason']})" if row["reason"] else ""
        click.echo(f"  {row['affiliation']}\t{row['jid']}{why}")


@room.command("set-affiliation")
@config_option
@click.option("--reason", help="Told to the user and the occupants with the change.")
@click.argument("jid", metavar="ROOM@SERVICE")
@click.argument("user", metavar="JID")
@click.argument("affiliation", type=click.Choice(["owner", "admin", "member", "outcast", "none"]))
def room_set_affiliation(config_path: Path | None, reason: str | None, jid: str, user: str, affiliation: str) -> None:
    """Give JID an affiliation with a group, as an owner would (XEP-0045 §9, §10); occupants are told."""
    cfg = _load(config_path)
    args = {"reason": reason} if reason is not None else {}
    reply = _module_request(cfg, "muc", "rooms", action="set-affiliation", room=jid, jid=user,
                            affiliation=affiliation, **args)
    click.echo(f"{reply['jid']} is now {reply['affiliation']} of {reply['room']}")
    key_warnings(tuple(reply["key_problems"].items()))


@room.command("destroy")
@config_option
@click.option("--reason", help="Told to the occupants.")
@click.argument("jid", metavar="ROOM@SERVICE")
def room_destroy(config_path: Path | None, reason: str | None, jid: str) -> None:
    """Destroy a group with its archive, as its owner would (XEP-0045 §10.9); occupants are told."""
    cfg = _load(config_path)
    args = {"reason": reason} if reason is not None else {}
    reply = _module_request(cfg, "muc", "rooms", action="destroy", room=jid, **args)
    click.echo(f"destroyed {reply['room']} ({reply['occupants']} occupants told)")


for _command in (*CLIENT_COMMANDS, *FILE_COMMANDS):
    main.add_command(_command)
main.add_command(register)
main.add_command(verify)
main.add_command(chat)
main.add_command(call)
main.add_command(answer)
main.add_command(calls)
main.add_command(group)
admin.add_command(compliance_check)
