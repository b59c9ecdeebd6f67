"""Standard Webhooks signing (smartpay.signing): tolerance edges, tampering, rotation, malformed input."""

import base64
import hashlib
import hmac

import pytest
from standardwebhooks import Webhook

from smartpay import signing
from smartpay.errors import ConfigError

NOW = 1_790_000_000
BODY = b'{"type":"voucher.activated","data":{"voucher_id":"v"}}'
CURRENT, OLD = signing.new_secret(), signing.new_secret()
ROTATING = f"{CURRENT} {OLD}"


def headers(secrets: str = CURRENT, timestamp: int = NOW, webhook_id: str = "msg_1") -> dict[str, str]:
    return signing.sign_headers(secrets, BODY, webhook_id=webhook_id, timestamp=timestamp)


def test_signature_is_the_standard_webhooks_hmac() -> None:
    raw = base64.b64decode(CURRENT.removeprefix("whsec_"))
    mac = hmac.new(raw, f"msg_1.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert headers()["webhook-signature"] == "v1," + base64.b64encode(mac).decode()


def test_library_verify_accepts_our_signature() -> None:
    import time

    stamp = int(time.time())
    h = headers(timestamp=stamp)
    assert Webhook(CURRENT).verify(BODY, h) is not None


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_within_tolerance_is_accepted(offset: int) -> None:
    assert signing.verify(CURRENT, BODY, headers(timestamp=NOW + offset), now=NOW) == "msg_1"


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_301_seconds_old_or_ahead_is_refused(offset: int) -> None:
    with pytest.raises(signing.SignatureError, match=r"too old|future"):
        signing.verify(CURRENT, BODY, headers(timestamp=NOW + offset), now=NOW)


def test_tampered_body_id_or_timestamp_is_refused() -> None:
    h = headers()
    with pytest.raises(signing.SignatureError):
        signing.verify(CURRENT, BODY.replace(b"activated", b"cancelled"), h, now=NOW)
    with pytest.raises(signing.SignatureError):
        signing.verify(CURRENT, BODY, {**h, "webhook-id": "msg_2"}, now=NOW)
    with pytest.raises(signing.SignatureError):
        signing.verify(CURRENT, BODY, {**h, "webhook-timestamp": str(NOW + 1)}, now=NOW)
    with pytest.raises(signing.SignatureError, match="malformed"):  # the library would accept this one
        signing.verify(CURRENT, BODY, {**h, "webhook-timestamp": f"{NOW}.5"}, now=NOW)


def test_rotation_accepts_both_secrets_and_signs_with_the_current_one() -> None:
    assert signing.verify(ROTATING, BODY, headers(OLD), now=NOW) == "msg_1"
    assert signing.verify(ROTATING, BODY, headers(CURRENT), now=NOW) == "msg_1"
    assert headers(ROTATING) == headers(CURRENT)
    with pytest.raises(signing.SignatureError):
        signing.verify(CURRENT, BODY, headers(OLD), now=NOW)


def test_any_matching_entry_in_the_signature_list_is_enough() -> None:
    good = headers()["webhook-signature"]
    listed = {**headers(), "webhook-signature": f"v1a,AAAA v1,bm9wZQ== {good} garbage v1,%%%"}
    assert signing.verify(CURRENT, BODY, listed, now=NOW) == "msg_1"


@pytest.mark.parametrize("change", [
    {"webhook-signature": ""}, {"webhook-id": ""}, {"webhook-timestamp": "soon"},
    {"webhook-signature": "v1"}, {"webhook-signature": "v1,"}, {"webhook-signature": "v2," + "A" * 44},
    {"webhook-id": "msg with space"}, {"webhook-timestamp": "-1"},
])
def test_malformed_headers_are_a_signature_error_never_a_crash(change: dict[str, str]) -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify(CURRENT, BODY, {**headers(), **change}, now=NOW)


def test_non_utf8_body_is_a_signature_error() -> None:
    with pytest.raises(signing.SignatureError):
        signing.verify(CURRENT, b"\xff\xfe", headers(), now=NOW)


def test_header_names_are_case_insensitive() -> None:
    upper = {k.upper(): v for k, v in headers().items()}
    assert signing.verify(CURRENT, BODY, upper, now=NOW) == "msg_1"


@pytest.mark.parametrize("value", ["", "   ", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()])
def test_malformed_secret_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError):
        signing.parse_secrets(value)
