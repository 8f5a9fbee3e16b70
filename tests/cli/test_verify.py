"""``schnack verify`` as a real process against the real server: fingerprints listed, our own code
shown as a QR code that a real decoder (zxing-cpp) reads, a contact's code verifying their keys,
wrong codes and fingerprints refused, the decision kept, and a new key then held back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zxingcpp

from schnack.client import Client
from schnack.client.omemo import OLDMEMO, TWOMEMO
from schnack.client.omemo.fingerprints import UriKey, VerificationUri, grouped
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ..harness import add_user, running
from .proc import Result, client_env, login, schnack

PASSWORD = "correct horse battery staple"
ALICE, BOB = JID.parse("alice@localhost"), JID.parse("bob@localhost")
_MODULES = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}}) as srv:
        for user in ("alice", "bob", "carol"):
            await add_user(srv, user, PASSWORD)
        yield srv


async def online(server: Server, clients: list[Client], jid: str) -> Client:
    """A device of ``jid`` on the client library, with its own keys."""
    host, port = server.bound["c2s"][0]
    client = Client(jid, PASSWORD, host=host, port=port, verify=False)
    await client.connect()
    clients.append(client)
    return client


def failure(result: Result) -> str:
    """The one line a failed command ends with; logged warnings (a key change) may stand before it."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def succeeded(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def qr_text(output: str) -> str:
    """Decode the QR code drawn in ``output`` with zxing-cpp, as a phone's scanner would read it."""
    drawn = output.split("send the link below):\n", 1)[1].split("\nxmpp:", 1)[0].split("\n")
    width = max(len(line) for line in drawn)
    rows: list[list[bool]] = []
    for line in drawn:
        cells = [_MODULES[c] for c in line.ljust(width)]
        rows += [[top for top, _ in cells], [bottom for _, bottom in cells]]
    scale, border = 4, 8
    size_x, size_y = (width + 2 * border) * scale, (len(rows) + 2 * border) * scale
    pixels = bytearray(b"\xff" * (size_x * size_y))
    for y, row in enumerate(rows):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    start = ((y + border) * scale + dy) * size_x + (x + border) * scale
                    pixels[start:start + scale] = b"\x00" * scale
    found = zxingcpp.read_barcodes(memoryview(bytes(pixels)).cast("B", (size_y, size_x)))
    assert len(found) == 1
    return str(found[0].text)


def code_of(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("xmpp:"))


async def test_fingerprints_and_our_code_are_shown(server: Server, clients: list[Client], tmp_path: Path) -> None:
    env = client_env(tmp_path)
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    bob = await online(server, clients, "bob@localhost")
    bobs = await bob.omemo.own_device()
    out = succeeded(await schnack(env, "verify", "bob@localhost", input="n\n"))
    lines = out.splitlines()
    assert lines[0] == "bob@localhost: 1 OMEMO device"
    assert lines[1] == f"  device {bobs.id}  OMEMO 0.3 + OMEMO 2  blindly trusted"
    assert lines[2:4] == [f"    {line}" for line in grouped(bobs.fingerprint, per_line=4)]
    alices = next(d for d in await bob.omemo.devices("alice@localhost") if d.active)
    assert lines[4] == "alice@localhost (you): 1 OMEMO device"
    assert lines[5] == f"  device {alices.id} (this device)  OMEMO 0.3 + OMEMO 2"
    assert lines[6:8] == [f"    {line}" for line in grouped(alices.fingerprint, per_line=4)]
    # Our code, in the terminal and as text: the same URI, naming this device in both versions.
    code = code_of(out)
    assert qr_text(out) == code
    assert VerificationUri.parse(code) == VerificationUri(
        ALICE, (UriKey(alices.fingerprint, alices.id, OLDMEMO), UriKey(alices.fingerprint, alices.id, TWOMEMO)))
    # Asked about bob's key, alice said no: it stays as it was.
    assert f"Does bob@localhost's device {bobs.id} show this fingerprint? [y/N]" in out
    # (The prompt's line goes on with what follows it: a pipe does not echo the answer.)
    assert lines[-1].endswith(f"? [y/N]: left as it was: device {bobs.id} (blindly trusted)")


