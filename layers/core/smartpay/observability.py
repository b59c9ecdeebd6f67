"""Powertools Logger, Metrics and Tracer, configured once for every function.

The logger's formatter masks PII by key and by pattern on every line, so a careless
``logger.info(payload)`` still cannot leak a national ID number or a phone number.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from smartpay.masking import scrub, scrub_text

NAMESPACE = "KetchupSmartPay"


class PiiMaskingFormatter(LambdaPowertoolsFormatter):
    """JSON formatter that masks PII in every structured field and in the rendered line.

    PII keys are masked in the record (their values need not look like PII); patterns are masked
    on the rendered line, which holds every string of the record (JSON escapes neither digits
    nor ``+``), so nothing in the record escapes the pattern pass.
    """

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        return scrub_text(super().serialize(scrub(log, patterns=False)))


os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)

def tracing_enabled() -> bool:
    """Powertools' own rule: traced in Lambda unless POWERTOOLS_TRACE_DISABLED; never in emulators."""
    from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

    if resolve_truthy_env_var_choice(env=os.getenv("POWERTOOLS_TRACE_DISABLED", "false")):
        return False
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not os.getenv("AWS_SAM_LOCAL")


class _NoSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None: ...
    def add_subsegment(self, subsegment: Any) -> None: ...
    def remove_subsegment(self, subsegment: Any) -> None: ...
    def put_annotation(self, key: str, value: Any) -> None: ...
    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...
    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None: ...


class _UntracedProvider(BaseProvider):
    """Stands in for the X-Ray recorder when tracing is off.

    Powertools' Tracer otherwise imports the X-Ray SDK (and with it botocore) even when
    disabled: cold-start time an untraced container never uses (docs/performance.md, cold start).
    """

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield _NoSegment()

    @asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncIterator[BaseSegment]:
        yield _NoSegment()

    def put_annotation(self, key: str, value: Any) -> None: ...
    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...
    def patch(self, modules: Any) -> None: ...
    def patch_all(self) -> None: ...


def _masked(error: BaseException) -> Exception:
    """A stand-in for ``error`` as X-Ray records it: same type name, PII patterns masked."""
    return type(type(error).__name__, (Exception,), {})(scrub_text(str(error)))


class MaskingXrayProvider(BaseProvider):
    """The X-Ray recorder, except that an exception leaving a subsegment is recorded masked.

    X-Ray's own subsegment context manager records ``str(exception)`` as it is (a database
    error can quote a national ID number), whatever Powertools' ``capture_error`` says.
    """

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[Any]:
        subsegment = self.recorder.begin_subsegment(name, **kwargs)
        try:
            yield subsegment
        except BaseException as error:
            if subsegment is not None:
                subsegment.add_exception(_masked(error), [])
            raise
        finally:
            self.recorder.end_subsegment()

    @asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        with self.in_subsegment(name, **kwargs) as subsegment:
            yield subsegment

    def put_annotation(self, key: str, value: Any) -> None:
        self.recorder.put_annotation(key=key, value=value)

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.recorder.put_metadata(key=key, value=scrub(value), namespace=namespace)

    def patch(self, modules: Any) -> None:
        from aws_xray_sdk.core import patch

        patch(modules)

    def patch_all(self) -> None:
        from aws_xray_sdk.core import patch_all

        patch_all()


class MaskedTracer(Tracer):
    """Powertools' Tracer that never puts a handler's response or an error's text in a trace.

    Responses (beneficiary details, voucher replies) are not recorded at all; an error is
    recorded as its type and masked message. The template also sets
    POWERTOOLS_TRACER_CAPTURE_RESPONSE/ERROR=false; this holds whatever the environment says.
    """

    def _add_response_as_metadata(self, method_name: str | None = None, data: Any | None = None,
                                  subsegment: BaseSegment | None = None,
                                  capture_response: bool | str | None = None) -> None:
        return None

    def _add_full_exception_as_metadata(self, method_name: str, error: Exception, subsegment: BaseSegment,
                                        capture_error: bool | None = None) -> None:
        subsegment.put_metadata(key=f"{method_name} error", value=str(_masked(error)), namespace=self.service)


def make_tracer() -> Tracer:
    if not tracing_enabled():
        return Tracer(disabled=True, auto_patch=False, provider=_UntracedProvider())
    from aws_xray_sdk.core import xray_recorder

    return MaskedTracer(provider=MaskingXrayProvider(xray_recorder))


logger = Logger(logger_formatter=PiiMaskingFormatter(), use_rfc3339=True)
metrics = Metrics(namespace=NAMESPACE)
tracer = make_tracer()


_route_metrics = threading.local()


def count_idempotent_request(route: str, *, replayed: bool) -> None:
    """``IdempotentRequests`` and ``IdempotencyReplays`` (0 or 1) for one answered request of an
    idempotent route, with a ``route`` dimension beside ``service`` (docs/operations.md "Metrics"):
    the hit rate per route is their ratio. Its own EMF line, so the function's other metrics keep
    their one ``service`` dimension (one name per concept, the same in every function)."""
    blob = getattr(_route_metrics, "blob", None)
    if blob is None:  # one per thread, reused (flushing empties it): building one costs more than the line
        blob = _route_metrics.blob = EphemeralMetrics(namespace=NAMESPACE)
    blob.add_dimension(name="route", value=route)
    blob.add_metric(name="IdempotentRequests", unit=MetricUnit.Count, value=1)
    blob.add_metric(name="IdempotencyReplays", unit=MetricUnit.Count, value=1 if replayed else 0)
    blob.flush_metrics()
