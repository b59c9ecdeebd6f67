"""API Gateway REQUEST authorizer: API key → principal, scopes and an IAM policy."""

from smartpay import coldstart

coldstart.begin(__name__)  # the handler's imports run without the cyclic collector; handler.py ends it
