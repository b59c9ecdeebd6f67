"""Every SQL statement of cycle runs: the run, its audit trail, its voucher ledger and chunks."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from smartpay import leases

OPEN = ("awaiting_approval", "approved", "enqueuing", "running", "paused")
RUNNING = ("enqueuing", "running")  # a run whose chunks are being sent
EXCEPTION_IDS = 100

# The vouchers a run of the cycle would pay ({scope}) and, for each, why the run would leave it
# out (NULL: payable): expired, or the one eligibility rule (smartpay_ineligibility, migration 0011).
_ISSUED = """
SELECT v.id, v.amount_cents, b.region,
       CASE WHEN v.expires_at <= now() THEN 'expired'
            ELSE smartpay_ineligibility(b.status, b.programme, v.programme) END AS exception
  FROM vouchers v JOIN beneficiaries b ON b.id = v.beneficiary_id
 WHERE v.programme = %(programme)s AND v.cycle = %(cycle)s AND {scope}
"""


def _scope(selection: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Which vouchers a run pays: a cycle run the cycle's issued ones; a supplementary run the ids
    it names (issued or held), or the cycle's held vouchers whose beneficiary is eligible again."""
    if selection is None:
        return "v.status = 'issued'", {}
    if selection.get("held_eligible_again"):
        return ("v.status = 'held' AND smartpay_ineligibility(b.status, b.programme, v.programme) IS NULL", {})
    return "v.status IN ('issued', 'held') AND v.id = ANY(%(voucher_ids)s::uuid[])", {
        "voucher_ids": [str(v) for v in selection["voucher_ids"]]}


# What the maker saw and the checker approves: ids, amounts and exceptions of ``c`` (_ISSUED).
_FINGERPRINT = """encode(sha256(convert_to(coalesce(
           (SELECT string_agg(id::text || ':' || amount_cents || ':' || coalesce(exception, ''), ',' ORDER BY id)
              FROM c), ''), 'UTF8')), 'hex')"""

_SNAPSHOT = """
WITH c AS MATERIALIZED ({issued})
SELECT (SELECT count(*) FROM c WHERE exception IS NULL) AS voucher_count,
       (SELECT coalesce(sum(amount_cents), 0) FROM c WHERE exception IS NULL)::bigint AS total_amount_cents,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('region', region, 'vouchers', n, 'amount_cents', amount)
                                  ORDER BY region), '[]'::jsonb)
          FROM (SELECT region, count(*) AS n, sum(amount_cents)::bigint AS amount
                  FROM c WHERE exception IS NULL GROUP BY region) r) AS region_totals,
       (SELECT coalesce(jsonb_object_agg(exception, n), '{{}}'::jsonb)
          FROM (SELECT exception, count(*) AS n FROM c WHERE exception IS NOT NULL GROUP BY exception) e) AS by_reason,
       (SELECT coalesce(jsonb_agg(id ORDER BY id), '[]'::jsonb)
          FROM (SELECT id FROM c WHERE exception IS NOT NULL ORDER BY id LIMIT {limit}) x) AS exception_ids,
       {fingerprint} AS fingerprint
"""

# The ledger and the fingerprint it was planned from, in one pass over the run's vouchers.
_PLAN = """
WITH c AS MATERIALIZED ({issued}),
     planned AS (INSERT INTO cycle_run_items (run_id, voucher_id, chunk_no)
                 SELECT %(run)s, id, ((row_number() OVER (ORDER BY id)) - 1) / %(size)s FROM c WHERE exception IS NULL
                 RETURNING 1)
SELECT (SELECT count(*) FROM planned) AS voucher_count, {fingerprint} AS fingerprint
"""

_RUN = """r.id, r.kind, r.selection, r.programme, r.cycle, r.idempotency_key, r.status, r.fingerprint, r.voucher_count,
          r.total_amount_cents, r.region_totals, r.exceptions, r.chunk_size, r.maker_principal, r.maker_key_id,
          r.checker_principal, r.checker_key_id, r.prepared_at, r.expires_at, r.approved_at, r.finished_at"""


