"""The ``schnack`` command, run as a real process."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from schnack.server.app import Server
from schnack.server.config import load
from schnack.server.modules.upload import STORE
from schnack.server.tls import make_self_signed

from ..harness import connect
from ..server.modules.test_upload import ask, request, slot_of
from ..server.storage.conftest import postgres_schema
from .proc import serve

SCHNACK = [sys.executable, "-m", "schnack.cli"]


def run(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCHNACK, *args], input=input, capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def write_config(tmp_path: Path, extra: str = "", data_dir: str = "state") -> Path:
    path = tmp_path / "schnack.toml"
    path.write_text(
        'domains = ["example.test"]\n'
        f'data_dir = "{data_dir}"\n'
        "[listen]\n"
        'c2s = ["127.0.0.1:0"]\nc2s_tls = ["127.0.0.1:0"]\nhttp = ["127.0.0.1:0"]\nhttps = ["127.0.0.1:0"]\n'
        + extra
    )
    return path


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[limits]\nidle_timeout = 0\n", "limits.idle_timeout"),
        ("[limits]\nbogus = 1\n", "limits.bogus"),
        ('[modules.e2e]\npolicy = "sometimes"\n', "modules.e2e.policy"),
        ('[modules]\nenable = ["teleport"]\n', "modules.teleport"),
        ('[listen]\nc2s = ["nowhere"]\n', "listen.c2s[0]"),
        ('[listen]\nproxy_from = ["10.0.0.5", "haproxy.internal"]\n', "listen.proxy_from[1]"),
        ('domains = ["a@b"]\n', "domains[0]"),
        ('[storage]\nurl = "mysql://x"\n', "storage.url"),
        ("[tls]\ncert = 'missing.pem'\nkey = 'missing.key'\n", "tls.cert"),
        ("this is not toml", ""),
        ('[modules]\nenable = ["phone"]\n', "modules.phone.sms"),
        ('[modules]\nenable = ["phone"]\n[modules.phone]\nsms = "pigeon"\n', "modules.phone.sms"),
        ('[modules]\nenable = ["phone"]\n[modules.phone]\nsms = "http"\n', "modules.phone.sms_url"),
        ('[modules]\nenable = ["phone"]\n[modules.phone]\nsms = "command"\n', "modules.phone.sms_command"),
        ('[modules]\nenable = ["phone"]\n[modules.phone]\nsms = "log"\nsms_text = "your code: {pin}"\n',
         "modules.phone.sms_text"),
        ('[modules]\nenable = ["phone"]\n[modules.phone]\nsms = "log"\nhost = "elsewhere.test"\n', "modules.phone.host"),
    ],
)
def test_config_check_names_the_bad_key(tmp_path: Path, body: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = run("config", "check", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("server.crt", "other.key", "tls.key: is not the private key of tls.cert"),
        ("garbage.pem", "server.key", "tls.cert: holds no PEM certificate"),
        ("server.crt", "garbage.pem", "tls.key: is not an unencrypted PEM private key"),
    ],
)
def test_config_check_refuses_a_pair_that_does_not_work(tmp_path: Path, cert: str, key: str, message: str) -> None:
    """A key that is not the certificate's, or a file that is no PEM, found before the server
    starts: it used to fail at start as "cannot listen"."""
    make_self_signed(["example.test"], tmp_path / "server.crt", tmp_path / "server.key")
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.key").write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "garbage.pem").write_text("not PEM at all\n")
    config = write_config(tmp_path, f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"schnack: bad configuration: {message}"]


def test_config_check_accepts_the_example(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "schnack.example.toml"
    result = run("config", "check", "--config", str(example))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_user_lifecycle(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    assert run("admin", "user", "add", "--config", config, "--password-stdin", "Alice@Example.test", input="pw1\n").returncode == 0
    again = run("admin", "user", "add", "--config", config, "--password-stdin", "alice@example.test", input="pw\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert run("admin", "user", "add", "--config", config, "--password-stdin", "bob@example.test", input="pw2\n").returncode == 0
    listing = run("admin", "user", "list", "--config", config)
    assert listing.stdout.split() == ["alice@example.test", "bob@example.test"]
    assert run("admin", "user", "passwd", "--config", config, "--password-stdin", "bob@example.test", input="new\n").returncode == 0
    assert run("admin", "user", "delete", "--config", config, "bob@example.test").returncode == 0
    missing = run("admin", "user", "delete", "--config", config, "bob@example.test")
    assert missing.returncode == 1 and "no such account" in missing.stderr
    assert run("admin", "user", "list", "--config", config).stdout.split() == ["alice@example.test"]


async def test_a_deletion_with_the_server_stopped_is_finished_when_it_starts(tmp_path: Path) -> None:
    """What storage does not keep (uploads, group affiliations) goes once a server runs the
    modules: until then the name is not given out again."""
    config = write_config(tmp_path, '[modules.upload]\npublic_url = "https://files.example.test/up"\n')
    assert run("admin", "user", "add", "--config", str(config), "--password-stdin", "alice@example.test",
               input="pw1\n").returncode == 0
    server = Server(load(config))
    await server.start(listen=False)
    alice = await connect(server, "alice@example.test/phone")
    slot_of(await ask(alice, request(to="upload.example.test")), "upload.example.test")
    await server.stop()
    assert run("admin", "user", "delete", "--config", str(config), "alice@example.test").returncode == 0
    again = run("admin", "user", "add", "--config", str(config), "--password-stdin", "alice@example.test", input="pw\n")
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        "schnack: alice@example.test is still being deleted: start the server, which finishes that, then add it"]
    server = Server(load(config))
    await server.start(listen=False)
    assert await server.storage.maps.items("example.test", "", STORE) == {}
    await server.stop()
    assert run("admin", "user", "add", "--config", str(config), "--password-stdin", "alice@example.test",
               input="pw\n").returncode == 0


@pytest.mark.parametrize(
    ("jid", "message"),
    [("not a jid@@", "invalid JID"), ("alice@other.test", "does not serve"), ("example.test", "not an account")],
)
def test_user_add_refuses_bad_addresses(tmp_path: Path, jid: str, message: str) -> None:
    result = run("admin", "user", "add", "--config", str(write_config(tmp_path)), "--password-stdin", jid, input="pw\n")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("data_dir", ["schnack.toml", "schnack.toml/state"])
@pytest.mark.parametrize("command", [["config", "check"], ["admin", "user", "list"], ["admin", "sessions"], ["serve"]])
def test_a_data_dir_that_is_a_file_is_a_configuration_error(tmp_path: Path, data_dir: str, command: list[str]) -> None:
    result = run(*command, "--config", str(write_config(tmp_path, data_dir=data_dir)))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"schnack: bad configuration: data_dir: {tmp_path / 'schnack.toml'} is not a directory"
    ]


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    result = run("admin", "user", "list", "--config", str(write_config(tmp_path, data_dir="/sys/schnack-test")))
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["schnack: cannot use /sys/schnack-test: Operation not permitted"]


def test_sessions_after_a_killed_server(tmp_path: Path) -> None:
    """A server that was killed leaves its admin socket behind, with nothing listening on it."""
    config = write_config(tmp_path)
    stale = tmp_path / "state" / "admin.sock"
    stale.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(stale))
    result = run("admin", "sessions", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"schnack: no server is running on {stale.parent} (nothing answers on its admin socket {stale})"
    ]


def test_sessions_where_no_socket_can_be(tmp_path: Path) -> None:
    # Longer than a Unix socket's path may be (108 bytes on Linux).
    data_dir = tmp_path / ("d" * 120)
    data_dir.mkdir()
    result = run("admin", "sessions", "--config", str(write_config(tmp_path, data_dir=str(data_dir))))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"schnack: cannot reach a server on {data_dir} (admin socket {data_dir / 'admin.sock'}): AF_UNIX path too long"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "--bogus", "bob@example.test", "hi"], "No such option '--bogus' (see 'python -m schnack.cli send --help')"),
        (["admin", "user", "add"], "Missing argument 'JID' (see 'python -m schnack.cli admin user add --help')"),
        (["omemo", "trust"], "No such command 'omemo' (see 'python -m schnack.cli --help')"),
        (["--bogus", "send"], "No such option '--bogus' (see 'python -m schnack.cli --help')"),
        (["calls", "data-saver", "sometimes"], "Invalid value for '[auto|on|off]': 'sometimes' is not one of 'auto', 'on',"
         " 'off' (see 'python -m schnack.cli calls data-saver --help')"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"schnack: {message}"]


@pytest.mark.parametrize("args", [[], ["admin"], ["admin", "user"]])
def test_a_command_group_without_its_command_shows_its_help(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Usage: python -m schnack.cli {' '.join([*args, ''])}[OPTIONS] COMMAND")
    assert "\nCommands:\n" in result.stderr


def test_sessions_without_a_server(tmp_path: Path) -> None:
    result = run("admin", "sessions", "--config", str(write_config(tmp_path)))
    assert result.returncode == 1
    assert "no server is running" in result.stderr


def test_serve_announces_and_stops_cleanly(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc, seen = serve(config)
    try:
        assert "schnack is serving example.test" in seen, seen
        assert re.search(r"port \d+ \(STARTTLS\)", seen)
        sessions = run("admin", "sessions", "--config", str(config))
        assert sessions.returncode == 0, sessions.stderr
        assert sessions.stdout.strip() == "no sessions"
        # One node on its own is a cluster of one (the in-process bus).
        nodes = run("admin", "cluster", "--config", str(config))
        assert nodes.returncode == 0, nodes.stderr
        (line,) = nodes.stdout.splitlines()
        assert line.endswith("(this node)") and "\t0 sessions\t" in line
        assert (tmp_path / "state" / "certs" / "server.crt").exists()
        # With the server up, accounts are still managed from the command line; deletion goes
        # through the server, which tells contacts and closes sessions.
        added = run("admin", "user", "add", "--config", str(config), "--password-stdin", "carol@example.test", input="pw\n")
        assert added.returncode == 0, added.stderr
        deleted = run("admin", "user", "delete", "--config", str(config), "carol@example.test")
        assert deleted.returncode == 0 and "deleted carol@example.test" in deleted.stdout, deleted.stderr
        again = run("admin", "user", "delete", "--config", str(config), "carol@example.test")
        assert again.returncode == 1 and "no such account" in again.stderr
        assert run("admin", "user", "list", "--config", str(config)).stdout.split() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_a_second_server_that_cannot_listen_leaves_the_first_one_alone(tmp_path: Path) -> None:
    """The second server on a data directory fails on the port the first holds; the first keeps
    its admin socket, so that the admin commands still reach it."""
    config = write_config(tmp_path)
    proc, seen = serve(config)
    try:
        port = re.search(r"port (\d+) \(STARTTLS\)", seen)
        assert port is not None, seen
        config.write_text(config.read_text().replace('c2s = ["127.0.0.1:0"]', f'c2s = ["127.0.0.1:{port[1]}"]'))
        second = run("serve", "--config", str(config))
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1].startswith("schnack: cannot listen: "), second.stderr
        sessions = run("admin", "sessions", "--config", str(config))
        assert (sessions.returncode, sessions.stdout.strip()) == (0, "no sessions"), sessions.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0



def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("extra", "data_dir", "message"),
    [
        ('[storage]\nurl = "postgresql://schnack@127.0.0.1:{port}/schnack"\n', "state",
         "schnack: cannot open storage: cannot connect to PostgreSQL at 127.0.0.1:{port}: "),
        ('[storage]\nurl = "sqlite:///nonexistent-schnack-test/store.db"\n', "state",
         "schnack: cannot open storage: cannot open the SQLite database at /nonexistent-schnack-test/store.db: "),
        # /sys refuses new directories even to root.
        ("", "/sys/schnack-test", "schnack: cannot use /sys/schnack-test: Operation not permitted"),
    ],
)
@pytest.mark.parametrize("command", [("serve",), ("admin", "user", "list")])
def test_serve_and_admin_name_what_they_cannot_open(tmp_path: Path, extra: str, data_dir: str, message: str,
                                                     command: tuple[str, ...]) -> None:
    """Storage that does not answer or cannot be opened, or a data directory that cannot be made,
    end ``serve`` and the admin commands in one line that names it."""
    port = _closed_port()
    config = write_config(tmp_path, extra.format(port=port), data_dir)
    result = run(*command, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message.format(port=port)), result.stderr


async def test_serve_without_redis_says_it_cannot_join_the_cluster(tmp_path: Path) -> None:
    """A node that cannot reach its cluster's Redis refuses to start, in one line."""
    closed_port = _closed_port()
    async with postgres_schema() as (url, _, _):
        config = write_config(
            tmp_path, f'[storage]\nurl = "{url}"\n[cluster]\nredis_url = "redis://127.0.0.1:{closed_port}/0"\n'
        )
        result = run("serve", "--config", str(config))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("schnack: cannot join the cluster: "), result.stderr
    assert "Traceback" not in result.stderr


