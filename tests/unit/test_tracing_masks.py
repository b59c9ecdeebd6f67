"""X-Ray never records a handler's response or an error's text unmasked: the real X-Ray recorder
(with an emitter that keeps what it would send) behind the layer's tracer."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aws_xray_sdk.core import AWSXRayRecorder
from aws_xray_sdk.core.context import Context

from smartpay.observability import MaskedTracer, MaskingXrayProvider

ID_NUMBER, PHONE = "85010100087", "+264811234567"


class RootHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class KeepingEmitter:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity.serialize())

    def set_daemon_address(self, address: Any) -> None: ...

    @property
    def ip(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return 2000


@pytest.fixture()
def traced(monkeypatch: pytest.MonkeyPatch):
    # Whatever the environment asks for, the layer's tracer records neither.
    monkeypatch.setenv("POWERTOOLS_TRACER_CAPTURE_RESPONSE", "true")
    monkeypatch.setenv("POWERTOOLS_TRACER_CAPTURE_ERROR", "true")
    from aws_xray_sdk import global_sdk_config

    was_enabled = global_sdk_config.sdk_enabled()
    global_sdk_config.set_sdk_enabled(True)  # the untraced test process switched the SDK off
    emitter = KeepingEmitter()
    recorder = AWSXRayRecorder()
    recorder.configure(emitter=emitter, sampling=False, context=Context(), context_missing="LOG_ERROR",
                       streaming_threshold=1000)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    MaskedTracer._reset_config()  # Powertools shares one config, made "disabled" by the untraced process
    tracer = MaskedTracer(service="test", provider=MaskingXrayProvider(recorder), auto_patch=False, disabled=False)
    recorder.begin_segment("lambda")
    yield tracer, recorder, emitter
    global_sdk_config.set_sdk_enabled(was_enabled)
    del MaskedTracer._config


def _trace(recorder: AWSXRayRecorder, emitter: KeepingEmitter) -> str:
    recorder.end_segment()
    assert emitter.sent, "nothing was traced"
    return "\n".join(emitter.sent)


def test_handler_response_is_not_recorded(traced) -> None:
    tracer, recorder, emitter = traced

    @tracer.capture_lambda_handler
    def handler(event: dict, context: Any) -> dict:
        return {"statusCode": 200, "body": json.dumps({"id_number": ID_NUMBER, "phone": PHONE})}

    handler({}, None)
    trace = _trace(recorder, emitter)
    assert "## handler" in trace
    assert ID_NUMBER not in trace and PHONE not in trace and "statusCode" not in trace


def test_error_is_recorded_by_type_with_its_text_masked(traced) -> None:
    tracer, recorder, emitter = traced
    root = logging.getLogger()
    lambda_log = RootHandler()  # what the Lambda runtime's handler on the root logger would print
    root.addHandler(lambda_log)

    @tracer.capture_method
    def lookup(number: str) -> None:
        raise ValueError(f"duplicate key (national_id)=({number}) phone {PHONE}")

    with pytest.raises(ValueError, match=ID_NUMBER):  # the caller still gets the real error
        lookup(ID_NUMBER)
    trace = _trace(recorder, emitter)
    assert ID_NUMBER not in trace and PHONE not in trace
    causes = [e for doc in trace.splitlines() for s in json.loads(doc).get("subsegments", [])
              for e in s.get("cause", {}).get("exceptions", [])]
    assert causes and causes[0]["type"] == "ValueError" and "duplicate key" in causes[0]["message"]
    # Powertools' tracer logs the raw traceback on its own package logger, which stops short of the root.
    root.removeHandler(lambda_log)
    assert not [r for r in lambda_log.records if ID_NUMBER in r.getMessage() or r.exc_info]