# Who makes the run's next status move, set by the moving statement itself (transaction-local): the
# cycle_runs trigger (migration 0016) writes the move's cycle_run_events row from it, with
# ``run_detail`` merged into the row's detail. Expiry and completion are the system's.
_ACTOR = """(SELECT set_config('smartpay.actor', coalesce(%(actor)s::text, ''), true) AS a,
                    set_config('smartpay.actor_key', coalesce(%(actor_key)s::text, ''), true) AS k,
                    set_config('smartpay.run_reference', coalesce(%(run_reference)s::text, ''), true) AS r,
                    set_config('smartpay.run_detail', coalesce(%(run_detail)s::text, ''), true) AS d) AS actor"""


def _actor(by: Any = None, detail: dict[str, Any] | None = None, reference: str | None = None) -> dict[str, Any]:
    """The actor parameters: ``by`` (principal, key_id, reference) or the system (None)."""
    return {"actor": getattr(by, "principal", None), "actor_key": getattr(by, "key_id", None),
            "run_reference": getattr(by, "reference", None) if reference is None else reference,
            "run_detail": None if detail is None else json.dumps(detail)}


def programme_exists(conn: psycopg.Connection[Any], code: str) -> bool:
    return conn.execute("SELECT 1 FROM programmes WHERE code = %s", (code,)).fetchone() is not None


#: A national cycle's snapshot and plan are each one statement over ~300,000 vouchers: more than
#: the function's default statement timeout on a busy database, well inside the request's 29 s.
WHOLE_CYCLE_TIMEOUT = "20s"


