"""Reconcile: EventBridge schedule or manual invocation → one reconciliation step (or a report).

Events: the scheduled event (``detail-type: Scheduled Event``; its ``detail`` may carry the same
fields as a manual event), a manual event (:class:`reconcile.models.ReconcileRequest`: ``mode``,
``since``, ``voucher_ids``, ``shard``/``shards``, ``dry_run``, ``redisburse_pending`` …), or
``{"report": {"run_id": …}}`` / ``{"report": {"programme": …, "cycle": …}}`` /
``{"report": {"compliance": true, "programme": …, "cycle": …}}`` (docs/operations.md).
A malformed event fails the invocation with a message naming each bad field.

The report modules (``reconcile.report``, ``smartpay.compliance``) are imported by the report
events that use them, not at a cold start that reconciles (docs/performance.md#cold-start-of-every-function).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from reconcile import service
from reconcile.models import ReconcileRequest, ReportRequest
from smartpay import coldstart, db
from smartpay.observability import NAMESPACE, logger, metrics, tracer
from smartpay.validation import InvalidEvent, event_model

if TYPE_CHECKING:
    from smartpay.compliance import MetricTotals

__all__ = ["InvalidEvent", "lambda_handler"]

WHAT = "reconciliation event"


def _parse(model: Any, data: Any) -> Any:
    """The event as ``model``, or :class:`InvalidEvent` naming each bad field (the layer's one format)."""
    return event_model(model, data, what=WHAT)


def _request(event: dict[str, Any]) -> ReconcileRequest:
    if event.get("detail-type") == "Scheduled Event" or event.get("source") == "aws.events":
        return _parse(ReconcileRequest, event.get("detail") or {})
    return _parse(ReconcileRequest, event)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise InvalidEvent(WHAT, [{"location": "event", "message": "expected a JSON object", "type": "dict_type"}])
    if "report" in event:
        request = _parse(ReportRequest, event["report"])
        if request.compliance:
            return _compliance(request.programme, request.cycle)
        from reconcile import report as recon_report

        with db.connection() as conn:
            if request.run_id is not None:
                report = recon_report.run_report(conn, str(request.run_id))
            else:
                report = recon_report.cycle_report(conn, request.programme, request.cycle)
        return {**report, "text": recon_report.to_text(report)}
    return service.reconcile(_request(event), context).model_dump(mode="json")


def _metric_totals() -> MetricTotals | None:
    """Where the idempotency hit rates come from: CloudWatch (``COMPLIANCE_METRICS=cloudwatch``,
    the deployed stack) or nowhere (reported as unavailable)."""
    if os.environ.get("COMPLIANCE_METRICS", "none") != "cloudwatch":
        return None
    import boto3

    from smartpay import compliance

    return compliance.cloudwatch_totals(boto3.client("cloudwatch"), NAMESPACE, compliance.ROUTE_SERVICES)


def _compliance(programme: str, cycle: str) -> dict[str, Any]:
    from smartpay import compliance, compliance_render

    with db.connection() as conn:
        report = compliance.report(conn, programme, cycle, metrics=_metric_totals())
    logger.info("compliance report", extra={"programme": programme, "cycle": cycle,
                                            "checks": compliance.checks(report),
                                            "audit_chain_head": report["audit_chain"]["head"]})
    return {**report, "text": compliance_render.to_text(report)}


coldstart.end()  # the init is over: freeze what it loaded, collector back on (smartpay.coldstart)
