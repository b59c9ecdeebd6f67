"""The only code that changes a voucher's status.

Every writer (disburse, webhook, reconcile, operator) calls :func:`transition` inside its own
transaction. The voucher row is locked (``SELECT … FOR NO KEY UPDATE``) so two concurrent writers are
serialised; the lifecycle table decides; the update and its audit row commit together. The audit row
is written by the database (the ``vouchers`` trigger of migration 0016) from the source, reference
and detail the statement sets for its transaction (``smartpay.source``, ``smartpay.reference``,
``smartpay.detail``): no role may write one itself, nor change a voucher without one. The
statement lives in the database as two PL/pgSQL functions that migrate renders from this module
(:func:`functions_sql`), so the server keeps its plan per session without a prepared statement.

A move to ``pending`` is a payment (the voucher goes to Buffr next), so it is decided on the
beneficiary's eligibility too, in the same statement (``smartpay_ineligibility``, the one rule):
an ineligible beneficiary's voucher goes where :data:`lifecycle.WHEN_INELIGIBLE` says instead
(held, or cancelled for good) with the reason if it never reached Buffr
(:data:`lifecycle.BEFORE_BUFFR`), or stays as it is (pending: maybe at Buffr), not re-sent.
(The one other writer is the registry's trigger, which applies the same rule and the same
lifecycle when a beneficiary becomes ineligible; see migration 0011.)

One door: the same statement claims a voucher only while it belongs to a run that is approved,
enqueuing or running (a share lock on the run, so a pause or cancel is never half seen), and
never past its expiry: an expired issued or held voucher goes to ``expired`` instead; anything
else is ``refused`` and left as it is (migration 0014, whose trigger refuses the same).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from smartpay.lifecycle import (
    BEFORE_BUFFR,
    INELIGIBLE_OTHERWISE,
    WHEN_INELIGIBLE,
    VoucherStatus,
)

SOURCES = frozenset({"disburse", "webhook", "reconcile", "operator"})


@dataclass(frozen=True)
class TransitionResult:
    outcome: str  # applied | duplicate | stale | not_found | refused
    voucher_id: str
    from_status: str | None
    to_status: str
    review_reason: str | None = None
    #: Why the beneficiary may not be paid (a move to ``pending`` redirected, or refused).
    ineligible: str | None = None
    #: Why a move to ``pending`` was refused outright (outcome ``refused``: not part of an approved
    #: run, or expired after it was sent): the voucher is left as it is.
    refused: str | None = None

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


@dataclass(frozen=True)
class Change:
    """One requested status change (for :func:`transition_many`)."""

    voucher_id: str
    target: VoucherStatus | str
    delivery_id: str | None = None
    failure_reason: str | None = None
    detail: dict[str, Any] | None = None
    #: What Buffr reported the voucher's amount to be (a redemption): a different amount flags it for review.
    amount_cents: int | None = None


def transition(
    conn: psycopg.Connection[Any],
    voucher_id: str | uuid.UUID,
    target: VoucherStatus | str,
    *,
    source: str,
    reference: str | None,
    detail: dict[str, Any] | None = None,
    delivery_id: str | None = None,
    failure_reason: str | None = None,
    amount_cents: int | None = None,
) -> TransitionResult:
    """Move one voucher towards ``target`` if the lifecycle allows it; audit it in the same transaction."""
    change = Change(str(voucher_id), target, delivery_id, failure_reason, detail, amount_cents)
    return transition_many(conn, [change], source=source, reference=reference)[0]


# One statement: lock the rows (in id order, so two batches cannot deadlock), decide each change
# by the lifecycle table (its decisions written into the statement as literals when migrate
# renders it: nothing to send or parse per call), update the applied ones and write their audit
# rows (``ctx`` hands the database the source, reference and each row's detail; the vouchers
# trigger writes the rows as the statement ends). Locking re-reads a row a concurrent writer just
# committed (READ COMMITTED), so decisions are made on the latest status, exactly as SELECT … FOR UPDATE followed by an UPDATE would.
# FOR NO KEY UPDATE (what an UPDATE of non-key columns takes anyway): writers still queue behind
# one another, but a foreign-key check (reconciliation records, webhook rows referencing a
# voucher) never waits on a transition, so no deadlock between a batch and such a transaction.
# The lock is by ``= ANY(uuid[])`` so the primary key index is used whatever the batch size.
# $1..$4 are the function's parameters (changes, ids, source, reference: see :func:`functions_sql`).
# {eligibility}: for statements with a move to pending, the beneficiary join that redirects it.
_TEMPLATE = """
WITH req AS (
    SELECT * FROM jsonb_to_recordset($1)
        AS r(n int, id uuid, to_status text, delivery text, failure text, detail jsonb, amount bigint)
), rule (from_status, to_status, outcome, review) AS (
    VALUES {rules}
), locked AS MATERIALIZED (
    SELECT v.id, v.status, v.beneficiary_id, v.programme, v.expires_at, v.amount_cents
      FROM vouchers v WHERE v.id = ANY($2) ORDER BY v.id FOR NO KEY UPDATE
){runs}, gated AS (
    SELECT r.*, l.id AS found, l.status AS from_status, e.beneficiary_status, e.lapsed, e.refused,
           CASE WHEN e.refused IS NULL AND NOT e.lapsed THEN e.reason END AS ineligible,
           CASE WHEN r.amount <> l.amount_cents THEN format('amount mismatch: Buffr reported %s, voucher is %s',
                                                           r.amount, l.amount_cents) END AS mismatch
      FROM req r
      LEFT JOIN locked l ON l.id = r.id
      {eligibility}
), target AS (
    SELECT g.n, g.id, g.found, g.from_status, g.delivery, g.detail, g.ineligible, g.refused, g.lapsed, g.mismatch,
           CASE WHEN g.refused IS NOT NULL THEN g.from_status WHEN g.lapsed THEN 'expired'
                WHEN g.ineligible IS NULL THEN g.to_status WHEN g.from_status IN ({before_buffr}) THEN {redirect}
                ELSE g.from_status END AS to_status,
           COALESCE(g.ineligible, g.failure) AS failure
      FROM gated g
), decided AS MATERIALIZED (
    SELECT t.n, t.id, t.from_status, t.to_status, t.delivery, t.failure, t.ineligible, t.refused,
           CASE WHEN d.outcome = 'applied' AND t.mismatch IS NOT NULL THEN concat_ws('; ', d.review, t.mismatch)
                ELSE d.review END AS review,
           CASE WHEN t.lapsed THEN COALESCE(t.detail, '{{}}') || '{{"reason": "expired before it was sent"}}'
                WHEN t.ineligible IS NULL THEN t.detail
                ELSE COALESCE(t.detail, '{{}}') || jsonb_build_object('reason', t.ineligible) END AS detail,
           CASE WHEN t.found IS NULL THEN 'not_found' WHEN t.refused IS NOT NULL THEN 'refused'
                ELSE d.outcome END AS outcome
      FROM target t
      LEFT JOIN rule d ON d.from_status = t.from_status AND d.to_status = t.to_status
), ctx AS MATERIALIZED (
    SELECT set_config('smartpay.source', $3, true), set_config('smartpay.reference', coalesce($4, ''), true),
           set_config('smartpay.detail', coalesce(jsonb_object_agg(x.id, x.audit)::text, ''), true)
      FROM (SELECT x.id, NULLIF(COALESCE(x.detail, '{{}}')
                                || CASE WHEN x.review IS NULL THEN '{{}}'::jsonb
                                        ELSE jsonb_build_object('review_reason', x.review) END, '{{}}') AS audit
              FROM decided x WHERE x.outcome = 'applied') x
     WHERE x.audit IS NOT NULL
), changed AS (
    UPDATE vouchers AS v
       SET status = x.to_status,
           status_changed_at = now(),
           version = v.version + 1,
           buffr_delivery_id = COALESCE(x.delivery, v.buffr_delivery_id),
           failure_reason = CASE WHEN x.from_status = 'held' THEN x.failure
                                 ELSE COALESCE(x.failure, v.failure_reason) END,
           review_reason = COALESCE(x.review, v.review_reason)
      FROM decided x, ctx
     WHERE v.id = x.id AND x.outcome = 'applied'
)
SELECT n, from_status, to_status, outcome, review, ineligible, refused FROM decided ORDER BY n
"""

# A move to pending is a payment: the beneficiary must be eligible (migration 0011's rule), the
# voucher part of a run that claims (share-locked: a pause waits for this claim or is seen by it)
# and not expired (migration 0014).
_RUNS = """, runs AS MATERIALIZED (
    SELECT i.voucher_id FROM cycle_run_items i JOIN cycle_runs c ON c.id = i.run_id
     WHERE i.voucher_id = ANY($2) AND smartpay_run_claims(c.status)
       FOR SHARE OF c
)"""
_ELIGIBILITY = """LEFT JOIN beneficiaries b ON r.to_status = 'pending' AND b.id = l.beneficiary_id
      CROSS JOIN LATERAL (SELECT r.to_status = 'pending' AND l.id IS NOT NULL) AS p(paying)
      CROSS JOIN LATERAL (
          SELECT CASE WHEN p.paying THEN smartpay_ineligibility(b.status, b.programme, l.programme) END, b.status,
                 p.paying AND l.expires_at <= now(),
                 CASE WHEN NOT p.paying THEN NULL
                      WHEN NOT EXISTS (SELECT 1 FROM runs g WHERE g.voucher_id = l.id)
                          THEN 'not part of an approved run'
                      WHEN l.expires_at <= now() AND l.status NOT IN ({before_buffr})
                          THEN 'expired after it was sent' END
      ) AS e(reason, beneficiary_status, lapsed, refused)"""
_NO_ELIGIBILITY = """CROSS JOIN LATERAL (SELECT NULL::text, NULL::text, false, NULL::text)
      AS e(reason, beneficiary_status, lapsed, refused)"""


def _statement(decisions: Iterable[tuple[str, str, str, str | None]], *, eligibility: bool = True) -> str:
    """The statement with these decisions as its ``rule`` rows (quoted as SQL literals), where an
    ineligible beneficiary's voucher goes (:data:`WHEN_INELIGIBLE`), and the eligibility join if asked."""
    rules = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Literal, row))) for row in decisions
    ).as_string()
    redirect = sql.SQL("CASE g.beneficiary_status {} ELSE {} END").format(
        sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(sql.Literal(k), sql.Literal(v.value))
                          for k, v in WHEN_INELIGIBLE.items()),
        sql.Literal(INELIGIBLE_OTHERWISE.value)).as_string()
    before_buffr = sql.SQL(", ").join(sql.Literal(s.value) for s in sorted(BEFORE_BUFFR)).as_string()
    gate = _ELIGIBILITY.format(before_buffr=before_buffr) if eligibility else _NO_ELIGIBILITY
    return _TEMPLATE.format(rules=rules, redirect=redirect, before_buffr=before_buffr,
                            runs=_RUNS if eligibility else "", eligibility=gate)


