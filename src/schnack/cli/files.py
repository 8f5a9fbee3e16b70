"""The file commands of ``schnack``: send-file, voice and play (XEP-0363 uploads, XEP-0454 encryption).

``schnack send-file JID PATH`` uploads a file encrypted with AES-256-GCM and sends its
``aesgcm://`` URL in an OMEMO message; ``schnack voice JID`` makes an Ogg/Opus voice note from a
WAV file or the microphone and sends it the same way; ``schnack play`` fetches, decrypts and
plays a received voice message (by its message id, or a file or URL), or writes it as WAV.
``schnack listen --download`` fetches the files that arrive. Transfers over 1 MB show a progress
bar on stderr. Every failure is one line on stderr and a non-zero exit, as for the other client
commands.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .client import account_option, chosen_account, client_factory, fail, parse_jid, run

if TYPE_CHECKING:
    from ..client import Client, Message
    from ..client.features.files import Attachment

# Smaller transfers are over before a bar would tell anything.
PROGRESS_ABOVE = 1_000_000


def downloads_dir(given: Path | None) -> Path:
    """Where files that arrive go: ``--dest``, else the user's downloads folder."""
    if given is not None:
        return given
    import platformdirs

    return Path(platformdirs.user_downloads_dir())


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback that shows a bar once the transfer is known to be over 1 MB."""
    bar: Any = None
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None and total > PROGRESS_ABOVE:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=False)
            bar.__enter__()
        if bar is not None:
            bar.update(done - shown)
            shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _send(jid: str, path: Path, account: str | None, unencrypted: bool, timeout: float,
          content_type: str | None = None) -> str:
    peer = parse_jid(jid)
    make_client = client_factory(chosen_account(account), available=False)

    async def deliver() -> str:
        client = make_client()
        try:
            await client.connect()
            with progress_bar(f"uploading {path.name}") as update:
                id = await client.send_file(peer, path, encrypted=not unencrypted, content_type=content_type,
                                            progress=update)
            await client.acknowledged(id, timeout=timeout)
            return id
        finally:
            await client.close()

    return run(deliver)


_unencrypted = click.option("--unencrypted", is_flag=True,
                            help="Upload the file as it is and send its URL in plaintext: readable by the servers.")
_timeout = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
                        help="Seconds to wait for the server to acknowledge the message.")


@click.command("send-file")
@click.argument("jid")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@account_option
@_unencrypted
@_timeout
def send_file(jid: str, path: Path, account: str | None, unencrypted: bool, timeout: float) -> None:
    """Send the file PATH to JID, end-to-end encrypted; prints the message id once acknowledged."""
    if not path.is_file():
        fail(f"no such file: {path}")
    click.echo(_send(jid, path, account, unencrypted, timeout))


@click.command()
@click.argument("jid")
@click.option("--file", "wav", type=click.Path(path_type=Path, dir_okay=False),
              help="Send this recording (WAV, or any audio FFmpeg reads).")
@click.option("--record", "seconds", type=click.FloatRange(min=0.5, max=600),
              help="Record this many seconds from the microphone.")
@account_option
@_unencrypted
@_timeout
def voice(jid: str, wav: Path | None, seconds: float | None, account: str | None, unencrypted: bool,
          timeout: float) -> None:
    """Send a voice message to JID: Ogg/Opus, 16 kHz mono, 16 kbit/s (about 100 KB a minute)."""
    from ..client import voice as audio

    if (wav is None) == (seconds is None):
        fail("give either --file WAV or --record SECONDS", 2)
    if wav is not None and not wav.is_file():
        fail(f"no such file: {wav}")
    with tempfile.TemporaryDirectory(prefix="schnack-voice-") as work:
        out = Path(work) / f"voice{audio.SUFFIX}"
        try:
            if wav is not None:
                note = audio.encode(wav, out)
            else:
                assert seconds is not None
                note = audio.record(out, seconds)
        except audio.VoiceError as err:
            fail(str(err))
        id = _send(jid, note.path, account, unencrypted, timeout, content_type=audio.CONTENT_TYPE)
    click.echo(id)
    click.echo(f"schnack: voice message of {note.duration:.1f} s, {note.size / 1000:.1f} KB", err=True)


def _find(account_dir: Path, message_id: str) -> Attachment | None:
    """The file a stored message with this id points to, in any conversation."""
    from ..client.features.files import attachment
    from ..client.store import Store

    store = Store(account_dir)
    try:
        for conversation in store.conversations():
            for outgoing in (False, True):
                stored = store.message(conversation.peer, message_id, outgoing=outgoing)
                if stored is not None:
                    return attachment(stored.text)
    finally:
        store.close()
    return None


async def fetch(client: Client, source: Attachment | str, dest: Path) -> Path:
    """Download with a progress bar."""
    with progress_bar("downloading") as update:
        return await client.download(source, dest, progress=update)


@click.command()
@click.argument("source")
@account_option
@click.option("--wav", "wav", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the voice message to this WAV file instead of playing it.")
@click.option("--dest", type=click.Path(path_type=Path, file_okay=False),
              help="Where a downloaded file is kept (default: the downloads folder).")
def play(source: str, account: str | None, wav: Path | None, dest: Path | None) -> None:
    """Play a voice message: SOURCE is a message id, an aesgcm:// or https:// URL, or a file.

    A message or URL is downloaded, decrypted and verified first (into --dest).
    """
    from ..client import voice as audio
    from ..client.features.files import attachment
    from ..client.store import account_dir

    path = Path(source)
    if not path.is_file():
        me = chosen_account(account)
        found = attachment(source) or _find(account_dir(me), source)
        if found is None:
            fail(f"{source} is neither a file nor a message or URL that points to one")
        make_client = client_factory(me, reconnect=False, available=False)

        async def download() -> Path:
            client = make_client()
            try:
                return await fetch(client, found, downloads_dir(dest))
            finally:
                await client.close()

        path = run(download)
        click.echo(f"schnack: saved {path}", err=True)
    try:
        if wav is not None:
            seconds = audio.decode(path, wav)
            click.echo(f"wrote {seconds:.1f} s to {wav}")
        else:
            seconds = audio.play(path)
            click.echo(f"played {seconds:.1f} s")
    except (audio.VoiceError, OSError) as err:
        fail(str(err))




async def save_attachment(client: Client, message: Message, dest: Path | None) -> None:
    """``listen --download``: fetch the file a message points to; a failure is told, not fatal."""
    from ..client import ClientError
    from ..client.features.files import attachment_of

    found = attachment_of(message) if not message.outgoing else None
    if found is None:
        return
    try:
        path = await fetch(client, found, downloads_dir(dest))
    except (ClientError, OSError) as err:
        click.echo(f"schnack: could not fetch {found.name} from {message.sender.bare}: {err}", err=True)
        return
    click.echo(f"schnack: saved {found.name} from {message.sender.bare} as {path}", err=True)


COMMANDS = (send_file, voice, play)
