"""``smartpay sign-event FILE`` prints a saved webhook proxy event with a fresh Standard Webhooks
signature that the webhook function's check accepts (the saved one is long outside its window)."""

import json

import pytest

from smartpay import signing
from smartpay_tools import PROJECT_ROOT
from smartpay_tools.cli import app
from smartpay_tools.local import envfile

SAVED = PROJECT_ROOT / "events/webhook/buffr.json"


def test_signed_event_verifies_with_the_local_secret(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTPAY_WEBHOOK_SECRET", raising=False)
    secrets = envfile.load()["WebhookFunction"]["WEBHOOK_SECRET"]
    saved = json.loads(SAVED.read_text())
    with pytest.raises(signing.SignatureError):  # as saved: stale
        signing.verify(secrets, saved["body"].encode(), saved["headers"])
    assert app.main(["sign-event", str(SAVED)]) == 0
    event = json.loads(capsys.readouterr().out)
    assert event["body"] == saved["body"]
    assert signing.verify(secrets, event["body"].encode(), event["headers"]) == saved["headers"]["webhook-id"]
    assert event["multiValueHeaders"]["webhook-signature"] == [event["headers"]["webhook-signature"]]