async def test_a_scanned_code_verifies_and_a_new_key_then_waits(server: Server, clients: list[Client],
                                                                 tmp_path: Path) -> None:
    env = client_env(tmp_path)
    for user in ("alice", "bob"):
        assert (await login(server, env, f"{user}@localhost", PASSWORD)).returncode == 0
    # bob shows his code (his own account: nothing to verify but his other devices, of which he has none).
    shown = succeeded(await schnack(env, "verify", "-a", "bob@localhost", "--no-qr"))
    assert shown.splitlines()[-1] == "bob@localhost has no other device"
    code = code_of(shown)
    scanned = VerificationUri.parse(code)
    assert scanned.jid == BOB and len({key.device_id for key in scanned.keys}) == 1
    bobs = scanned.keys[0]
    # alice scanned it (and pasted what her scanner read): bob's key is verified, no questions asked.
    verified = succeeded(await schnack(env, "verify", "-a", "alice@localhost", "--uri", code, "--yes", "--no-qr"))
    assert verified.splitlines()[-1] == f"verified: bob@localhost's device {bobs.device_id}"
    again = succeeded(await schnack(env, "verify", "-a", "alice@localhost", "bob@localhost", "--no-qr"))
    assert f"  device {bobs.device_id}  OMEMO 0.3 + OMEMO 2  verified" in again.splitlines()
    assert again.splitlines()[-1] == "every key of bob@localhost is verified already"

    # bob gets a new device: alice's messages wait until she decides about its key.
    phone = await online(server, clients, "bob@localhost/phone")
    new = await phone.omemo.own_device()
    held = failure(await schnack(env, "send", "-a", "alice@localhost", "bob@localhost", "still you?"))
    assert held.startswith(f"schnack: not sent: bob@localhost has OMEMO keys that are not verified: device {new.id}")
    assert held.endswith("or pass --unencrypted to send unencrypted")
    asked = succeeded(await schnack(env, "verify", "-a", "alice@localhost", "bob@localhost", "--no-qr", input="y\n"))
    assert f"Does bob@localhost's device {new.id} show this fingerprint? [y/N]" in asked
    assert f"device {bobs.device_id}? [y/N]" not in asked  # verified before: not asked again
    assert asked.splitlines()[-1].endswith(f"? [y/N]: verified: bob@localhost's device {new.id}")
    inbox = phone.messages()
    sent = succeeded(await schnack(env, "send", "-a", "alice@localhost", "bob@localhost", "still you?"))
    got = await inbox.__anext__()
    assert (got.id, got.text, got.encrypted) == (sent.strip(), "still you?", True)


