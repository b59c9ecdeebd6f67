"""template.yaml's operations dashboard: the integration guide's four metrics, the alarms and the
reconcile DLQ depth — and every custom metric it plots is one the functions really emit, under the
name (and dimensions) docs/operations.md lists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.local.template import Template

RES: dict[str, Any] = Template().resources
DASHBOARDS = {k: v for k, v in RES.items() if v["Type"] == "AWS::CloudWatch::Dashboard"}


def _body() -> tuple[dict[str, Any], dict[str, Any], str]:
    ((_, dashboard),) = DASHBOARDS.items()
    body, variables = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    # ${Resource.Attr} / ${AWS::Region} / ${Var}: substitute markers, then it must be valid JSON.
    return json.loads(re.sub(r"\$\{([^}]+)\}", r"<\1>", body)), variables, body


def _metrics(widget: dict[str, Any]) -> list[list[Any]]:
    return [m for m in widget["properties"].get("metrics", []) if isinstance(m[0], str)]


def _emitted_names() -> set[str]:
    """Metric names the code emits (string literals next to add_metric / single_metric / the outcome map)."""
    names: set[str] = set()
    for path in [*Path(PROJECT_ROOT, "functions").rglob("*.py"), *Path(PROJECT_ROOT, "layers").rglob("*.py")]:
        names |= set(re.findall(r'"((?:[A-Z][a-z]+){2,})"', path.read_text()))
    return names


def test_one_dashboard_with_the_four_guide_metrics_the_alarms_and_the_dlq() -> None:
    body, variables, _ = _body()
    widgets = body["widgets"]
    titles = " | ".join(w["properties"]["title"] for w in widgets)
    for guide in ("success rate", "discrepancies", "Idempotency hit rate", "Webhook delivery latency", "dead-letter"):
        assert guide in titles, guide
    by_title = {w["properties"]["title"]: w for w in widgets}
    latency = next(w for t, w in by_title.items() if t.startswith("Webhook delivery latency"))
    assert sorted(m[-1]["stat"] for m in _metrics(latency)) == ["p50", "p95", "p99"]
    hit = next(w for t, w in by_title.items() if t.startswith("Idempotency hit rate"))
    pairs = {(m[1], m[3], m[5]) for m in _metrics(hit)}
    for route, service in (("issue", "disburse"), ("webhook", "webhook")):
        assert {("IdempotencyReplays", route, service), ("IdempotentRequests", route, service)} <= pairs
    dlq = next(w for t, w in by_title.items() if "dead-letter" in t)
    assert _metrics(dlq)[0][:4] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                                    "<DeadLetterQueueName>"]
    assert variables["DeadLetterQueueName"] == {"Fn::GetAtt": ["ReconcileDeadLetterQueue", "QueueName"]}


def test_every_alarm_on_the_dashboard_exists_and_the_guide_alarms_are_there() -> None:
    body, _, _ = _body()
    (alarms,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    named = [a.removeprefix("<").removesuffix(".Arn>") for a in alarms["properties"]["alarms"]]
    assert all(RES[n]["Type"] == "AWS::CloudWatch::Alarm" for n in named)
    for guide in ("DistributionSuccessRateAlarm", "WebhookDeliveryLatencyAlarm", "ReconciliationDiscrepanciesAlarm",
                  "ReconcileDeadLetterAlarm"):
        assert guide in named
    rate = RES["DistributionSuccessRateAlarm"]["Properties"]
    assert rate["ComparisonOperator"] == "LessThanThreshold" and [m["Id"] for m in rate["Metrics"] if m["ReturnData"]] \
        == ["rate"]


def test_the_services_the_dashboard_names_are_the_functions_service_names() -> None:
    services = {RES[f]["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
                for f in ("DisburseFunction", "WebhookFunction", "ReconcileFunction")}
    body, _, _ = _body()
    plotted = {m[m.index("service") + 1] for w in body["widgets"] for m in _metrics(w) if "service" in m}
    assert plotted <= services


def test_every_custom_metric_plotted_is_emitted_and_documented() -> None:
    body, _, _ = _body()
    plotted = {m[1] for w in body["widgets"] for m in _metrics(w) if m[0] == "KetchupSmartPay"}
    alarmed = {RES[k]["Properties"].get("MetricName") for k, v in RES.items()
               if v["Type"] == "AWS::CloudWatch::Alarm" and RES[k]["Properties"].get("Namespace") == "KetchupSmartPay"}
    emitted = _emitted_names()
    table = Path(PROJECT_ROOT, "docs", "operations.md").read_text().split("\n## Metrics\n", 1)[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", table, flags=re.M))
    assert plotted and plotted | alarmed <= emitted, (plotted | alarmed) - emitted
    assert plotted | alarmed <= documented, (plotted | alarmed) - documented
    assert documented <= emitted, documented - emitted  # the table lists no metric nobody emits
    assert "IdempotentReplays" not in emitted  # the second name for replays is gone
