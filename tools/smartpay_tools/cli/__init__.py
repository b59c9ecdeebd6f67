"""The ``smartpay`` operator CLI: :mod:`.app` builds the parser; one module per command group."""

from smartpay_tools.cli.app import build_parser, main
from smartpay_tools.cli.common import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "build_parser", "main"]