def _waits_for_input(pid: int) -> bool:
    """Whether the process is blocked in read(2) on its standard input (Linux: /proc/PID/syscall
    names the call and its arguments; read is call 0 on x86-64, 63 on arm64)."""
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(call) > 1 and call[0] in {"0", "63"} and call[1] == "0x0"


def test_an_interrupt_ends_a_command_with_130(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*SCHNACK, "admin", "user", "add", "--config", str(write_config(tmp_path)), "--password-stdin",
         "alice@example.test"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not _waits_for_input(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (130, "", "schnack: interrupted\n")


def test_a_password_prompt_without_input_says_how_to_give_one(tmp_path: Path) -> None:
    # A new session has no terminal to ask on: the prompt reads standard input, which is empty.
    result = subprocess.run(
        [*SCHNACK, "admin", "user", "add", "--config", str(write_config(tmp_path)), "alice@example.test"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, start_new_session=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("schnack: no password given"), result.stderr
    assert "--password-stdin" in result.stderr


def test_a_broken_pipe_other_than_standard_output_is_an_error() -> None:
    """A command that fails outside the client commands' runner (``schnack check`` on a link the
    server broke) with standard output still read ends with one line and 1, not silently as for
    a reader that went away."""
    script = (
        "import click\n"
        "from schnack.cli.main import _Schnack\n"
        "@click.group(cls=_Schnack)\n"
        "def group() -> None: pass\n"
        "@group.command()\n"
        "def work() -> None: raise BrokenPipeError(32, 'Broken pipe')\n"
        "group(['work'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "schnack: [Errno 32] Broken pipe\n")


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_a_password_scram_cannot_take_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    """SASLprep (RFC 4013) refuses Arabic letters mixed with Latin ones: such a password could
    never log in, so it is not stored, and the old one stays."""
    config = str(write_config(tmp_path))
    assert run("admin", "user", "add", "--config", config, "--password-stdin", "alice@example.test",
               input="pw1\n").returncode == 0
    jid = "bob@example.test" if command == "add" else "alice@example.test"
    result = run("admin", "user", command, "--config", config, "--password-stdin", jid,
                 input="\u0643\u0644\u0645\u0629 secret\n")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "RFC 4013" in result.stderr
    assert run("admin", "user", "list", "--config", config).stdout.split() == ["alice@example.test"]