def _whole_cycle(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SET LOCAL statement_timeout = '{WHOLE_CYCLE_TIMEOUT}'")  # this transaction only


def snapshot(conn: psycopg.Connection[Any], programme: str, cycle: str,
             selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run of the cycle (of ``selection``: :func:`_scope`) would send now: count, total,
    regions, exceptions and fingerprint."""
    _whole_cycle(conn)
    scope, params = _scope(selection)
    statement = _SNAPSHOT.format(issued=_ISSUED.format(scope=scope), limit=EXCEPTION_IDS, fingerprint=_FINGERPRINT)
    return conn.execute(statement, {"programme": programme, "cycle": cycle, **params}).fetchone()


def not_payable(conn: psycopg.Connection[Any], programme: str, cycle: str, voucher_ids: list[str]) -> list[str]:
    """Of these ids, those that are not an issued or held voucher of the programme cycle."""
    rows = conn.cursor(row_factory=tuple_row).execute(
        """SELECT x.id::text FROM unnest(%s::uuid[]) AS x(id)
            WHERE NOT EXISTS (SELECT 1 FROM vouchers v WHERE v.id = x.id AND v.programme = %s AND v.cycle = %s
                                                         AND v.status IN ('issued', 'held'))
            ORDER BY x.id""", (voucher_ids, programme, cycle)).fetchall()
    return [r[0] for r in rows]


def expire_stale(conn: psycopg.Connection[Any], programme: str, cycle: str, *,
                 reference: str | None = None) -> list[str]:
    """Runs of the cycle left unapproved past their expiry: expired now (ids returned)."""
    rows = conn.execute(
        f"""UPDATE cycle_runs SET status = 'expired', finished_at = now(), updated_at = now()
             FROM {_ACTOR}
            WHERE programme = %(programme)s AND cycle = %(cycle)s AND status = 'awaiting_approval'
              AND expires_at <= now()
        RETURNING id""", {"programme": programme, "cycle": cycle, **_actor(reference=reference)}).fetchall()
    return [str(r["id"]) for r in rows]


def by_key(conn: psycopg.Connection[Any], programme: str, cycle: str, key: str) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {_RUN} FROM cycle_runs r WHERE programme = %s AND cycle = %s "
                        "AND idempotency_key = %s", (programme, cycle, key)).fetchone()


def open_run(conn: psycopg.Connection[Any], programme: str, cycle: str, *, lock: bool = False) -> dict[str, Any] | None:
    """The cycle's unfinished run (at most one), locked for this transaction when ``lock``."""
    return conn.execute(
        f"SELECT {_RUN} FROM cycle_runs r WHERE programme = %s AND cycle = %s AND status = ANY(%s)"
        + (" FOR UPDATE" if lock else ""), (programme, cycle, list(OPEN))).fetchone()


def latest(conn: psycopg.Connection[Any], programme: str, cycle: str) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {_RUN} FROM cycle_runs r WHERE programme = %s AND cycle = %s "
                        "ORDER BY prepared_at DESC, id LIMIT 1", (programme, cycle)).fetchone()


def get(conn: psycopg.Connection[Any], run_id: str) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {_RUN} FROM cycle_runs r WHERE id = %s", (run_id,)).fetchone()


def insert(conn: psycopg.Connection[Any], values: dict[str, Any], by: Any) -> str | None:
    """The new run's id, or None when this idempotency key already made one (a concurrent twin).
    Its 'prepared' event is the database's, naming ``by``."""
    row = conn.execute(
        f"""INSERT INTO cycle_runs (kind, selection, programme, cycle, idempotency_key, fingerprint, voucher_count,
                                    total_amount_cents, region_totals, exceptions, chunk_size, maker_principal,
                                    maker_key_id, expires_at)
            SELECT %(kind)s, %(selection)s::jsonb, %(programme)s, %(cycle)s, %(idempotency_key)s, %(fingerprint)s,
                   %(voucher_count)s, %(total_amount_cents)s, %(region_totals)s::jsonb, %(exceptions)s::jsonb,
                   %(chunk_size)s, %(maker_principal)s, %(maker_key_id)s, now() + make_interval(secs => %(ttl_s)s)
              FROM {_ACTOR}
           ON CONFLICT ON CONSTRAINT cycle_runs_key_once DO NOTHING
           RETURNING id""",
        {**values, "selection": None if values["selection"] is None else json.dumps(values["selection"]),
         "region_totals": json.dumps(values["region_totals"]),
         "exceptions": json.dumps(values["exceptions"]), **_actor(by)}).fetchone()
    return None if row is None else str(row["id"])


def set_status(conn: psycopg.Connection[Any], run_id: str, status: str, *, expected: str, by: Any,
               finished: bool = False, detail: dict[str, Any] | None = None) -> bool:
    """``expected → status`` only if the run is still ``expected``: True if it moved. A move made
    on a status read earlier (pause, resume and enqueue interleave) never undoes another's. Its
    event (naming ``by``, with ``detail``) is written by the database."""
    return conn.execute(f"""UPDATE cycle_runs SET status = %(status)s, updated_at = now()
                            {", finished_at = now()" if finished else ""} FROM {_ACTOR}
                            WHERE id = %(id)s AND status = %(expected)s""",
                        {"status": status, "id": run_id, "expected": expected, **_actor(by, detail)}).rowcount == 1


def approve(conn: psycopg.Connection[Any], run_id: str, by: Any, detail: dict[str, Any] | None = None) -> None:
    conn.execute(f"""UPDATE cycle_runs SET status = 'approved', checker_principal = %(principal)s,
                            checker_key_id = %(key_id)s, approved_at = now(), updated_at = now()
                       FROM {_ACTOR} WHERE id = %(id)s""",
                 {"principal": by.principal, "key_id": by.key_id, "id": run_id, **_actor(by, detail)})


def cancel(conn: psycopg.Connection[Any], run_id: str, by: Any, detail: dict[str, Any] | None = None) -> None:
    """``paused → cancelled`` (the caller holds the run's lock and checked it is paused); its event,
    naming ``by``, is the database's."""
    conn.execute(f"""UPDATE cycle_runs SET status = 'cancelled', canceller_principal = %(principal)s,
                            canceller_key_id = %(key_id)s, finished_at = now(), updated_at = now()
                       FROM {_ACTOR} WHERE id = %(id)s AND status = 'paused'""",
                 {"principal": by.principal, "key_id": by.key_id, "id": run_id, **_actor(by, detail)})


def paused_by(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    """Who paused the run last (the principal of its latest ``paused`` event)."""
    row = conn.execute("SELECT principal FROM cycle_run_events WHERE run_id = %s AND action = 'paused' "
                       "ORDER BY id DESC LIMIT 1", (run_id,)).fetchone()
    return None if row is None else str(row["principal"])


def audit(conn: psycopg.Connection[Any], run_id: str, action: str, *, principal: str, key_id: str | None,
          from_status: str | None = None, to_status: str | None = None, reference: str | None = None,
          detail: dict[str, Any] | None = None) -> None:
    """An event that moves no status (a refused approval); status moves are audited by the database."""
    conn.execute(
        """INSERT INTO cycle_run_events (run_id, action, from_status, to_status, principal, key_id, reference, detail)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (run_id, action, from_status, to_status, principal, key_id, reference,
         None if detail is None else json.dumps(detail)))


def events(conn: psycopg.Connection[Any], run_id: str) -> list[dict[str, Any]]:
    return conn.execute("""SELECT action, from_status, to_status, principal, key_id, reference, detail, at
                             FROM cycle_run_events WHERE run_id = %s ORDER BY id""", (run_id,)).fetchall()


def plan(conn: psycopg.Connection[Any], run_id: str, programme: str, cycle: str, chunk_size: int,
         selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's ledger: each payable voucher of its selection in exactly one chunk (in id order),
    in the same pass as the fingerprint of what was planned (the caller compares it with the
    approved one and rolls back on a difference). Returns ``voucher_count``, ``fingerprint``, ``chunks``."""
    _whole_cycle(conn)
    scope, params = _scope(selection)
    planned = conn.execute(_PLAN.format(issued=_ISSUED.format(scope=scope), fingerprint=_FINGERPRINT),
                           {"run": run_id, "size": chunk_size, "programme": programme, "cycle": cycle,
                            **params}).fetchone()
    chunks = conn.execute(
        """INSERT INTO cycle_run_chunks (run_id, chunk_no, size)
           SELECT run_id, chunk_no, count(*) FROM cycle_run_items WHERE run_id = %s GROUP BY run_id, chunk_no""",
        (run_id,)).rowcount
    return {**planned, "chunks": chunks}


def claim_for_sending(conn: psycopg.Connection[Any], run_id: str, limit: int) -> list[tuple[int, str, list[str]]]:
    """Up to ``limit`` chunks still to enqueue, each with a fresh token committed before its send.

    A chunk already ``sending`` was left by a crash between send and bookkeeping: it gets a new
    token too, so the message that may have gone out then is stale and its consumer drops it.
    Returns (chunk_no, token, voucher ids).
    """
    claimed = conn.cursor(row_factory=tuple_row).execute(
        """UPDATE cycle_run_chunks c SET state = 'sending', token = gen_random_uuid(), sends = sends + 1,
                  updated_at = now()
            WHERE (run_id, chunk_no) IN (SELECT run_id, chunk_no FROM cycle_run_chunks
                                          WHERE run_id = %s AND state IN ('planned', 'sending')
                                          ORDER BY chunk_no LIMIT %s FOR UPDATE SKIP LOCKED)
        RETURNING chunk_no, token::text""", (run_id, limit)).fetchall()
    if not claimed:
        return []
    ids = dict(conn.cursor(row_factory=tuple_row).execute(
        """SELECT chunk_no, array_agg(voucher_id::text ORDER BY voucher_id) FROM cycle_run_items
            WHERE run_id = %s AND chunk_no = ANY(%s) GROUP BY chunk_no""",
        (run_id, [c[0] for c in claimed])).fetchall())
    return sorted((no, token, ids[no]) for no, token in claimed)


def mark_enqueued(conn: psycopg.Connection[Any], run_id: str, sent: list[tuple[int, str, str]]) -> None:
    """(chunk_no, token, message id) of chunks SQS accepted."""
    if sent:
        conn.execute(
            """UPDATE cycle_run_chunks c SET state = 'enqueued', message_id = s.message_id, enqueued_at = now(),
                      updated_at = now()
                 FROM unnest(%s::int[], %s::uuid[], %s::text[]) AS s(chunk_no, token, message_id)
                WHERE c.run_id = %s AND c.chunk_no = s.chunk_no AND c.token = s.token AND c.state = 'sending'""",
            ([s[0] for s in sent], [s[1] for s in sent], [s[2] for s in sent], run_id))


def chunks_left_to_enqueue(conn: psycopg.Connection[Any], run_id: str) -> int:
    row = conn.execute("SELECT count(*) AS n FROM cycle_run_chunks WHERE run_id = %s "
                       "AND state IN ('planned', 'sending', 'parked')", (run_id,)).fetchone()
    return int(row["n"])


def unpark(conn: psycopg.Connection[Any], run_id: str) -> int:
    return conn.execute("UPDATE cycle_run_chunks SET state = 'planned', updated_at = now() "
                        "WHERE run_id = %s AND state = 'parked'", (run_id,)).rowcount


def receive(conn: psycopg.Connection[Any], run_id: str, chunk_no: int, token: str) -> dict[str, Any] | None:
    """Count a delivery of the chunk's current message; None when the message is stale (another
    token), the chunk is finished or parked, or the run is unknown."""
    return conn.execute(
        """UPDATE cycle_run_chunks c SET receives = receives + 1, updated_at = now()
             FROM cycle_runs r
            WHERE c.run_id = %s AND c.chunk_no = %s AND c.token = %s AND c.state IN ('sending', 'enqueued')
              AND r.id = c.run_id
        RETURNING r.status, r.programme, r.cycle""", (run_id, chunk_no, token)).fetchone()


def run_status(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    row = conn.execute("SELECT status FROM cycle_runs WHERE id = %s", (run_id,)).fetchone()
    return None if row is None else str(row["status"])


def try_lock_chunk(conn: psycopg.Connection[Any], run_id: str, chunk_no: int, ttl_s: float) -> str | None:
    """The chunk's lease (smartpay/leases.py, no session lock), so one invocation at a time sends it."""
    return leases.acquire(conn, f"chunk:{run_id}:{chunk_no}", ttl_s)


def unlock_chunk(conn: psycopg.Connection[Any], run_id: str, chunk_no: int, holder: str) -> None:
    leases.release(conn, f"chunk:{run_id}:{chunk_no}", holder)


def chunk_ids(conn: psycopg.Connection[Any], run_id: str, chunk_no: int) -> list[str]:
    return [r[0] for r in conn.cursor(row_factory=tuple_row).execute(
        "SELECT voucher_id::text FROM cycle_run_items WHERE run_id = %s AND chunk_no = %s ORDER BY voucher_id",
        (run_id, chunk_no)).fetchall()]


def to_send(conn: psycopg.Connection[Any], voucher_ids: list[str]) -> list[tuple[str, int, str, str]]:
    """Of these vouchers, those still to pay — issued, or held or pending with a beneficiary who may
    be paid now — with what Buffr needs: (id, amount, currency, ID number). The claim decides
    eligibility again in its own statement (an ineligible one is held or cancelled, never sent)."""
    return conn.cursor(row_factory=tuple_row).execute(
        """SELECT v.id::text, v.amount_cents, v.currency, b.id_number
             FROM vouchers v JOIN beneficiaries b ON b.id = v.beneficiary_id
            WHERE v.id = ANY(%s::uuid[])
              AND (v.status = 'issued' OR (v.status IN ('held', 'pending')
                   AND smartpay_ineligibility(b.status, b.programme, v.programme) IS NULL))
            ORDER BY v.id""", (voucher_ids,)).fetchall()


def record_turns(conn: psycopg.Connection[Any], run_id: str, chunk_no: int, *, attempts: int, retries: int,
                 errors: dict[str, int]) -> None:
    conn.execute(
        """UPDATE cycle_run_chunks SET attempts = attempts + %s, retries = retries + %s, updated_at = now(),
                  errors = (SELECT coalesce(jsonb_object_agg(k, n), '{}'::jsonb) FROM (
                              SELECT k, sum(n)::int AS n FROM (
                                  SELECT key AS k, value::int AS n FROM jsonb_each_text(errors)
                                  UNION ALL SELECT key, value::int FROM jsonb_each_text(%s::jsonb)) a
                              GROUP BY k) b)
            WHERE run_id = %s AND chunk_no = %s""", (attempts, retries, json.dumps(errors), run_id, chunk_no))


def park(conn: psycopg.Connection[Any], run_id: str, chunk_no: int, token: str) -> str:
    """Set the chunk aside while its run is not running: ``parked``, ``running`` (the run runs
    again — a resume came in between — so the chunk is not parked) or ``stale`` (not this
    token's, or finished). The run row is locked first, as pause and resume lock it, so a
    resume either comes before (and is seen) or waits for the park (and plans it again)."""
    with conn.transaction():
        run = conn.execute("SELECT status FROM cycle_runs WHERE id = %s FOR SHARE", (run_id,)).fetchone()
        if run is not None and run["status"] in RUNNING:
            return "running"
        parked = conn.execute("UPDATE cycle_run_chunks SET state = 'parked', updated_at = now() "
                              "WHERE run_id = %s AND chunk_no = %s AND token = %s AND state IN ('sending', 'enqueued')",
                              (run_id, chunk_no, token)).rowcount
    return "parked" if parked else "stale"


def unsettled(conn: psycopg.Connection[Any], voucher_ids: list[str], grace_s: float) -> int:
    """Of these vouchers, those a run must still finish: issued / held with a beneficiary who may
    be paid now (one who may not is held back, not waited for), and pending ones still to be sent
    again or, within the grace period, still to be looked up at Buffr (smartpay.resend). A pending
    one that may not be sent and that Buffr never received is settled or left by the lookup."""
    row = conn.execute(
        """SELECT count(*) AS n FROM vouchers v JOIN beneficiaries b ON b.id = v.beneficiary_id
            WHERE v.id = ANY(%s::uuid[])
              AND ((v.status = 'pending' AND (v.status_changed_at > now() - make_interval(secs => %s)
                                              OR (v.expires_at > now() AND
                                                  smartpay_ineligibility(b.status, b.programme, v.programme) IS NULL)))
                   OR (v.status IN ('issued', 'held')
                       AND smartpay_ineligibility(b.status, b.programme, v.programme) IS NULL))""",
        (voucher_ids, grace_s)).fetchone()
    return int(row["n"])


def finish_chunk(conn: psycopg.Connection[Any], run_id: str, chunk_no: int, token: str, *,
                 reference: str | None = None) -> bool:
    """Mark the chunk done; True when that finished the run (it was running, no chunk left).

    Call it in a transaction. The run row is locked first: two invocations finishing a run's last
    two chunks at once would otherwise each see the other's chunk not yet done (READ COMMITTED)
    and neither complete the run. Locked, the second waits and then sees the first's chunk done."""
    conn.execute("SELECT 1 FROM cycle_runs WHERE id = %s FOR NO KEY UPDATE", (run_id,))
    conn.execute("UPDATE cycle_run_chunks SET state = 'done', done_at = now(), updated_at = now() "
                 "WHERE run_id = %s AND chunk_no = %s AND token = %s", (run_id, chunk_no, token))
    return complete_if_done(conn, run_id, reference=reference)


def complete_if_done(conn: psycopg.Connection[Any], run_id: str, *, reference: str | None = None) -> bool:
    """``running → completed`` when every chunk is done; True if this call completed it."""
    row = conn.execute(
        f"""UPDATE cycle_runs SET status = 'completed', finished_at = now(), updated_at = now()
             FROM {_ACTOR}
            WHERE id = %(id)s AND status = 'running'
              AND NOT EXISTS (SELECT 1 FROM cycle_run_chunks WHERE run_id = %(id)s AND state <> 'done')
        RETURNING id""", {"id": run_id, **_actor(reference=reference)}).fetchone()
    return row is not None


def progress(conn: psycopg.Connection[Any], run_id: str, reference: str) -> dict[str, Any]:
    """Counts for the progress reply: the run's vouchers by status and eligibility, its chunks,
    and the sends of the last minute (from the audit trail, by the run's reference)."""
    statuses = dict(conn.cursor(row_factory=tuple_row).execute(
        """SELECT CASE WHEN v.status = 'issued'
                            AND smartpay_ineligibility(b.status, b.programme, v.programme) IS NOT NULL
                       THEN 'ineligible' ELSE v.status END, count(*)
             FROM cycle_run_items i JOIN vouchers v ON v.id = i.voucher_id
             JOIN beneficiaries b ON b.id = v.beneficiary_id
            WHERE i.run_id = %s GROUP BY 1""", (run_id,)).fetchall())
    chunks = conn.execute(
        """SELECT coalesce(jsonb_object_agg(state, n), '{}'::jsonb) AS states,
                  coalesce(sum(receives), 0)::int AS receives, coalesce(sum(retries), 0)::int AS retries,
                  coalesce(sum(attempts), 0)::int AS attempts
             FROM (SELECT state, count(*) AS n, sum(receives) AS receives, sum(retries) AS retries,
                          sum(attempts) AS attempts
                     FROM cycle_run_chunks WHERE run_id = %s GROUP BY state) s""", (run_id,)).fetchone()
    errors = dict(conn.cursor(row_factory=tuple_row).execute(
        """SELECT key, sum(value::int)::int FROM cycle_run_chunks, jsonb_each_text(errors)
            WHERE run_id = %s GROUP BY key""", (run_id,)).fetchall())
    recent = conn.execute(
        """SELECT count(*) AS n FROM voucher_events
            WHERE reference LIKE 'cycle-run:%%' AND reference = %s AND to_status = 'pending'
              AND at > now() - interval '60 seconds'""",
        (reference,)).fetchone()
    return {"statuses": statuses, "chunks": chunks["states"], "receives": chunks["receives"],
            "retries": chunks["retries"], "attempts": chunks["attempts"], "errors": errors, "sent_last_minute": int(recent["n"])}