#: The statement's two functions: one that checks eligibility (any move to pending) and one that
#: does not, so a role that may not read the registry (webhook) never plans a join on it.
FUNCTIONS = {False: "smartpay_transition_many", True: "smartpay_transition_many_paying"}
#: The arguments, as ``GRANT``/``REVOKE … ON FUNCTION`` name them (migrations/R__grants.sql).
ARGUMENTS = "jsonb, uuid[], text, text"
_CALLS = {paying: f"SELECT * FROM public.{name}(%(changes)s::jsonb, %(ids)s::uuid[], %(source)s, %(reference)s)"
                  " ORDER BY n"
          for paying, name in FUNCTIONS.items()}


def functions_sql(decisions: Iterable[tuple[str, str, str, str | None]]) -> str:
    """The statement as two PL/pgSQL functions (:data:`FUNCTIONS`), rendered by migrate from these
    decisions (:func:`smartpay.lifecycle.decision_table`).

    Why functions: the connection pool sends no server-side prepared statement (one pins the
    session behind RDS Proxy), so the statement sent as it is would be parsed and planned on
    every call. PL/pgSQL caches the plan of its static statement for the session, inside the
    server: the call is parsed and planned once per connection, nothing is pinned. ``SECURITY
    INVOKER``: each caller keeps exactly its own privileges (the webhook role still may not read
    the registry); ``#variable_conflict use_column``: the result's column names are the query's.
    """
    decisions = list(decisions)
    parts = ["-- Generated by smartpay.migrate from smartpay/transitions.py and smartpay/lifecycle.py: do not edit."]
    for paying, name in FUNCTIONS.items():
        body = _statement(decisions, eligibility=paying)
        if "$transition$" in body:
            raise ValueError("a decision holds the function body's quote $transition$")
        parts.append(f"""CREATE OR REPLACE FUNCTION public.{name}(changes jsonb, ids uuid[], source text, reference text)
    RETURNS TABLE (n int, from_status text, to_status text, outcome text, review text, ineligible text, refused text)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, public, pg_temp
    AS $transition$
#variable_conflict use_column
BEGIN
    RETURN QUERY{body.rstrip()};
END;
$transition$;
REVOKE ALL ON FUNCTION public.{name}({ARGUMENTS}) FROM PUBLIC;""")
    return "\n".join(parts) + "\n"


