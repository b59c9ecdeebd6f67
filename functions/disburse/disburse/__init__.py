"""Disbursement: issue vouchers and send them to Buffr exactly once (single and whole-cycle batches)."""

from smartpay import coldstart

coldstart.begin(__name__)  # the handler's imports run without the cyclic collector; handler.py ends it
