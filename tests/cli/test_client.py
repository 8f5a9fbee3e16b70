"""The client commands of ``schnack`` as real processes against the real server (in this process).

login stores the account and keeps the password out of the database; send exits 0 once the
server acknowledged the message; listen prints what arrives; history reads the local store;
contacts lists, adds and removes. Every failure is one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.ports import free_port
from schnack.cli.client import run
from schnack.client.store import FILENAME, PASSWORD_FILE, Settings, Store, account_dir
from schnack.server.app import Server
from schnack.server.modules.e2e import REFUSAL
from schnack.xmpp.jid import JID

from ..harness import add_user, running
from .proc import PROCESS_WAIT, SCHNACK, Result, client_env, line_of, login, schnack, start, stop

PASSWORD = "correct horse battery staple"
ALICE = JID.parse("alice@localhost")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A listening server that lets plaintext through, with alice and bob."""
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}}) as srv:
        for user in ("alice", "bob"):
            await add_user(srv, user, PASSWORD)
        yield srv


def one_line(result: Result) -> str:
    """The single line a failed command wrote, checked to be one line and no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


async def test_login_keeps_the_password_out_of_the_database(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    result = await login(server, env, "alice@localhost", PASSWORD)
    assert result.returncode == 0, result.stderr
    # python-omemo's warnings about a first device list are no news to the user.
    assert result.stderr == ""
    directory = account_dir(ALICE, tmp_path / "client")
    assert result.stdout.startswith("logged in as alice@localhost/")
    assert f"account stored in {directory}, password in {directory / PASSWORD_FILE}" in result.stdout
    assert stat.S_IMODE((directory / PASSWORD_FILE).stat().st_mode) == 0o600
    assert (directory / PASSWORD_FILE).read_text() == PASSWORD
    for database in directory.glob(f"{FILENAME}*"):
        assert PASSWORD.encode() not in database.read_bytes()
    # The stored account works without being named: it is the only one.
    listing = await schnack(env, "contacts")
    assert (listing.returncode, listing.stdout) == (0, ""), listing.stderr


async def test_login_with_a_system_keyring(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path, PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
                     XDG_DATA_HOME=str(tmp_path / "xdg"))
    result = await login(server, env, "alice@localhost", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("password in the system keyring")
    directory = account_dir(ALICE, tmp_path / "client")
    assert not (directory / PASSWORD_FILE).exists()
    assert not any(PASSWORD.encode() in path.read_bytes() for path in directory.iterdir())
    listing = await schnack(env, "contacts")
    assert listing.returncode == 0, listing.stderr


async def test_login_failures(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    wrong = await login(server, env, "alice@localhost", "not the password")
    assert one_line(wrong) == "schnack: alice@localhost: authentication failed: wrong username or password"
    untrusted = one_line(await login(server, env, "alice@localhost", PASSWORD, "--starttls"))
    assert "the certificate of localhost is not trusted" in untrusted
    assert "--insecure" in untrusted and "--ca FILE" in untrusted
    closed = free_port()
    unreachable = await schnack(env, "login", "alice@localhost", "--password-stdin", "--host", "127.0.0.1",
                                "--port", str(closed), input=PASSWORD + "\n")
    assert one_line(unreachable) == f"schnack: cannot reach localhost (127.0.0.1 port {closed}): connection refused"
    host, port = server.bound["c2s"][0]
    plain = one_line(await login(server, env, "alice@localhost", PASSWORD, "--insecure", "--direct-tls"))
    assert plain == (f"schnack: cannot reach localhost ({host} port {port}): it does not speak direct TLS"
                     " (try without --direct-tls)")
    tls_host, tls_port = server.bound["c2s_tls"][0]
    cleartext = await schnack(env, "login", "alice@localhost", "--password-stdin", "--host", tls_host,
                              "--port", str(tls_port), "--starttls", "--insecure", input=PASSWORD + "\n")
    assert one_line(cleartext) == ("schnack: localhost: the connection failed during login: the server closed the"
                                   f" connection without a word (if port {tls_port} is for direct TLS, try --direct-tls)")
    both = await login(server, env, "alice@localhost", PASSWORD, "--insecure", "--ca", str(__file__))
    assert both.returncode == 2 and "exclude each other" in one_line(both)
    assert one_line(await login(server, env, "localhost", PASSWORD)).endswith("is not an account address (user@domain)")
    # A failed first login leaves no account behind.
    none = await schnack(env, "send", "bob@localhost", "hi")
    assert one_line(none) == "schnack: no account stored; log in first with: schnack login JID"
    # The server's own certificate, given as the CA, is trusted.
    trusted = await login(server, env, "alice@localhost", PASSWORD, "--ca",
                          str(server.config.data_dir / "certs" / "server.crt"))
    assert trusted.returncode == 0, trusted.stderr


async def test_a_store_of_a_newer_schnack_is_one_line(tmp_path: Path) -> None:
    """Commands that read the store and commands that connect both refuse a newer store's file."""
    import sqlite3

    from schnack.client.store import _SCHEMA

    env = client_env(tmp_path)
    directory = account_dir(ALICE, tmp_path / "client")
    Store(directory).close()
    db = sqlite3.connect(directory / FILENAME, isolation_level=None)
    db.execute(f"PRAGMA user_version = {len(_SCHEMA) + 1}")
    db.close()
    expected = (f"schnack: cannot open the local store in {directory}: this store was written by a newer"
                f" schnack (schema {len(_SCHEMA) + 1}, this version knows up to {len(_SCHEMA)}); upgrade schnack")
    assert one_line(await schnack(env, "history", "bob@localhost")) == expected
    assert one_line(await schnack(env, "send", "bob@localhost", "hi")) == expected


