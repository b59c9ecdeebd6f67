"""Reconcile: EventBridge schedule or manual invocation → one reconciliation step (or a report).

Events: the scheduled event (``detail-type: Scheduled Event``; its ``detail`` may carry the same
fields as a manual event), a manual event (:class:`reconcile.models.ReconcileRequest`: ``mode``,
``since``, ``voucher_ids``, ``shard``/``shards``, ``dry_run``, ``redisburse_pending`` …), or
``{"report": {"run_id": …}}`` / ``{"report": {"programme": …, "cycle": …}}``.
A malformed event fails the invocation with a message naming each bad field.
"""


from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from reconcile import service
from reconcile.models import ReconcileRequest, ReportRequest
from smartpay import db, recon_report
from smartpay.observability import logger, metrics, tracer


class InvalidEvent(ValueError):
    """The event does not describe a reconciliation; the message says which field and why."""


def _parse(model: Any, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors())
        raise InvalidEvent(f"invalid reconciliation event: {problems}") from None


def _request(event: dict[str, Any]) -> ReconcileRequest:
    if event.get("detail-type") == "Scheduled Event" or event.get("source") == "aws.events":
        return _parse(ReconcileRequest, event.get("detail") or {})
    return _parse(ReconcileRequest, event)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise InvalidEvent("invalid reconciliation event: expected a JSON object")
    if "report" in event:
        request = _parse(ReportRequest, event["report"])
        with db.connection() as conn:
            if request.run_id is not None:
                report = recon_report.run_report(conn, str(request.run_id))
            else:
                report = recon_report.cycle_report(conn, request.programme, request.cycle)
        return {**report, "text": recon_report.to_text(report)}
    return service.reconcile(_request(event), context).model_dump(mode="json")