async def test_wrong_codes_and_fingerprints_are_refused(server: Server, clients: list[Client], tmp_path: Path) -> None:
    env = client_env(tmp_path)
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    bob = await online(server, clients, "bob@localhost")
    bobs = await bob.omemo.own_device()
    digits = bobs.fingerprint.replace(" ", "")
    forged = digits[:-1] + ("0" if digits[-1] != "0" else "1")
    wrong = failure(await schnack(env, "verify", "--uri", f"xmpp:bob@localhost?omemo-sid-{bobs.id}={forged}",
                                  "--yes", "--no-qr"))
    assert wrong == (f"schnack: the fingerprint of bob@localhost's device {bobs.id} does NOT match: the code says "
                     f"{' '.join(grouped(forged))}, the server gives {bobs.fingerprint}; do not trust this device")
    unknown = failure(await schnack(env, "verify", "--uri", f"xmpp:bob@localhost?omemo-sid-{bobs.id + 1}={digits}",
                                    "--yes", "--no-qr"))
    assert unknown.startswith(f"schnack: bob@localhost publishes no OMEMO device {bobs.id + 1}")
    someone_else = failure(await schnack(env, "verify", "bob@localhost", "--uri",
                                         f"xmpp:carol@localhost?omemo-sid-1={digits}"))
    assert someone_else == "schnack: the code is carol@localhost's, not bob@localhost's: nothing verified"
    garbage = await schnack(env, "verify", "--uri", "https://example.org")
    assert garbage.returncode == 2 and failure(garbage).startswith("schnack: --uri: not an xmpp: URI")
    no_key = failure(await schnack(env, "verify", "bob@localhost", "--fingerprint", "00" * 32, "--no-qr"))
    assert no_key == f"schnack: bob@localhost has no OMEMO key with fingerprint {' '.join(grouped('0' * 64))}"
    for typo in ("zz", digits[:-1], digits[:-1] + "g"):
        mistyped = await schnack(env, "verify", "bob@localhost", "--fingerprint", typo, "--no-qr")
        assert mistyped.returncode == 2
        assert failure(mistyped) == f"schnack: --fingerprint: {typo!r} is not a fingerprint of 64 hex digits"
    unanswered = failure(await schnack(env, "verify", "bob@localhost", "--no-qr", input=""))
    assert unanswered == "schnack: not confirmed (no answer); name the key with --fingerprint, or pass --yes"
    nobody = failure(await schnack(env, "verify", "carol@localhost", "--no-qr"))
    assert nobody.startswith("schnack: carol@localhost has no OMEMO devices")
    assert "unencrypted" not in nobody
    # None of that changed anything; the right fingerprint, as typed from bob's screen, does.
    unchanged = succeeded(await schnack(env, "verify", "bob@localhost", "--no-qr", input="n\n"))
    assert f"  device {bobs.id}  OMEMO 0.3 + OMEMO 2  blindly trusted" in unchanged.splitlines()
    typed = bobs.fingerprint.upper().replace(" ", ":")
    right = succeeded(await schnack(env, "verify", "bob@localhost", "--fingerprint", typed, "--no-qr"))
    assert right.splitlines()[-1] == f"verified: bob@localhost's device {bobs.id}"
    listing = succeeded(await schnack(env, "verify", "bob@localhost", "--no-qr"))
    assert f"  device {bobs.id}  OMEMO 0.3 + OMEMO 2  verified" in listing.splitlines()


async def test_our_own_devices_verify_each_other(server: Server, tmp_path: Path) -> None:
    """alice's desk scans her phone's code; the desk's code then vouches for both, and the phone,
    scanning it, verifies the desk (its own key in the code is skipped)."""
    desk, phone = client_env(tmp_path), client_env(tmp_path / "phone")
    for env in (desk, phone):
        assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    phone_code = code_of(succeeded(await schnack(phone, "verify", "--no-qr", input="n\n")))
    phone_key = VerificationUri.parse(phone_code).keys[0]
    verified = succeeded(await schnack(desk, "verify", "--uri", phone_code, "--yes", "--no-qr"))
    assert verified.splitlines()[-1] == f"verified: alice@localhost's device {phone_key.device_id}"
    # Shown again, the desk's code vouches for the phone too.
    again = succeeded(await schnack(desk, "verify", "--no-qr"))
    assert again.splitlines()[-1] == "every key of alice@localhost is verified already"
    desk_code = VerificationUri.parse(code_of(again))
    ids = {key.device_id for key in desk_code.keys}
    assert phone_key.device_id in ids and len(ids) == 2
    (desk_id,) = ids - {phone_key.device_id}
    back = succeeded(await schnack(phone, "verify", "--uri", str(desk_code), "--yes", "--no-qr"))
    assert back.splitlines()[-1] == f"verified: alice@localhost's device {desk_id}"
    assert f"verified: alice@localhost's device {phone_key.device_id}" not in back
