"""Beneficiary lookup: Buffr verifies a beneficiary before it credits a wallet."""

from smartpay import coldstart

coldstart.begin(__name__)  # the handler's imports run without the cyclic collector; handler.py ends it