async def test_choosing_the_account(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    for user in ("alice", "bob"):
        assert (await login(server, env, f"{user}@localhost", PASSWORD)).returncode == 0
    several = one_line(await schnack(env, "history", "bob@localhost"))
    assert "several accounts are stored (alice@localhost, bob@localhost); choose one with --account" in several
    missing = one_line(await schnack(env, "listen", "--account", "carol@localhost"))
    assert missing == "schnack: no such account stored: carol@localhost; log in first with: schnack login carol@localhost"
    chosen = await schnack({**env, "SCHNACK_ACCOUNT": "bob@localhost"}, "history", "alice@localhost")
    assert (chosen.returncode, chosen.stdout) == (0, "")
    bad = await schnack(env, "history", "not@@valid", "--account", "alice@localhost")
    assert bad.returncode == 2 and "invalid JID" in one_line(bad)


async def test_send_listen_and_history(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    for user in ("alice", "bob"):
        assert (await login(server, env, f"{user}@localhost", PASSWORD)).returncode == 0
    early = await schnack(env, "send", "--unencrypted", "-a", "alice@localhost", "bob@localhost", "are you there?")
    assert early.returncode == 0, early.stderr
    # Sending does not make bob available: the message waiting for him stays for his listener.
    reply = await schnack(env, "send", "--unencrypted", "-a", "bob@localhost", "alice@localhost", "soon")
    assert reply.returncode == 0, reply.stderr
    listener = await start(env, "listen", "--account", "bob@localhost")
    try:
        assert (await line_of(listener.stderr)).startswith("schnack: listening as bob@localhost/")
        waited = await line_of(listener.stdout)
        assert waited.endswith(" alice@localhost: are you there?"), waited
        sent = await schnack(env, "send", "--unencrypted", "-a", "alice@localhost", "bob@localhost", "hello bob")
        assert sent.returncode == 0, sent.stderr
        id = sent.stdout.strip()
        line = await line_of(listener.stdout)
        assert line.endswith(" alice@localhost: hello bob"), line
    finally:
        assert await stop(listener) == 0
    # bob's client answered both with receipts. The one for "hello bob" goes out the moment bob's
    # listener has the message, and so may reach the send command before it disconnects: that
    # command then records it, and it is no news to alice's listener below.
    store = Store(account_dir(ALICE, tmp_path / "client"))
    try:
        hello = store.message(JID.parse("bob@localhost"), id, outgoing=True)
    finally:
        store.close()
    assert hello is not None and hello.state in ("acked", "delivered"), hello
    news = {"bob@localhost: soon", f"me → bob@localhost: {early.stdout.strip()} [✓✓ delivered]"}
    if hello.state == "acked":
        news.add(f"me → bob@localhost: {id} [✓✓ delivered]")
    catching_up = await start(env, "listen", "--account", "alice@localhost")
    try:
        assert (await line_of(catching_up.stderr)).startswith("schnack: listening as alice@localhost/")
        assert await line_of(catching_up.stderr) == "schnack: up to date with the server's archive"
        shown = {(await line_of(catching_up.stdout)).split(" ", 2)[2] for _ in range(len(news))}
        assert shown == news
    finally:
        assert await stop(catching_up) == 0
    mine = (await schnack(env, "history", "bob@localhost", "-a", "alice@localhost")).stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in mine] == [
        "me: are you there?  [✓✓ delivered]", "bob@localhost: soon", "me: hello bob  [✓✓ delivered]"]
    theirs = (await schnack(env, "history", "alice@localhost", "-a", "bob@localhost")).stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in theirs] == [
        "alice@localhost: are you there?", "me: soon  [✓ on the server]", "alice@localhost: hello bob"]
    last = await schnack(env, "history", "alice@localhost", "-a", "bob@localhost", "--limit", "1", "--json")
    assert f'"origin_id": "{id}"' in last.stdout and '"direction": "in"' in last.stdout


