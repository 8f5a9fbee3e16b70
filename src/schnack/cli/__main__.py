"""``python -m schnack.cli``."""

from .main import main

main()
