"""``schnack chat``: the terminal chat app (Textual), for a stored account.

It connects before the screen is taken over, so that a wrong password, an unreachable server or
an untrusted certificate end the command with one line, as every client command does; once it
runs, what goes wrong is shown inside the app, which keeps running and reconnecting.
"""

from __future__ import annotations

import logging

import click

from .. import client as commands


@click.command()
@click.argument("jid", required=False)
@commands.account_option
def chat(jid: str | None, account: str | None) -> None:
    """Chat in the terminal; with JID, the conversation with JID (a contact or a group) is opened.

    Enter sends, encrypted with OMEMO; Ctrl+N opens another conversation, Ctrl+T switches the
    open one to unencrypted and back, Ctrl+O hides a warning about changed keys, Ctrl+Q quits.
    /call calls the open conversation's contact; a ringing call is answered with Ctrl+Y,
    rejected with Ctrl+R; during a call Ctrl+S switches the data saver and Ctrl+R hangs up.
    """
    me = commands.chosen_account(account)
    peer = commands.parse_jid(jid, account=True).bare if jid is not None else None
    make_client = commands.client_factory(me)

    async def chatting() -> None:
        from textual.logging import TextualHandler

        from .app import ChatApp

        # Log lines written to the terminal would tear the screen apart; Textual's console
        # (textual console) shows them instead.
        logging.basicConfig(level=logging.WARNING, handlers=[TextualHandler()], force=True)
        client = make_client()
        try:
            commands.note(f"connecting as {me}…")
            await client.connect()
            await ChatApp(client, peer=peer).run_async()
        finally:
            await client.close()

    commands.run(chatting)
