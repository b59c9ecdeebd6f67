"""Webhook receipt: Buffr's signed voucher status events, verified, deduplicated and applied once."""

from smartpay import coldstart

coldstart.begin(__name__)  # the handler's imports run without the cyclic collector; handler.py ends it
