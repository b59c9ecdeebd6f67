"""What only STAGE=local may do: call Buffr over plain http (the simulator) and point boto3 at the
local stack (SAM local's LOCAL_*_ENDPOINT_URL variables)."""

from __future__ import annotations

import os

import pytest

from smartpay import settings
from smartpay.errors import ConfigError


@pytest.mark.parametrize("stage", ["dev", "prod", ""])
def test_plain_http_buffr_url_is_refused_outside_local(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    monkeypatch.setenv("STAGE", stage)
    monkeypatch.setenv("BUFFR_API_URL", "http://api.buffr.example")
    with pytest.raises(ConfigError, match="https"):
        settings.https_url("BUFFR_API_URL")
    monkeypatch.setenv("BUFFR_API_URL", "https://api.buffr.example/")
    assert settings.https_url("BUFFR_API_URL") == "https://api.buffr.example"


def test_local_stage_may_call_the_simulator_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "local")
    monkeypatch.setenv("BUFFR_API_URL", "http://127.0.0.1:4010")
    assert settings.https_url("BUFFR_API_URL") == "http://127.0.0.1:4010"
    monkeypatch.setenv("BUFFR_API_URL", "127.0.0.1:4010")
    with pytest.raises(ConfigError):
        settings.https_url("BUFFR_API_URL")


def test_buffr_client_settings_use_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartpay.buffr import BuffrSettings

    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("BUFFR_API_URL", "http://api.buffr.example")
    monkeypatch.setenv("BUFFR_API_KEY", "k")
    with pytest.raises(ConfigError, match="BUFFR_API_URL"):
        BuffrSettings.from_env()


@pytest.fixture()
def endpoints(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "LOCAL_AWS_ENDPOINT_URL",
                 "LOCAL_LAMBDA_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_local_endpoints_reach_boto3_on_the_local_stage(endpoints) -> None:
    endpoints.setenv("STAGE", "local")
    endpoints.setenv("LOCAL_AWS_ENDPOINT_URL", "http://host.docker.internal:5005")
    endpoints.setenv("LOCAL_LAMBDA_ENDPOINT_URL", "http://host.docker.internal:5006")
    settings.apply_local_endpoints()
    assert os.environ["AWS_ENDPOINT_URL"] == "http://host.docker.internal:5005"
    assert os.environ["AWS_ENDPOINT_URL_LAMBDA"] == "http://host.docker.internal:5006"
    import boto3

    client = boto3.client("dynamodb", region_name="af-south-1", aws_access_key_id="x", aws_secret_access_key="x")
    assert client.meta.endpoint_url == "http://host.docker.internal:5005"


def test_empty_local_endpoints_change_nothing(endpoints) -> None:
    endpoints.setenv("STAGE", "prod")
    endpoints.setenv("LOCAL_AWS_ENDPOINT_URL", "")
    settings.apply_local_endpoints()
    assert "AWS_ENDPOINT_URL" not in os.environ


@pytest.mark.parametrize("stage", ["dev", "prod", ""])
def test_local_endpoints_are_refused_on_a_deployed_stage(endpoints, stage: str) -> None:
    endpoints.setenv("STAGE", stage)
    endpoints.setenv("LOCAL_AWS_ENDPOINT_URL", "http://attacker.example")
    with pytest.raises(ConfigError, match="STAGE=local"):
        settings.apply_local_endpoints()
    assert "AWS_ENDPOINT_URL" not in os.environ
