"""Issuing vouchers: the one path for the API (one voucher) and the payroll import (many).

The rules (docs/api.md "Eligibility"), checked in the database in the statement that inserts:

1. the beneficiary exists, is ``active`` and is enrolled in the voucher's programme
   (``smartpay_ineligibility``, migration 0011 — the rule every payment point applies);
2. the programme exists and the amount is within its maximum;
3. one voucher per beneficiary + programme + cycle (the ``vouchers_one_per_cycle`` constraint:
   a repeat is reported with the voucher that exists, never issued twice).

:func:`issue` takes its requests from any relation with the columns of :data:`REQUEST` (a JSON
document for the API, the payroll's staging table for an import) and answers one
:class:`Outcome` per request, so a single voucher and 300,000 of them go through the same SQL.
The ``vouchers`` insert trigger refuses an ineligible or non-``issued`` voucher as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import tuple_row

#: The columns a request relation has (``line``: the caller's number for it, e.g. a CSV line).
REQUEST = ("line", "beneficiary_id", "programme", "cycle", "amount_cents", "currency", "expires_at")

# The first rule a request breaks, as ``field`` and ``reason`` expressions (both NULL when it may be
# issued), in rank order: unknown beneficiary, unknown programme, not eligible, above the maximum.
# ``r`` is the request, ``b`` its beneficiary (NULL if unknown), ``p`` its programme (NULL if
# unknown). Plain CASE expressions: evaluated inline for each row, no per-row subquery or sort
# (docs/performance.md). (``%%``: the statements also take ``%(name)s`` parameters.)
_INELIGIBLE = "smartpay_ineligibility(b.status, b.programme, r.programme)"


def _problem(unknown_beneficiary: str = "b.id IS NULL") -> tuple[str, str]:
    """(field, reason) SQL expressions of the first rule broken; ``unknown_beneficiary`` is the
    first rule's condition (``false`` before the registry merge, where a new person is fine)."""
    rules = (
        (unknown_beneficiary, "'beneficiary_id'", "'unknown beneficiary'"),
        ("p.code IS NULL", "'programme'", "'unknown programme ' || r.programme"),
        (f"b.id IS NOT NULL AND {_INELIGIBLE} IS NOT NULL",
         "CASE WHEN b.status <> 'active' THEN 'beneficiary_id' ELSE 'programme' END", _INELIGIBLE),
        ("r.amount_cents > p.max_amount_cents", "'amount_cents'",
         "format('amount_cents %%s is above the %%s maximum of %%s', r.amount_cents, r.programme, p.max_amount_cents)"),
    )
    field = "CASE " + " ".join(f"WHEN {when} THEN {f}" for when, f, _ in rules) + " END"
    reason = "CASE " + " ".join(f"WHEN {when} THEN {why}" for when, _, why in rules) + " END"
    return field, reason


_FIELD, _REASON = _problem()

# The rule checks are joins and CASE expressions over the requests, one pass; the insert skips
# a repeat through the unique constraint; the voucher that already exists is looked up (by the
# constraint's index) only for a request that passed the checks and was not inserted.
_ISSUE = f"""
WITH checked AS MATERIALIZED (
    SELECT r.line, r.beneficiary_id, r.programme, r.cycle, r.amount_cents, r.currency, r.expires_at,
           {_FIELD} AS field, {_REASON} AS reason
      FROM {{requests}} r
      LEFT JOIN beneficiaries b ON b.id = r.beneficiary_id
      LEFT JOIN programmes p ON p.code = r.programme
), ctx AS MATERIALIZED (  -- the 'issued' audit rows' source and reference (written by the database)
    SELECT set_config('smartpay.source', %(audit_source)s, true), set_config('smartpay.reference', %(audit_reference)s, true)
), inserted AS (
    INSERT INTO vouchers (beneficiary_id, programme, cycle, amount_cents, currency, expires_at)
    SELECT beneficiary_id, programme, cycle, amount_cents, currency, expires_at
      FROM checked, ctx WHERE field IS NULL
    ON CONFLICT ON CONSTRAINT vouchers_one_per_cycle DO NOTHING
    RETURNING id, beneficiary_id, programme, cycle
)
SELECT c.line, c.field, c.reason, i.id::text, e.id::text, e.status, e.amount_cents
  FROM checked c
  LEFT JOIN inserted i
         ON i.beneficiary_id = c.beneficiary_id AND i.programme = c.programme AND i.cycle = c.cycle
  LEFT JOIN LATERAL (
        SELECT e.id, e.status, e.amount_cents FROM vouchers e
         WHERE c.field IS NULL AND i.id IS NULL
           AND e.beneficiary_id = c.beneficiary_id AND e.programme = c.programme AND e.cycle = c.cycle
         LIMIT 1  -- (unique) keeps it a per-request index probe, not a hash of every voucher
  ) e ON true
 ORDER BY c.line
"""