async def test_listen_into_a_closed_pipe_ends_quietly(server: Server, tmp_path: Path) -> None:
    """``schnack listen | head -1``: once the reader is gone, the command ends as SIGPIPE would end
    it (141), with nothing more on stderr."""
    env = client_env(tmp_path)
    for user in ("alice", "bob"):
        assert (await login(server, env, f"{user}@localhost", PASSWORD)).returncode == 0
    for text in ("one", "two", "three"):
        assert (await schnack(env, "send", "-a", "alice@localhost", "bob@localhost", text)).returncode == 0
    read, write = os.pipe()
    listener = await asyncio.create_subprocess_exec(*SCHNACK, "listen", "-a", "bob@localhost", stdout=write,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
    os.close(write)
    with os.fdopen(read, "rb") as out:
        # A blocking read, away from the event loop the server runs in.
        first = await asyncio.to_thread(out.readline)
    assert first.decode().endswith(" alice@localhost: one\n"), first
    # Written after the reader left: the write fails with EPIPE.
    assert (await schnack(env, "send", "-a", "alice@localhost", "bob@localhost", "four")).returncode == 0
    async with asyncio.timeout(PROCESS_WAIT):
        _, err = await listener.communicate()
    said = [line for line in err.decode().splitlines() if line != "schnack: up to date with the server's archive"]
    assert (listener.returncode, len(said)) == (141, 1), err.decode()
    assert said[0].startswith("schnack: listening as bob@localhost/")


async def test_listen_ends_quietly_whichever_line_meets_the_closed_pipe(server: Server, tmp_path: Path) -> None:
    """``schnack listen --json | head -1`` where the line after the first is a chat state (or a
    receipt, a group message): the command ends with 141 too, rather than listening on."""
    import json

    from schnack.client import Client

    env = client_env(tmp_path)
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    host, port = server.bound["c2s"][0]
    bob = Client("bob@localhost", PASSWORD, host=host, port=port, verify=False)
    await bob.connect()
    inbox = bob.messages()
    # A message from alice shows bob's client that she takes chat states.
    assert (await schnack(env, "send", "--unencrypted", "bob@localhost", "hi")).returncode == 0
    assert (await asyncio.wait_for(inbox.__anext__(), PROCESS_WAIT)).text == "hi"
    read, write = os.pipe()
    listener = await asyncio.create_subprocess_exec(*SCHNACK, "listen", "--json", stdout=write,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
    os.close(write)
    try:
        assert listener.stderr is not None
        while not (line := await line_of(listener.stderr)).startswith("schnack: "):
            pass
        assert line.startswith("schnack: listening as alice@localhost/")
        await bob.send(ALICE, "hello", encrypted=False)
        with os.fdopen(read, "rb") as out:
            # The receipt for "hi" may come first.
            while (first := json.loads(await asyncio.to_thread(out.readline)))["event"] != "message":
                pass
        assert first["text"] == "hello"
        # Printed by another task than the messages: its write fails with EPIPE.
        assert await bob.typing(ALICE, "composing")
        async with asyncio.timeout(PROCESS_WAIT):
            assert await listener.wait() == 141
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()
        await bob.close()


async def test_plaintext_is_sent_only_when_asked_for(server: Server, tmp_path: Path) -> None:
    """Without --unencrypted the message must be encrypted; a contact without OMEMO gets nothing."""
    env = client_env(tmp_path)
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    refused = one_line(await schnack(env, "send", "bob@localhost", "secret"))
    assert "--unencrypted" in refused and "encrypted=False" not in refused
    history = await schnack(env, "history", "bob@localhost")
    assert (history.returncode, history.stdout) == (0, "")


async def test_a_message_the_server_refuses_fails_the_command(tmp_path: Path) -> None:
    async with running(tmp_path, listen=True) as strict:  # e2e policy "required": no plaintext chat
        for user in ("alice", "bob"):
            await add_user(strict, user, PASSWORD)
        env = client_env(tmp_path)
        assert (await login(strict, env, "alice@localhost", PASSWORD)).returncode == 0
        refused = one_line(await schnack(env, "send", "--unencrypted", "bob@localhost", "plain words"))
        assert refused == f"schnack: policy-violation: {REFUSAL}"
        history = await schnack(env, "history", "bob@localhost")
        assert "[✗ failed: policy-violation" in history.stdout


async def test_contacts(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    added = await schnack(env, "contacts", "add", "bob@localhost/ignored", "--name", "Bob")
    assert (added.returncode, added.stdout) == (0, "added bob@localhost\n"), added.stderr
    expected = "bob@localhost\tBob\tnone (asked to see their presence)\n"
    assert (await schnack(env, "contacts")).stdout == expected
    assert (await schnack(env, "contacts", "--offline")).stdout == expected
    removed = await schnack(env, "contacts", "remove", "bob@localhost")
    assert (removed.returncode, removed.stdout) == (0, "removed bob@localhost\n"), removed.stderr
    again = one_line(await schnack(env, "contacts", "remove", "bob@localhost"))
    assert again == "schnack: bob@localhost is not in the contact list"
    assert (await schnack(env, "contacts")).stdout == ""
    assert (await schnack(env, "contacts", "--offline")).stdout == ""


async def test_commands_report_a_server_that_is_gone(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    store = Store(account_dir(ALICE, tmp_path / "client"))
    try:
        store.save_settings(Settings("127.0.0.1", free_port(), False, False))
    finally:
        store.close()
    for command in (["send", "--unencrypted", "bob@localhost", "anyone there?"], ["listen"], ["contacts"]):
        gone = one_line(await schnack(env, *command))
        assert gone.startswith("schnack: cannot reach localhost (127.0.0.1 port "), gone
        assert gone.endswith("): connection refused"), gone
    # Nothing was stored for a message that could not even start on its way.
    assert (await schnack(env, "history", "bob@localhost")).stdout == ""


async def test_listen_shows_receipts_markers_corrections_and_history_shows_the_marks(
        server: Server, tmp_path: Path) -> None:
    """alice uses the commands; bob is a program on the client library."""
    import json

    from schnack.client import Client

    env, phone = client_env(tmp_path), client_env(tmp_path / "phone")
    for device in (env, phone):
        assert (await login(server, device, "alice@localhost", PASSWORD)).returncode == 0
    host, port = server.bound["c2s"][0]
    bob = Client("bob@localhost", PASSWORD, host=host, port=port, verify=False)
    await bob.connect()
    listener = await start(env, "listen", "--json")
    try:
        # Other lines on stderr are logged warnings, such as the phone's new OMEMO key.
        while not (line := await line_of(listener.stderr)).startswith("schnack: "):
            pass
        assert line.startswith("schnack: listening as alice@localhost/")
        inbox = bob.messages()

        async def event(kind: str) -> dict[str, object]:
            """The next line of this kind (messages, receipts and chat states are printed as they come)."""
            while True:
                parsed: dict[str, object] = json.loads(await line_of(listener.stdout))
                if parsed["event"] == kind:
                    return parsed

        # alice writes from her other device; the listening one gets the carbon copy.
        sent = await schnack(phone, "send", "--unencrypted", "bob@localhost", "hello bob")
        assert sent.returncode == 0, sent.stderr
        id = sent.stdout.strip()
        got = await asyncio.wait_for(inbox.__anext__(), 60)
        assert got.id == id
        copy = await event("message")
        assert (copy["text"], copy["id"], copy["outgoing"]) == ("hello bob", id, True)
        # bob's client answered with a receipt; reading it sends a displayed marker.
        assert await event("receipt") == {"event": "receipt", "peer": "bob@localhost", "id": id,
                                          "state": "delivered", "outgoing": True}
        await bob.mark_read(ALICE, id)
        assert (await event("receipt"))["state"] == "read"
        answer = await bob.send(ALICE, "helo alice", encrypted=False)
        message = await event("message")
        assert (message["text"], message["id"], message["replaces"], message["outgoing"]) == (
            "helo alice", answer, None, False)
        assert await bob.typing(ALICE, "composing")
        assert await event("chat_state") == {"event": "chat_state", "from": str(bob.jid), "state": "active"}
        assert await event("chat_state") == {"event": "chat_state", "from": str(bob.jid), "state": "composing"}
        correction = await bob.correct(ALICE, answer, "hello alice", encrypted=False)
        corrected = await event("message")
        assert (corrected["text"], corrected["id"], corrected["replaces"]) == ("hello alice", correction, answer)
    finally:
        code = await stop(listener)
        await bob.close()
        assert listener.stderr is not None
        assert code == 0, (await listener.stderr.read()).decode()
    history = (await schnack(env, "history", "bob@localhost")).stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in history] == [
        "me: hello bob  [✓✓ read]", "bob@localhost: hello alice (edited)"]
    as_json = [json.loads(line) for line in (await schnack(env, "history", "bob@localhost", "--json")).stdout.splitlines()]
    assert [(m["id"], m["state"], m["edited"] is not None) for m in as_json] == [
        (id, "read", False), (answer, "delivered", True)]


def test_a_broken_connection_is_no_closed_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Only a reader that went away ends a command silently; a broken pipe elsewhere is an error."""

    async def work() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(SystemExit) as ended:
        run(work)
    assert ended.value.code == 1
    assert "Broken pipe" in capsys.readouterr().err
