"""The ``smartpay`` operator CLI: :mod:`.app` builds the parser; one module per command group."""

from smartpay_tools.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
