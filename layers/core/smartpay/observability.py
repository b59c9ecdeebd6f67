"""Powertools Logger, Metrics and Tracer, configured once for every function.

The logger's formatter masks PII by key and by pattern on every line, so a careless
``logger.info(payload)`` still cannot leak a national ID number or a phone number.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from smartpay.masking import scrub, scrub_text

NAMESPACE = "KetchupSmartPay"


class PiiMaskingFormatter(LambdaPowertoolsFormatter):
    """JSON formatter that masks PII in every structured field and in the rendered line."""

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        return scrub_text(super().serialize(scrub(log)))


os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)

logger = Logger(logger_formatter=PiiMaskingFormatter(), use_rfc3339=True)
metrics = Metrics(namespace=NAMESPACE)
tracer = Tracer()
