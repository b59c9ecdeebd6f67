"""Reconcile function: compares open vouchers with Buffr, heals or flags each difference."""

from smartpay import coldstart

coldstart.begin(__name__)  # the handler's imports run without the cyclic collector; handler.py ends it
