"""Import a programme cycle's payroll CSV: beneficiaries upserted, vouchers issued in bulk.

Columns: ``id_number, first_name, last_name, msisdn, region, programme, cycle, amount_cents``.

Each chunk (default 10,000 rows) is one transaction: the validated rows are COPYed into a
temporary table; rows that cannot be paid (an existing beneficiary who is not eligible —
suspended, deceased, or enrolled in another programme —, an amount above the programme's
maximum, or a voucher already issued for that cycle with another amount) are removed and
reported; the rest are merged into the registry (the same upsert as the registry import, but
never touching an existing beneficiary's status or programme: the registry import owns those)
and get one voucher each through :mod:`smartpay.issuance`, the path the API issues by too (same
rules, same SQL), with its ``issued`` audit row. A rejected row writes nothing. Re-running a file issues nothing new (one voucher per
beneficiary + programme + cycle; existing ones are counted as ``already_issued``). If the
database fails mid-file, the chunks before are committed and a re-run finishes the rest.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from smartpay import issuance
from smartpay_tools.data.datagen import FIELDS
from smartpay_tools.data.registry_import import merge_sql, read_rows, validate

_CYCLE = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")
PERSON = tuple(f for f in FIELDS if f != "status")  # the payroll never changes a beneficiary's status
COLUMNS = ("line", *PERSON, "cycle", "amount_cents", "expires_at")


@dataclass
class PayrollReport:
    rows: int = 0
    beneficiaries_upserted: int = 0
    vouchers_issued: int = 0
    already_issued: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def cycle_expiry(cycle: str) -> datetime:
    """Default expiry: the start of the second month after the cycle (a cycle's whole next month to redeem)."""
    year, month = (int(p) for p in cycle.split("-"))
    month += 2
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=UTC)


def check_payment(row: dict[str, str], expires_at: datetime | None) -> tuple[dict[str, object] | None, str | None]:
    """The row's own shape (cycle, a positive amount, not expired); the issuing rules are
    :mod:`smartpay.issuance`'s, applied in the database."""
    cycle = (row.get("cycle") or "").strip()
    if not _CYCLE.match(cycle):
        return None, f"cycle {cycle!r} must be YYYY-MM"
    raw = (row.get("amount_cents") or "").strip()
    if not raw.isdigit() or int(raw) <= 0:
        return None, f"amount_cents {raw!r} must be a positive whole number of cents"
    amount = int(raw)
    expiry = expires_at or cycle_expiry(cycle)
    if expiry <= datetime.now(UTC):
        return None, f"cycle {cycle} has already expired ({expiry.date()})"
    return {"cycle": cycle, "amount_cents": amount, "expires_at": expiry}, None


# What issuance.issue reads: the chunk's rows with their (now registered) beneficiary's id.
_REQUESTS = """(SELECT i.line, b.id AS beneficiary_id, i.programme, i.cycle, i.amount_cents, 'NAD'::text AS currency,
                  i.expires_at
             FROM incoming_payroll i JOIN beneficiaries b USING (id_number))"""


def _load_chunk(conn: psycopg.Connection, rows: list[dict[str, object]], reference: str,
                report: PayrollReport) -> None:
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_payroll (line integer, id_number text, first_name text, "
        "last_name text, msisdn text, region text, programme text, cycle text, amount_cents bigint, "
        "expires_at timestamptz) ON COMMIT DELETE ROWS")
    with conn.cursor().copy(f"COPY incoming_payroll ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in COLUMNS])
    conn.execute("ANALYZE incoming_payroll")  # temp tables have no statistics: without them the joins go wrong
    rejected = issuance.refuse_before_merge(conn, "incoming_payroll")
    report.beneficiaries_upserted += conn.execute(
        merge_sql("incoming_payroll", PERSON, keep=("programme",))).rowcount
    outcomes = issuance.issue(conn, _REQUESTS, reference=reference)
    rejected += [(o.line, o.reason or "not issued") for o in outcomes if o.outcome == "rejected"]
    report.rejected.extend(sorted(rejected))
    report.vouchers_issued += sum(o.outcome == "issued" for o in outcomes)
    report.already_issued += sum(o.outcome == "exists" for o in outcomes)


def import_file(conninfo: str, path: Path, *, chunk: int = 10_000, expires_at: datetime | None = None,
                progress: Callable[[int], None] | None = None) -> PayrollReport:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = set(next(csv.reader(handle), []))
    missing = {"cycle", "amount_cents"} - header
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}")
    report = PayrollReport()
    reference = f"payroll:{path.name}"
    with psycopg.connect(conninfo, autocommit=True) as conn:  # each chunk its own transaction
        programmes = {code for (code,) in conn.execute("SELECT code FROM programmes")}
        seen: dict[str, int] = {}
        batch: list[dict[str, object]] = []

        chunks = 0

        def flush() -> None:
            nonlocal chunks
            with conn.transaction():
                _load_chunk(conn, batch, reference, report)
            chunks += 1
            if chunks & (chunks - 1) == 0:
                # The tables grow faster than autovacuum re-plans them; stale statistics (an "empty"
                # registry) make the joins nested loops over sequential scans. Chunks 1, 2, 4, 8, …
                conn.execute("ANALYZE beneficiaries, vouchers")
            if progress:
                progress(len(batch))
            batch.clear()

        for line, raw in read_rows(path):
            report.rows += 1
            person, problem = validate(raw, programmes)
            payment = None
            if person is not None:
                payment, problem = check_payment(raw, expires_at)
            if person is not None and payment is not None and person["id_number"] in seen:
                payment, problem = None, f"duplicate id_number (first on line {seen[person['id_number']]})"
            if person is None or payment is None:
                report.rejected.append((line, problem or "invalid"))
                continue
            seen[person["id_number"]] = line
            batch.append({"line": line, **person, **payment})
            if len(batch) >= chunk:
                flush()
        if batch:
            flush()
    report.rejected.sort()
    return report
