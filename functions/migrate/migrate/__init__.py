"""Apply the layer's SQL migrations (invoke manually after a deploy)."""

from smartpay import coldstart

coldstart.begin(__name__)  # the handler's imports run without the cyclic collector; handler.py ends it
