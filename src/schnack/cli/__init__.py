"""The ``schnack`` command."""