_JSON_REQUESTS = ("(SELECT * FROM jsonb_to_recordset(%(requests)s::jsonb) AS j(line bigint, beneficiary_id uuid, "
                  "programme text, cycle text, amount_cents bigint, currency text, expires_at timestamptz))")


@dataclass(frozen=True)
class Outcome:
    """What became of one request: ``issued`` (new ``voucher_id``), ``exists`` (the voucher of that
    beneficiary + programme + cycle, issued before) or ``rejected`` (``field`` and ``reason``)."""

    line: int
    outcome: str
    voucher_id: str | None = None
    field: str | None = None
    reason: str | None = None
    existing_status: str | None = None
    existing_amount_cents: int | None = None


def issue(conn: psycopg.Connection[Any], requests: str, params: dict[str, Any] | None = None, *,
          reference: str, source: str = "operator") -> list[Outcome]:
    """Issue a voucher for every request of ``requests`` (SQL: a relation with :data:`REQUEST`'s
    columns, e.g. a table name or a parenthesised SELECT) that may be issued, with its ``issued``
    audit row (written by the database), in the caller's transaction. Outcomes in ``line`` order."""
    rows = conn.cursor(row_factory=tuple_row).execute(
        _ISSUE.replace("{requests}", requests),
        {**(params or {}), "audit_source": source, "audit_reference": reference}).fetchall()
    outcomes = []
    for line, field, reason, new_id, existing_id, existing_status, existing_amount in rows:
        if field is not None:
            outcomes.append(Outcome(int(line), "rejected", field=field, reason=reason))
        elif new_id is not None:
            outcomes.append(Outcome(int(line), "issued", voucher_id=new_id))
        else:
            outcomes.append(Outcome(int(line), "exists", voucher_id=existing_id, existing_status=existing_status,
                                    existing_amount_cents=None if existing_amount is None else int(existing_amount)))
    return outcomes


def issue_one(conn: psycopg.Connection[Any], *, beneficiary_id: str, programme: str, cycle: str,
              amount_cents: int, currency: str, expires_at: datetime, reference: str) -> Outcome:
    """:func:`issue` for one voucher (the API)."""
    request = {"line": 1, "beneficiary_id": beneficiary_id, "programme": programme, "cycle": cycle,
               "amount_cents": amount_cents, "currency": currency, "expires_at": expires_at.isoformat()}
    return issue(conn, _JSON_REQUESTS, {"requests": json.dumps([request])}, reference=reference)[0]


def refuse_before_merge(conn: psycopg.Connection[Any], staging: str) -> list[tuple[int, str]]:
    """Delete from ``staging`` (a payroll table: ``line, id_number, programme, cycle,
    amount_cents``) the rows that may not be issued *before* they touch the registry, so a
    rejected row writes nothing: an existing beneficiary who is not eligible (the same rule as
    :func:`issue`), an amount above the programme's maximum, or a voucher already issued for that
    cycle with another amount. Returns ``(line, reason)`` for each."""
    _, reason = _problem(unknown_beneficiary="false")
    rejected = conn.execute(f"""
        DELETE FROM {staging} s USING (
            SELECT r.line,
                   coalesce({reason},
                            CASE WHEN v.amount_cents <> r.amount_cents THEN
                                 format('voucher %%s was already issued for %%s %%s with amount_cents %%s',
                                        v.id, v.programme, v.cycle, v.amount_cents) END) AS reason
              FROM {staging} r
              LEFT JOIN beneficiaries b ON b.id_number = r.id_number
              LEFT JOIN programmes p ON p.code = r.programme
              LEFT JOIN vouchers v ON v.beneficiary_id = b.id AND v.programme = r.programme AND v.cycle = r.cycle
        ) AS bad
        WHERE s.line = bad.line AND bad.reason IS NOT NULL
        RETURNING s.line, bad.reason""", {}).fetchall()
    first: dict[int, str] = {}
    for line, reason in rejected:
        first.setdefault(int(line), reason)
    return sorted(first.items())
