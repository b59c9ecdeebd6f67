"""``smartpay seed-events``: the rows the saved events in ``events/`` name, so each works as it is.

``sam local invoke BeneficiariesFunction -e events/beneficiaries/get.json`` looks up a fixed
beneficiary id, ``events/disburse/get.json`` reads a fixed voucher, the webhook events move fixed
vouchers, ``events/reconcile/report_run.json`` reports a fixed run. Seeding is safe to repeat:
existing rows are left as they are. Vouchers reach their starting status through the one
lifecycle writer (``smartpay.transitions``), with an audit row for each step; those sent to Buffr
belong to a seeded run of their cycle, approved by the supervisor (only a run's vouchers are
claimed): 2026-11's is completed, 2026-10's still running (so its pending voucher may be re-sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

REFERENCE = "seed-events"
CYCLE = "2026-11"


@dataclass(frozen=True)
class Person:
    id: str
    id_number: str
    first_name: str
    last_name: str
    msisdn: str


@dataclass(frozen=True)
class Voucher:
    id: str
    owner: str  # Person.id
    status: str  # the status the saved events expect to find
    cycle: str = CYCLE
    #: How long ago it reached that status (a pending voucher Buffr never got, past the grace period).
    hours_ago: int = 0


#: events/beneficiaries/get.json and verify.json (this person's ID number and name).
RAUNA = Person("4017ef3f-181e-411a-9958-8201c7aec9b0", "44050267085", "Rauna", "Shilongo", "+264811000001")
#: events/disburse/issue.json issues this person's 2026-11 voucher (so none is seeded for them).
PANDULENI = Person("2b7e9c14-5d3a-4f8e-8a61-3c9d0e7f4a52", "47031200215", "Panduleni", "Amutenya", "+264811000002")
_OTHERS = [Person(f"5eed0000-0000-4000-8000-00000000000{n}", f"4{n}0101000{n}{n}", "Seed", f"Person{n}",
                  f"+26481200000{n}") for n in range(1, 8)]
PEOPLE = [RAUNA, PANDULENI, *_OTHERS]

VOUCHERS = [
    # events/disburse/get.json
    Voucher("6f1c2a7e-3b9d-4c21-9e55-0a7d4b8c1f20", RAUNA.id, "issued"),
    # events/webhook/buffr.json and events/webhooks/01-03, 10, 12: sent to Buffr, awaiting activation
    Voucher("7d3f1c2a-5b8e-4f61-9a0d-2c4e6b8a1f01", _OTHERS[0].id, "pending"),
    Voucher("7d3f1c2a-5b8e-4f61-9a0d-2c4e6b8a1f02", _OTHERS[1].id, "pending"),  # 04-05
    Voucher("7d3f1c2a-5b8e-4f61-9a0d-2c4e6b8a1f03", _OTHERS[2].id, "active"),   # 06
    Voucher("7d3f1c2a-5b8e-4f61-9a0d-2c4e6b8a1f04", _OTHERS[3].id, "pending"),  # 07
    Voucher("7d3f1c2a-5b8e-4f61-9a0d-2c4e6b8a1f05", _OTHERS[4].id, "pending"),  # 08-09
    # events/reconcile/vouchers.json; pending for 2 hours and unknown at Buffr, so
    # events/reconcile/redisburse.json re-sends it through the disburse function (its run is running)
    Voucher("3f0b6a52-8f1e-4b5e-9a51-2d9f1f0c7a10", _OTHERS[5].id, "pending", cycle="2026-10", hours_ago=2),
    Voucher("9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f", _OTHERS[6].id, "active"),
]
#: events/reconcile/report_run.json: a finished, empty run.
REPORT_RUN_ID = "00000000-0000-0000-0000-000000000000"
#: events/disburse/cycle_status.json: last month's cycle run, prepared and left to expire unapproved
#: (events/disburse/cycle_chunk.json names it too: a message of a run that was never enqueued is
#: dropped as stale, as a redelivery after the run finished would be).
CYCLE_RUN_ID = "c7c1e000-0000-4000-8000-000000000001"
_PATH = {"issued": [], "pending": ["pending"], "active": ["pending", "active"]}
#: The seeded runs that sent the pending and active vouchers, per cycle, and their status after.
SEND_RUNS = {"2026-11": ("c7c1e000-0000-4000-8000-000000000011", "completed"),
             "2026-10": ("c7c1e000-0000-4000-8000-000000000010", "running")}


def seed(conninfo: str) -> dict[str, int]:
    """Insert what is missing (as the schema owner); returns how many rows were added."""
    from smartpay.transitions import audit_as, transition

    added = {"beneficiaries": 0, "vouchers": 0, "runs": 0, "cycle_runs": 0}
    with psycopg.connect(conninfo) as conn, conn.transaction():
        audit_as(conn, source="operator", reference=REFERENCE)  # the 'issued' rows the database writes
        for person in PEOPLE:
            added["beneficiaries"] += conn.execute(
                """INSERT INTO beneficiaries (id, id_number, first_name, last_name, msisdn, region, programme, status)
                   VALUES (%s, %s, %s, %s, %s, 'Khomas', 'old_age', 'active') ON CONFLICT DO NOTHING""",
                (person.id, person.id_number, person.first_name, person.last_name, person.msisdn)).rowcount
        expires = datetime.now(UTC) + timedelta(days=60)
        # Each sending run is born awaiting approval (the database refuses anything else and writes
        # its events), approved by the supervisor, then enqueued and running.
        for cycle, (run_id, _) in SEND_RUNS.items():
            conn.execute("SELECT set_config('smartpay.actor', 'operator', true), "
                         "set_config('smartpay.actor_key', 'operator-local', true)")  # the maker prepares
            fresh_run = conn.execute(
                """INSERT INTO cycle_runs (id, programme, cycle, idempotency_key, fingerprint, voucher_count,
                                           total_amount_cents, chunk_size, maker_principal, maker_key_id,
                                           prepared_at, expires_at)
                   VALUES (%s, 'old_age', %s, %s, repeat('0', 64), 0, 0, 500, 'operator',
                           'operator-local', now() - interval '3 days', now() - interval '2 days')
                   ON CONFLICT DO NOTHING""", (run_id, cycle, f"{REFERENCE}-{cycle}")).rowcount
            added["cycle_runs"] += fresh_run
            if fresh_run:
                conn.execute("SELECT set_config('smartpay.actor', 'supervisor', true), "
                             "set_config('smartpay.actor_key', 'supervisor-local', true)")  # the checker approves
                conn.execute("""UPDATE cycle_runs SET status = 'approved', checker_principal = 'supervisor',
                                       checker_key_id = 'supervisor-local', approved_at = now() - interval '3 days'
                                 WHERE id = %s""", (run_id,))
                for step in ("enqueuing", "running"):
                    conn.execute("UPDATE cycle_runs SET status = %s WHERE id = %s", (step, run_id))
        for voucher in VOUCHERS:
            fresh = conn.execute(
                """INSERT INTO vouchers (id, beneficiary_id, programme, cycle, amount_cents, expires_at)
                   VALUES (%s, %s, 'old_age', %s, 140000, %s) ON CONFLICT DO NOTHING""",
                (voucher.id, voucher.owner, voucher.cycle, expires)).rowcount
            if not fresh:
                continue
            added["vouchers"] += 1
            if _PATH[voucher.status]:
                conn.execute("INSERT INTO cycle_run_items (run_id, voucher_id, chunk_no) VALUES (%s, %s, 0) "
                             "ON CONFLICT DO NOTHING", (SEND_RUNS[voucher.cycle][0], voucher.id))
            for step in _PATH[voucher.status]:
                result = transition(conn, voucher.id, step, source="operator", reference=REFERENCE,
                                    delivery_id=f"seed_{voucher.id[-4:]}" if step == "pending" else None)
                if not result.applied:
                    raise RuntimeError(f"seeding voucher {voucher.id}: {step} refused ({result.outcome})")
            if voucher.hours_ago:
                conn.execute("UPDATE vouchers SET status_changed_at = now() - make_interval(hours => %s) "
                             "WHERE id = %s", (voucher.hours_ago, voucher.id))
        for run_id, status in SEND_RUNS.values():
            conn.execute("UPDATE cycle_runs SET status = %s, finished_at = now() WHERE id = %s AND status = 'running' "
                         "AND %s = 'completed'", (status, run_id, status))
        added["runs"] = conn.execute(
            """INSERT INTO reconciliation_runs (id, mode, status, finished_at)
               VALUES (%s, 'full', 'completed', now()) ON CONFLICT DO NOTHING""", (REPORT_RUN_ID,)).rowcount
        # born awaiting approval (the database refuses anything else; its events are the database's),
        # then expired unapproved
        conn.execute("SELECT set_config('smartpay.actor', 'operator', true), "
                     "set_config('smartpay.actor_key', 'operator-local', true)")
        added["cycle_runs"] += conn.execute(
            """INSERT INTO cycle_runs (id, programme, cycle, idempotency_key, fingerprint, voucher_count,
                                       total_amount_cents, chunk_size, maker_principal, maker_key_id,
                                       prepared_at, expires_at)
               VALUES (%s, 'old_age', '2026-10', %s, repeat('0', 64), 1, 140000, 500, 'operator',
                       'operator-local', now() - interval '2 days', now() - interval '1 day')
               ON CONFLICT DO NOTHING""", (CYCLE_RUN_ID, REFERENCE)).rowcount
        conn.execute("UPDATE cycle_runs SET status = 'expired', finished_at = now() "
                     "WHERE id = %s AND status = 'awaiting_approval'", (CYCLE_RUN_ID,))
    return added


def summary(added: dict[str, Any]) -> str:
    return ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in added.items()) + " added (existing rows kept)"


# --- the ``smartpay seed-events`` and ``smartpay sign-event`` commands --------------------------
def add_commands(command: Any, stack_factory: Any) -> None:
    """Register the commands; ``command(name, help, description)`` makes a subcommand parser."""
    p = command("seed-events", "add the beneficiaries, vouchers and runs the saved events in events/ name",
                "Inserts (once; existing rows are kept) the rows that events/beneficiaries, events/disburse, "
                "events/webhook(s) and events/reconcile refer to, so `sam local invoke` and `smartpay invoke` "
                "work with the saved events as they are. Writes to the local stack's PostgreSQL as the owner.")
    p.set_defaults(func=lambda args: cmd_seed(args, stack_factory(args)))

    p = command("sign-event", "print a saved webhook proxy event signed afresh (for sam local invoke)",
                "A saved webhook event's signature is long outside the 5-minute window: this prints the event "
                "with new Standard Webhooks headers signed by the local webhook secret "
                "(WebhookFunction.WEBHOOK_SECRET in the env-vars file, or $SMARTPAY_WEBHOOK_SECRET).")
    p.add_argument("event", help="a saved API Gateway proxy event, e.g. events/webhook/buffr.json")
    p.set_defaults(func=lambda args: cmd_sign(args, stack_factory(args)))


def cmd_seed(args: Any, stack: Any) -> int:
    from smartpay_tools.local.services import resolve_postgres

    file_url = stack.env_file.get("Parameters", {}).get("DATABASE_URL") or None
    postgres = resolve_postgres(stack.database_url or file_url)
    print(summary(seed(postgres.url)))
    return 0


def cmd_sign(args: Any, stack: Any) -> int:
    import json
    import sys
    from pathlib import Path

    from smartpay_tools.buffr_sim.webhook_sender import resign_event

    if not stack.webhook_secrets:
        print("error: no webhook secret (env-vars file WebhookFunction.WEBHOOK_SECRET)", file=sys.stderr)
        return 2
    event = json.loads(Path(args.event).read_text())
    resign_event(event, stack.webhook_secrets)
    print(json.dumps(event, indent=2))
    return 0
