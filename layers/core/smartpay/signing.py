"""Standard Webhooks signatures (docs/architecture.md#webhook-signatures), shared by the receiver, the simulator and replay.

Headers: ``webhook-id``, ``webhook-timestamp`` (integer Unix seconds) and ``webhook-signature``,
a space-separated list of ``v1,<base64 HMAC-SHA256 of "id.timestamp.raw_body">``.

**Secret format.** The configured value (``WEBHOOK_SECRET``, or the Secrets Manager / SSM value
it names) is a space-separated list of ``whsec_<base64>`` secrets. The *first* is the current
one (Ketchup's tools sign with it); every one is accepted when verifying, so a rotation is:
put ``"whsec_new whsec_old"``, let Buffr switch, then drop the old one.

The HMAC itself comes from the maintained ``standardwebhooks`` library (``Webhook.sign``).
Its ``verify()`` is not used, because in 1.1.0 it

* lets ``ValueError`` escape on a malformed signature entry, bad base64 or a non-UTF-8 body
  (a forged request would become a 500, not a 401);
* accepts a fractional timestamp such as ``1767225600.9`` and signs its floor, so the
  timestamp header could be altered without breaking the signature;
* hard-codes its clock (no way to test the ±300 s edges exactly) and takes one secret only.

:func:`verify` therefore checks the headers strictly, then compares the expected signature of
every configured secret with every presented ``v1`` signature in constant time
(``hmac.compare_digest``, no early exit), before the body is parsed at all.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets as _secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache

from aws_lambda_powertools.utilities.data_classes.common import CaseInsensitiveDict
from standardwebhooks import Webhook

from smartpay.errors import ConfigError

TOLERANCE_SECONDS = 300
MAX_SIGNATURES = 8
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_WEBHOOK_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_PREFIX = "whsec_"


class SignatureError(Exception):
    """The request is not authentically from Buffr (missing, malformed, stale or wrong signature)."""


@lru_cache(maxsize=16)
def parse_secrets(value: str) -> tuple[Webhook, ...]:
    """The configured secrets, current first. A malformed value is a configuration error."""
    parts = value.split()
    if not parts:
        raise ConfigError("the webhook secret is empty (expected 'whsec_<base64>', space-separated)")
    keys = []
    for index, part in enumerate(parts):
        encoded = part.removeprefix(_PREFIX)
        try:
            raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ConfigError(f"webhook secret #{index + 1} is not base64 (expected 'whsec_<base64>')") from None
        if not 24 <= len(raw) <= 64:
            raise ConfigError(f"webhook secret #{index + 1} must decode to 24-64 bytes, got {len(raw)}")
        keys.append(Webhook(raw))
    return tuple(keys)


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes), e.g. for a rotation."""
    return _PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode()


def _text(body: bytes | str) -> str:
    try:
        return body if isinstance(body, str) else body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None


def signature(secrets_value: str, webhook_id: str, timestamp: int, body: bytes | str) -> str:
    """``v1,<base64>`` for the current (first) secret."""
    return parse_secrets(secrets_value)[0].sign(webhook_id, datetime.fromtimestamp(timestamp, UTC), _text(body))


def sign_headers(secrets_value: str, body: bytes | str, *, webhook_id: str | None = None,
                 timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed now with the current secret."""
    webhook_id = webhook_id or f"msg_{_secrets.token_urlsafe(18)}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets_value, webhook_id, timestamp, body),
    }


def verify(secrets_value: str, body: bytes | str, headers: Mapping[str, str], *, now: float | None = None,
           tolerance: int = TOLERANCE_SECONDS) -> str:
    """Check a delivery's signature before its body is parsed; returns its ``webhook-id``.

    Raises :class:`SignatureError` saying why (for the log line only, never for the caller).
    """
    found = CaseInsensitiveDict(headers)  # Powertools' header lookup: any casing
    webhook_id = (found.get("webhook-id") or "").strip()
    stamp = (found.get("webhook-timestamp") or "").strip()
    presented = (found.get("webhook-signature") or "").split()
    if not (webhook_id and stamp and presented):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not _WEBHOOK_ID.match(webhook_id):
        raise SignatureError("malformed webhook-id")
    if not _TIMESTAMP.match(stamp):
        raise SignatureError("malformed webhook-timestamp (integer seconds expected)")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise SignatureError(f"timestamp too old ({current - timestamp:.0f} s)")
    if timestamp > current + tolerance:
        raise SignatureError(f"timestamp in the future ({timestamp - current:.0f} s)")
    candidates = []
    for entry in presented[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue  # other schemes (e.g. v1a asymmetric) are not configured here
        try:
            candidates.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    text = _text(body)
    matched = False
    for key in parse_secrets(secrets_value):
        expected = base64.b64decode(key.sign(webhook_id, datetime.fromtimestamp(timestamp, UTC), text)[3:])
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no matching v1 signature")
    return webhook_id
