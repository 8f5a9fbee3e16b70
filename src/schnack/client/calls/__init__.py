"""Voice calls: Jingle RTP sessions (XEP-0166/0167/0176/0320) proposed with XEP-0353.

``sdp`` maps Jingle to the SDP WebRTC engines speak and back; ``session`` is the state machine
of one call. Both are pure: no sockets, no event loop. ``media`` is the one module that owns
aiortc (ICE, DTLS-SRTP, our Opus encoder, the WAV sink and the statistics), and ``calls`` drives
the state machine over the client's stanzas (``Client.call``, ``Client.incoming_calls``).
"""
