"""The sans-IO XMPP core shared by the server and the client: no sockets, no asyncio."""
