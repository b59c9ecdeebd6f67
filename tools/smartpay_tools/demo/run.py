"""``smartpay demo`` — the main job: a whole pay cycle on the local stack, start to report.

1. Brings up the local stack: a fresh ``smartpay_demo`` database (the machine's PostgreSQL, or
   a throwaway server), moto's DynamoDB, the Buffr simulator and the API gateway.
2. Generates a programme cycle (synthetic payroll) and imports it: beneficiaries upserted,
   vouchers issued.
3. Disburses every programme of the cycle as a cycle run: prepared by the operator, approved by
   the supervisor (four eyes), carried by the cycle queue and the disburse function at Buffr's
   agreed rate (``DEMO_TEMPLATE_PARAMETERS``), watched until complete; after the first programme
   the registry changes mid-cycle (``import-beneficiaries``): some beneficiaries not yet paid are
   suspended or have died (their vouchers are held or cancelled: 0 paid), and a few already paid
   have died (flagged for review). After the runs, half the suspended are reinstated: their held
   vouchers are paid by a supplementary run per programme, prepared and approved like any run.
4. Lets Buffr's simulator report back with faults: duplicated and reordered webhooks, ~5 %
   dropped, and some redemptions that happen only at Buffr (no webhook at all).
5. Runs reconciliation (the template's ReconcileFunction, invocation after invocation).
6. Prints the end-of-cycle report with each programme's compliance section (as the read-only
   auditor role, naming the latest audit anchor it verifies) and writes it as CSV and as one
   self-contained HTML page; then runs ``smartpay audit verify --anchors`` over the whole audit
   trail and every anchor the cycle runs and reconciliation wrote to the stack's Object Lock bucket
   (moto), which must pass (else the demo fails).

Every figure in the report is read back from PostgreSQL or from the simulator's own counters;
nothing is computed on the side.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.cli import cycle as cycle_cli
from smartpay_tools.cli.compliance import cmd_audit_verify, read_anchors
from smartpay_tools.data import datagen, payroll_import, registry_import
from smartpay_tools.demo.figures import check, collect, compliance_reports
from smartpay_tools.demo.report import render_html, render_text, write_csv
from smartpay_tools.local.gateway import Gateway, docs_routes, serve
from smartpay_tools.local.services import drop_database, ensure_database, resolve_postgres
from smartpay_tools.local.stack import LocalStack

DEMO_DB = "smartpay_demo"
#: Where the demo's function logs go (``--verbose`` streams them to the terminal instead).
LOG_DIR = PROJECT_ROOT / ".local" / "logs"
#: The demo's Buffr agreement: 400 requests/s shared by at most four consumer invocations (the
#: template's defaults are 200/s and five: a deployment states its own).
DEMO_TEMPLATE_PARAMETERS = {"BuffrMaxRatePerSecond": "400", "CycleQueueMaxConcurrency": "4"}
#: Buffr's behaviour in the demo: most vouchers settle, with the faults Buffr really shows.
WEBHOOK_FAULTS = {"enabled": True, "settle_rate": 0.7, "redeem_rate": 0.85, "duplicate_rate": 0.1,
                  "reorder_rate": 0.1, "drop_rate": 0.05, "delay_ms": 0, "jitter_ms": 0}
BUFFR_ONLY_SHARE = 0.02  # of the vouchers still active: redeemed at Buffr with no webhook at all
INELIGIBLE_SHARE = 0.01  # of the beneficiaries not yet paid: suspended or deceased mid-cycle (half each)
DECEASED_AFTER_PAYMENT = 5  # beneficiaries already paid who die mid-cycle: flagged for review


@dataclass
class Step:
    name: str
    seconds: float
    note: str


@dataclass
class DemoResult:
    cycle: str
    database: str
    steps: list[Step] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    ok: bool = False


def _say(message: str) -> None:
    print(message, flush=True)


def fresh_database(database_url: str | None, name: str = DEMO_DB) -> tuple[str, str]:
    """A new, empty demo database on whichever server the stack would use; returns (url, origin)."""
    server = resolve_postgres(database_url, dbname=name)
    admin = make_conninfo(server.url, dbname="postgres")
    drop_database(admin, name)
    return ensure_database(admin, name), server.origin


def run(*, port: int, beneficiaries: int, out_dir: Path, database_url: str | None = None,
        keep_serving: bool = False, env_vars: Path | None = None, seed: int = 2026,
        database_name: str = DEMO_DB, log_dir: Path | None = LOG_DIR) -> int:
    """The demo; the functions' logs go to one file each under ``log_dir`` (None: the terminal)."""
    started = time.monotonic()
    cycle = datetime.now(UTC).strftime("%Y-%m")
    url, origin = fresh_database(database_url, database_name)
    result = DemoResult(cycle=cycle, database=origin)
    base = f"http://127.0.0.1:{port}"
    stack = LocalStack(env_file_path=env_vars, database_url=url, simulator_port=0, webhook_url=base,
                       webhook_knobs=dict(WEBHOOK_FAULTS), max_concurrency=4,
                       template_parameters=dict(DEMO_TEMPLATE_PARAMETERS), log_dir=log_dir)
    server = None
    try:
        t = time.monotonic()
        stack.start_services()
        server = serve(Gateway(stack, extra_routes=docs_routes()), port=port)
        stack.start_event_sources()
        result.steps.append(Step("local stack", time.monotonic() - t,
                                 f"PostgreSQL ({origin}, database {database_name}), moto DynamoDB, Buffr simulator, "
                                 f"gateway {base}"))
        _say(f"[1/6] local stack up: {result.steps[-1].note}")
        if log_dir is not None:
            _say(f"      function logs: {log_dir}/<Function>.log (one file each; --verbose shows them here)")

        t = time.monotonic()
        with tempfile.TemporaryDirectory() as work:  # the payroll file holds (synthetic) PII: never kept
            payroll_csv = Path(work) / f"payroll-{cycle}.csv"
            with payroll_csv.open("w", newline="") as handle:
                rows = datagen.write_csv(datagen.payroll(beneficiaries, cycle, seed), handle,
                                         datagen.PAYROLL_FIELDS)
            imported = payroll_import.import_file(stack.postgres.url, payroll_csv)
        result.steps.append(Step("payroll import", time.monotonic() - t,
                                 f"{rows} payroll rows for {beneficiaries} generated beneficiaries; "
                                 f"{imported.vouchers_issued} vouchers issued, {len(imported.rejected)} rejected"))
        _say(f"[2/6] payroll imported: {result.steps[-1].note}")

        t = time.monotonic()
        outcomes, changed = _disburse_as_cycle_runs(stack, base, cycle, seed)
        result.steps.append(Step("disbursement", time.monotonic() - t,
                                 "as cycle runs and supplementary runs (operator prepares, supervisor approves; SQS + the disburse "
                                 f"function at {stack.template.parameters['BuffrMaxRatePerSecond']}/s): "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
                                 + "; registry changed mid-cycle: "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(changed.items()))))
        _say(f"[3/6] disbursed: {result.steps[-1].note}")

        t = time.monotonic()
        flushed = stack.buffr.flush_webhooks(timeout_s=240)
        buffr_only = _buffr_only_redemptions(stack, seed)
        result.steps.append(Step("Buffr reports back", time.monotonic() - t,
                                 f"webhooks delivered ({'all answered' if flushed else 'queue NOT drained'}); "
                                 f"{buffr_only} redemptions made only at Buffr (no webhook)"))
        _say(f"[4/6] webhooks: {result.steps[-1].note}")

        t = time.monotonic()
        run_ids = _reconcile(stack)
        result.steps.append(Step("reconciliation", time.monotonic() - t,
                                 f"{len(run_ids)} run(s), ReconcileFunction invoked until complete"))
        _say(f"[5/6] reconciled: {result.steps[-1].note}")

        t = time.monotonic()
        buffr_stats = stack.buffr.stats(detail=True)
        bucket, s3 = anchor_bucket(stack)
        result.report = {**collect(stack.postgres.url, cycle, run_ids, buffr_stats), "buffr_only": buffr_only,
                         "compliance": compliance_reports(stack.postgres.url, cycle, buffr_stats,
                                                          read_anchors(bucket, s3)[1])}
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        csv_path, html_path = out_dir / f"demo-{stamp}.csv", out_dir / f"demo-{stamp}.html"
        write_csv(result.report, csv_path)
        html_path.write_text(render_html(result.report, result.steps))
        result.files = [csv_path, html_path]
        result.steps.append(Step("report", time.monotonic() - t, f"{csv_path.name}, {html_path.name}"))
        _say("[6/6] report\n")
        _say(render_text(result.report))
        problems = check(result.report, flushed)
        _say("\n$ smartpay audit verify --anchors")
        if not verify_audit_trail(stack.postgres.url, bucket, s3):
            problems.append("smartpay audit verify --anchors failed: the audit trail's hash chains or its "
                            "anchors do not verify")
        result.ok = not problems
        for problem in problems:
            _say(f"PROBLEM: {problem}")
        _say(f"\nwritten: {csv_path}\n         {html_path}")
        _say(f"demo {'passed' if result.ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
        if keep_serving and result.ok:
            _say(f"\nstill serving on {base} (Swagger UI: {base}/docs); Ctrl-C to stop")
            _wait()
        return 0 if result.ok else 1
    finally:
        if server is not None:
            server.shutdown()
        stack.stop()


def anchor_bucket(stack: LocalStack) -> tuple[str, Any]:
    """The stack's audit anchor bucket and an S3 client on its moto."""
    import boto3

    (bucket, _days), = stack.template.object_lock_buckets()
    return bucket, boto3.client("s3", endpoint_url=stack.moto.endpoint, region_name=stack.region,
                                aws_access_key_id="testing", aws_secret_access_key="testing")


def verify_audit_trail(database_url: str, bucket: str | None = None, s3: Any = None) -> bool:
    """``smartpay audit verify`` over every voucher (the CLI's own command, as the auditor), and
    ``--anchors`` when the stack's anchor bucket is given; prints its lines."""
    args = argparse.Namespace(programme=None, cycle=None, since=None, upto=None, json=False,
                              anchors=bucket is not None, anchors_since=None, anchor_bucket=bucket, s3=s3)
    return cmd_audit_verify(args, database_url) == 0


def _disburse_as_cycle_runs(stack: LocalStack, base: str, cycle: str,
                            seed: int) -> tuple[dict[str, int], dict[str, int]]:
    """Each programme's cycle run, started (operator) and approved (supervisor), watched to the end
    (the registry changes after the first); the runs' final progress by outcome, summed over the
    programmes, and the registry changes."""
    outcomes: dict[str, int] = {}
    changed: dict[str, int] = {}
    programmes = sorted(datagen.PROGRAMMES)
    for n, programme in enumerate(programmes):
        if n == 1:  # mid-cycle: the registry changes between two programmes' payments
            changed = _registry_changes_mid_cycle(stack, cycle, programme_paid=programmes[0], seed=seed)
        run = _run(stack, base, programme, cycle, f"demo-{programme}-{cycle}")
        for name in ("active", "failed", "pending", "held", "queued"):
            outcomes[name] = outcomes.get(name, 0) + int(run["progress"][name])
    reinstated = _reinstate_some(stack, cycle, seed)
    changed["reinstated after the runs"] = sum(reinstated.values())
    for programme in sorted(reinstated):  # their held vouchers: a supplementary run each, four eyes again
        run = _run(stack, base, programme, cycle, f"demo-supplementary-{programme}-{cycle}", supplementary=True)
        outcomes["active by supplementary runs"] = (outcomes.get("active by supplementary runs", 0)
                                                    + int(run["progress"]["active"]))
    return outcomes, changed


def _run(stack: LocalStack, base: str, programme: str, cycle: str, key: str, *,
         supplementary: bool = False) -> dict[str, Any]:
    """One run: prepared by the operator, approved (named by id and fingerprint) by the supervisor,
    watched to the end."""
    api = cycle_cli.CycleApi(base, programme, cycle)
    try:
        prepared = (api.supplementary(stack.local["OperatorApiKey"], key, {"held_eligible_again": True})
                    if supplementary else api.prepare(stack.local["OperatorApiKey"], key))
        api.approve(stack.local["SupervisorApiKey"], prepared["run_id"], prepared["fingerprint"])
        run = api.watch(stack.local["OperatorApiKey"], every_s=0.5, timeout_s=600)
    finally:
        api.close()
    _say(f"      {programme}: {'supplementary ' if supplementary else ''}run {run['run_id']} {run['status']};"
         + cycle_cli.progress_line(run["progress"]))
    return run


def _reinstate_some(stack: LocalStack, cycle: str, seed: int) -> dict[str, int]:
    """Half the beneficiaries suspended mid-cycle are reinstated after the runs (a registry CSV
    again): their held vouchers are paid by a supplementary run. Reinstated per programme."""
    columns = ", ".join(f"b.{name}" for name in datagen.FIELDS)
    with psycopg.connect(stack.postgres.url, row_factory=dict_row) as conn:
        suspended = conn.execute(
            f"""SELECT {columns} FROM beneficiaries b JOIN vouchers v ON v.beneficiary_id = b.id
                 WHERE v.cycle = %s AND v.status = 'held' AND b.status = 'suspended' ORDER BY b.id""",
            (cycle,)).fetchall()
    chosen = random.Random(seed + 2).sample(suspended, k=len(suspended) // 2)
    if chosen:
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "registry-reinstated.csv"
            with path.open("w", newline="") as handle:
                datagen.write_csv(iter({**row, "status": "active"} for row in chosen), handle)
            registry_import.import_file(stack.postgres.url, path)
    counts: dict[str, int] = {}
    for row in chosen:
        counts[row["programme"]] = counts.get(row["programme"], 0) + 1
    _say(f"      registry update after the runs: reinstated {len(chosen)} suspended beneficiaries")
    return counts


def _registry_changes_mid_cycle(stack: LocalStack, cycle: str, *, programme_paid: str, seed: int) -> dict[str, int]:
    """The registry's news arrives mid-cycle, through the operator's own path (a registry CSV
    imported with ``import-beneficiaries``): some beneficiaries not yet paid are suspended or
    have died, and a few already paid have died. The file (synthetic PII) is never kept."""
    rng = random.Random(seed + 1)
    columns = ", ".join(f"b.{name}" for name in datagen.FIELDS)  # vouchers has a programme column too
    with psycopg.connect(stack.postgres.url, row_factory=dict_row) as conn:
        unpaid = conn.execute(
            f"""SELECT {columns} FROM beneficiaries b JOIN vouchers v ON v.beneficiary_id = b.id
                 WHERE v.cycle = %s AND v.status = 'issued' ORDER BY b.id""", (cycle,)).fetchall()
        paid = conn.execute(
            f"""SELECT {columns} FROM beneficiaries b JOIN vouchers v ON v.beneficiary_id = b.id
                 WHERE v.cycle = %s AND v.programme = %s AND v.status = 'active' ORDER BY b.id""",
            (cycle, programme_paid)).fetchall()
    chosen = rng.sample(unpaid, k=max(2, int(len(unpaid) * INELIGIBLE_SHARE))) if len(unpaid) >= 2 else []
    changes = [{**row, "status": "suspended" if i % 2 else "deceased"} for i, row in enumerate(chosen)]
    changes += [{**row, "status": "deceased"} for row in rng.sample(paid, k=min(DECEASED_AFTER_PAYMENT, len(paid)))]
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "registry-update.csv"
        with path.open("w", newline="") as handle:
            datagen.write_csv(iter(changes), handle)
        registry_import.import_file(stack.postgres.url, path)
    counts = {"suspended before payment": sum(c["status"] == "suspended" for c in changes[:len(chosen)]),
              "deceased before payment": sum(c["status"] == "deceased" for c in changes[:len(chosen)]),
              "deceased after payment": len(changes) - len(chosen)}
    _say("      registry update mid-cycle: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def _buffr_only_redemptions(stack: LocalStack, seed: int) -> int:
    """Redeem a few still-active vouchers at Buffr only: drift that only reconciliation can find."""
    with psycopg.connect(stack.postgres.url) as conn:
        active = [str(r[0]) for r in conn.execute("SELECT id FROM vouchers WHERE status = 'active' ORDER BY id")]
    chosen = random.Random(seed).sample(active, k=max(1, int(len(active) * BUFFR_ONLY_SHARE))) if active else []
    if chosen:
        stack.buffr.settle_many(chosen, "redeemed", webhook=False)
    return len(chosen)


def _reconcile(stack: LocalStack, max_invocations: int = 200) -> list[str]:
    run_ids: list[str] = []
    for _ in range(max_invocations):
        reply = stack.invoke("ReconcileFunction", {"mode": "full"})
        if reply["run_id"] not in run_ids:
            run_ids.append(reply["run_id"])
        if reply["status"] == "completed":
            return run_ids
    raise RuntimeError(f"reconciliation did not complete in {max_invocations} invocations")


def _wait() -> None:
    import threading

    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        return


DEFAULT_OUT = PROJECT_ROOT / "reports"