_TARGETS = {s.value: s.value for s in VoucherStatus}  # StrEnum members hash and compare as their value


def _canonical(voucher_id: str | uuid.UUID) -> str:
    """The id as PostgreSQL prints it, so one voucher can never pass the duplicate check twice
    (``ABC…`` and ``abc…`` are the same uuid). Ids already canonical — all of ours — skip parsing."""
    text = str(voucher_id)
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-" and text == text.lower():
        return text
    return str(uuid.UUID(text))


def transition_many(
    conn: psycopg.Connection[Any], changes: list[Change], *, source: str, reference: str | None
) -> list[TransitionResult]:
    """:func:`transition` for many vouchers at once, in one statement (one round trip): a call of
    one of the functions of :func:`functions_sql`, whose plan the server keeps for the session.

    Each change is decided by the lifecycle table exactly as a single transition would be;
    the applied ones are updated and audited in the same statement, so a batch of N costs the
    database one lock scan, one UPDATE and one call of the audit trigger (one INSERT of N rows),
    and the caller one round trip however large N is. Results are in input order. A redemption's
    ``amount_cents`` other than the voucher's adds an ``amount mismatch`` review reason.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown transition source {source!r}")
    ids = [_canonical(c.voucher_id) for c in changes]
    if len(set(ids)) != len(ids):
        raise ValueError("transition_many: a voucher may appear only once per call")
    if not ids:
        return []
    try:
        targets = [_TARGETS[c.target] for c in changes]
    except KeyError as exc:
        raise ValueError(f"unknown voucher status {exc.args[0]!r}") from None
    paying = VoucherStatus.PENDING.value in targets
    requests = []
    for n, (change, vid, target) in enumerate(zip(changes, ids, targets, strict=True)):
        request: dict[str, Any] = {"n": n, "id": vid, "to_status": target}
        if change.delivery_id is not None:
            request["delivery"] = change.delivery_id
        if change.failure_reason is not None:
            request["failure"] = change.failure_reason
        if change.detail:
            request["detail"] = change.detail
        if change.amount_cents is not None:
            request["amount"] = change.amount_cents
        requests.append(request)
    rows = conn.cursor(row_factory=tuple_row).execute(_CALLS[paying], {
        "changes": json.dumps(requests), "ids": "{" + ",".join(ids) + "}", "source": source,
        "reference": reference,
    }).fetchall()
    return [TransitionResult(outcome, vid, from_status, to_status, review, ineligible, refused)
            for (_n, from_status, to_status, outcome, review, ineligible, refused), vid
            in zip(rows, ids, strict=True)]



def audit_as(conn: psycopg.Connection[Any], *, source: str, reference: str | None) -> None:
    """Name the source and reference of the audit rows the database writes for this transaction's
    voucher changes (a raw ``UPDATE vouchers`` or ``INSERT`` outside :func:`transition_many` and
    :func:`smartpay.issuance.issue`, which set them in their own statement). Transaction-local:
    call it inside the transaction."""
    conn.execute("SELECT set_config('smartpay.source', %s, true), set_config('smartpay.reference', %s, true)",
                 (source, reference or ""))
