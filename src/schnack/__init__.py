"""schnack: a self-hosted, end-to-end encrypted messenger that speaks XMPP."""

__version__ = "0.1.0"
