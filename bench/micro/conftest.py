"""Typical stanzas as the server receives them, shared by the microbenchmarks."""

from __future__ import annotations

from ..scenarios import omemo_message

DOMAIN = "localhost"
OPEN = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
_head, _tail = omemo_message(f"bob@{DOMAIN}/phone", 64)
# A message shaped like Conversations' OMEMO messages (about 830 bytes), presence with entity
# capabilities, and a roster request: what a chat server mostly reads.
OMEMO = f"{_head}m1{_tail}"
PRESENCE = (
    "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://conversations.im' "
    "ver='Ge7KVtxRQuOv4D3oUzvKfOLtdXo='/><show>away</show></presence>"
)
ROSTER_GET = "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
