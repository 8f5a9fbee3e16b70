"""``schnack group`` as real processes against the real server (in this process): a private group
made, joined by a listener, written to encrypted, listed; failures are one line and a non-zero exit.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.server.admin import SOCKET_NAME, AdminChannel
from schnack.server.app import Server
from schnack.server.cluster import messages
from schnack.server.modules.muc import operator
from schnack.server.modules.pep import Pep
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.bookmarks import NS as BOOKMARKS

from ..harness import add_user, running
from ..server.cluster.test_node_presence import nodes, online
from ..server.modules.groups import create, field
from .proc import client_env, line_of, login, schnack, start, stop
from .test_client import one_line

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A listening server with its default policy: plaintext is refused in private groups."""
    async with running(tmp_path, listen=True) as srv:
        for user in ("alice", "bob", "carol", "dave"):
            await add_user(srv, user, PASSWORD)
        yield srv


async def test_a_private_group_from_the_command_line(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    # Each login publishes the account's OMEMO keys, which the group's members encrypt to.
    for user in ("alice", "bob", "carol"):
        assert (await login(server, env, f"{user}@localhost", PASSWORD)).returncode == 0
    made = await schnack(env, "group", "create", "Family", "bob@localhost", "carol@localhost", "-a", "alice@localhost")
    assert made.returncode == 0, made.stderr
    group = JID.parse(made.stdout.strip())
    assert group.domain == "groups.localhost" and made.stderr == ""
    listing = await schnack(env, "group", "list", "-a", "alice@localhost")
    assert listing.stdout == f"{group}\tFamily\tprivate\n"
    listener = await start(env, "listen", "--account", "bob@localhost")
    try:
        assert (await line_of(listener.stderr)).startswith("schnack: listening as bob@localhost/")
        noted = {await line_of(listener.stderr) for _ in range(2)}
        assert f"schnack: added to the group {group} by alice@localhost" in noted
        sent = await schnack(env, "group", "send", str(group), "hello family", "-a", "alice@localhost")
        assert sent.returncode == 0, sent.stderr
        line = await line_of(listener.stdout)
        assert line.endswith(f"[{group}] alice@localhost: hello family"), line
        # carol never opened her client since she was added: the group is entered on the way.
        said = await schnack(env, "group", "send", str(group), "hi from carol", "-a", "carol@localhost")
        assert said.returncode == 0, said.stderr
        line = await line_of(listener.stdout)
        assert line.endswith(f"[{group}] carol@localhost: hi from carol"), line
    finally:
        assert await stop(listener) == 0
    members = await schnack(env, "group", "members", "Family", "-a", "alice@localhost")
    assert members.stdout.splitlines() == [
        "alice@localhost\towner", "bob@localhost\tmember", "carol@localhost\tmember"]
    page = await server.storage.archive.query(group.domain, group.local or "", "muc")
    assert len(page.items) == 2 and not any(b"hello family" in item.payload for item in page.items)
    left = await schnack(env, "group", "leave", str(group), "-a", "bob@localhost")
    assert (left.returncode, left.stdout) == (0, f"left {group}\n"), left.stderr
    assert (await schnack(env, "group", "list", "-a", "bob@localhost")).stdout == ""


async def test_group_failures_are_one_line(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    for user in ("alice", "dave"):
        assert (await login(server, env, f"{user}@localhost", PASSWORD)).returncode == 0
    made = await schnack(env, "group", "create", "Club", "bob@localhost", "-a", "alice@localhost")
    assert made.returncode == 0, made.stderr
    group = made.stdout.strip()
    # bob never logged in: the server warns that he has no keys to encrypt to.
    assert made.stderr == ("schnack: warning: bob@localhost has published no OMEMO keys; it cannot read "
                           "encrypted messages in this group yet\n")
    plain = one_line(await schnack(env, "group", "send", group, "in the clear", "--unencrypted",
                                   "-a", "alice@localhost"))
    assert plain.startswith("schnack: policy-violation: This server requires end-to-end encryption")
    lacking = one_line(await schnack(env, "group", "send", group, "secret", "-a", "alice@localhost"))
    assert lacking.startswith(f"schnack: not sent to the group {group}: bob@localhost has no OMEMO devices")
    unknown = one_line(await schnack(env, "group", "send", "Nowhere", "hi", "-a", "alice@localhost"))
    assert unknown == "schnack: no group of alice@localhost is called 'Nowhere'"
    outsider = one_line(await schnack(env, "group", "members", group, "-a", "dave@localhost"))
    assert outsider == (f"schnack: {group} is a group for its members only, and this account is not one"
                        " (registration-required)")
    bad = await schnack(env, "group", "invite", group, "not@@valid", "-a", "alice@localhost")
    assert bad.returncode == 2 and "invalid JID" in one_line(bad)
    # Text that is no address may still be a group's name: only the bookmarks can tell.
    for command in (("send", "bad@@", "hi"), ("members", "bad@@"), ("leave", "bad@@")):
        wrong = await schnack(env, "group", *command, "-a", "alice@localhost")
        assert (wrong.returncode, one_line(wrong)) == (1, "schnack: no group of alice@localhost is called 'bad@@'")
    # A name with a character XML cannot carry (a pasted terminal escape) makes no group, and the
    # link is not cut over it.
    bell = await schnack(env, "group", "create", "Bell\x07", "-a", "alice@localhost")
    assert (bell.returncode, one_line(bell)) == (
        1, "schnack: the group's name holds the character U+0007, which XML cannot carry; no group was made")
    # An address that is no group is not left as if it were one.
    for address, why in (("bob@localhost", ""), ("nope@localhost", " (service-unavailable)")):
        person = await schnack(env, "group", "leave", address, "-a", "alice@localhost")
        assert (person.returncode, one_line(person)) == (1, f"schnack: {address} is not a group{why}"), person.stdout
    # A group's name that is no address still names it.
    named = await schnack(env, "group", "create", "Chess Club", "-a", "alice@localhost")
    assert named.returncode == 0, named.stderr
    assert (await schnack(env, "group", "members", "Chess Club", "-a", "alice@localhost")).stdout == (
        "alice@localhost\towner\n")


async def test_a_group_named_on_another_device_is_found_in_the_bookmarks(server: Server, tmp_path: Path) -> None:
    """A name this device's store does not know is looked up in the account's bookmarks (XEP-0402)
    once connected: they hold the groups that the account's other devices made or entered."""
    phone, laptop = client_env(tmp_path / "phone"), client_env(tmp_path / "laptop")
    for env in (phone, laptop):
        assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    made = {}
    for name in ("Chess Club", "Work"):
        created = await schnack(phone, "group", "create", name, "-a", "alice@localhost")
        assert created.returncode == 0, created.stderr
        made[name] = created.stdout.strip()
    for name in made:
        listed = await schnack(laptop, "group", "members", name, "-a", "alice@localhost")
        assert (listed.returncode, listed.stdout) == (0, "alice@localhost\towner\n"), listed.stderr
    # The laptop keeps what it found.
    assert (await schnack(laptop, "group", "list", "-a", "alice@localhost")).stdout == "".join(
        f"{jid}\t{name}\tprivate\n" for name, jid in sorted(made.items(), key=lambda each: each[1]))
    missing = await schnack(laptop, "group", "members", "Go Club", "-a", "alice@localhost")
    assert (missing.returncode, one_line(missing)) == (1, "schnack: no group of alice@localhost is called 'Go Club'")


async def test_sending_to_a_group_that_does_not_exist_makes_none(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    # Entering a room of a new name creates it (XEP-0045 §10.1.1): for a send that is a mistake.
    for _ in range(2):
        missing = await schnack(env, "group", "send", "nope@groups.localhost", "hi", "-a", "alice@localhost")
        assert (missing.returncode, one_line(missing)) == (1, "schnack: no such group: nope@groups.localhost")
    assert (await schnack(env, "group", "list", "-a", "alice@localhost")).stdout == ""
    pep = server.modules["pep"]
    assert isinstance(pep, Pep)
    assert await pep.store.items(JID.parse("alice@localhost"), BOOKMARKS) == []
    # An account's address answers disco#info as an account, not a room (§6.4): no wait for a join.
    started = time.monotonic()
    person = await schnack(env, "group", "send", "bob@localhost", "hi", "-a", "alice@localhost")
    assert (person.returncode, one_line(person)) == (1, "schnack: bob@localhost is not a group")
    nobody = await schnack(env, "group", "send", "nope2@localhost", "hi", "-a", "alice@localhost")
    assert (nobody.returncode, one_line(nobody)) == (1, "schnack: nope2@localhost is not a group (service-unavailable)")
    assert time.monotonic() - started < 20


async def test_the_operator_manages_groups_from_the_command_line(server: Server, tmp_path: Path) -> None:
    """``schnack admin room`` against the running server's admin socket: a group whose only owner
    is gone gets a new owner, then is destroyed; failures are one line and a non-zero exit."""
    env = client_env(tmp_path)
    config = tmp_path / "schnack.toml"
    config.write_text(f'domains = ["localhost"]\ndata_dir = "{server.config.data_dir}"\n')
    assert (await schnack(env, "admin", "room", "list", "--config", str(config))).stdout == "no groups\n"
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    made = await schnack(env, "group", "create", "Club", "-a", "alice@localhost")
    assert made.returncode == 0, made.stderr
    group = made.stdout.strip()
    listing = await schnack(env, "admin", "room", "list", "localhost", "--config", str(config))
    assert listing.stdout == f"{group}\t0 occupants\towners: alice@localhost\n", listing.stderr
    shown = await schnack(env, "admin", "room", "show", group, "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "  name: Club" in shown.stdout.splitlines() and "  owner\talice@localhost" in shown.stdout.splitlines()

    await server.delete_account("localhost", "alice")
    listing = await schnack(env, "admin", "room", "list", "--config", str(config))
    assert listing.stdout == f"{group}\t0 occupants\towners: no owner\n", listing.stderr
    owner = await schnack(env, "admin", "room", "set-affiliation", group, "bob@localhost", "owner",
                          "--config", str(config))
    assert (owner.returncode, owner.stdout) == (0, f"bob@localhost is now owner of {group}\n"), owner.stderr
    assert owner.stderr == ("schnack: warning: bob@localhost has published no OMEMO keys; it cannot read "
                            "encrypted messages in this group yet\n")
    last = await schnack(env, "admin", "room", "set-affiliation", group, "bob@localhost", "none",
                         "--config", str(config))
    assert (last.returncode, last.stderr) == (1, f"schnack: {group}: a group needs at least one owner\n")
    bad = await schnack(env, "admin", "room", "set-affiliation", group, "bob@localhost", "king",
                        "--config", str(config))
    assert bad.returncode == 2 and "'king' is not one of" in bad.stderr
    destroyed = await schnack(env, "admin", "room", "destroy", group, "--reason", "abandoned", "--config", str(config))
    assert (destroyed.returncode, destroyed.stdout) == (0, f"destroyed {group} (0 occupants told)\n"), destroyed.stderr
    missing = await schnack(env, "admin", "room", "show", group, "--config", str(config))
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", f"schnack: no such group: {group}\n")
    wrong = await schnack(env, "admin", "room", "show", "club@localhost", "--config", str(config))
    assert wrong.stderr == "schnack: localhost is no group service of this server (services: groups.localhost)\n"


async def test_the_operator_lists_the_groups_of_every_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``schnack admin room list`` against one node of a cluster lists a temporary group that lives
    only on another node; a node that does not answer (of a version before bus requests) is named
    in a warning, and the listing still comes."""
    monkeypatch.setattr(operator, "GATHER_TIMEOUT", 0.5)
    async with nodes(tmp_path, "local") as (a, b):
        channel = AdminChannel(b, b.config.data_dir / SOCKET_NAME)
        await channel.start()
        try:
            owner = await online(a, "alice@localhost/phone")
            await create(owner, "party@groups.localhost", "alice", field("muc#roomconfig_persistentroom", "0"))
            config = tmp_path / "schnack.toml"
            config.write_text(f'domains = ["localhost"]\ndata_dir = "{b.config.data_dir}"\n')
            env = client_env(tmp_path)
            listing = await schnack(env, "admin", "room", "list", "--config", str(config))
            assert (listing.returncode, listing.stdout, listing.stderr) == (
                0, "party@groups.localhost\t1 occupants\towners: alice@localhost\n", "")

            monkeypatch.delitem(messages._KINDS, messages.Request.kind)
            listing = await schnack(env, "admin", "room", "list", "--config", str(config))
            assert (listing.returncode, listing.stdout, listing.stderr) == (0, "no groups\n", (
                "schnack: warning: node a did not answer within 0.5 s (it may run a version that does not know "
                "the request, or be busy: what was asked may be done yet): the groups only it holds are not listed\n"))
        finally:
            await channel.stop()


async def test_room_commands_without_a_server(tmp_path: Path) -> None:
    config = tmp_path / "schnack.toml"
    config.write_text(f'domains = ["localhost"]\ndata_dir = "{tmp_path / "data"}"\n')
    result = await schnack(client_env(tmp_path), "admin", "room", "list", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(f"schnack: no server is running on {tmp_path / 'data'}")
