"""Statement-level or row-level audit trigger (migration 0016), A/B in one run.

Two throwaway databases: ``statement`` (as migrated: one ``vouchers_audit`` call per statement,
reading the transition tables) and ``row`` (the same rows written by an AFTER UPDATE row trigger,
one PL/pgSQL call per changed voucher). Rounds alternate (the order flipped every round) on fresh
vouchers of each: batch turns of ``--turn`` vouchers (``transition_many`` issued → pending →
active, each change with a detail as the batch's settle writes) and single transitions (one
transaction each, as a webhook): ``audit_chain._round``. Prints the median per voucher and row / statement.

    python benchmarks/audit_trigger_shape.py [--rounds 4] [--turn 500] [--per-round 2000] [--singles 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import _common
import psycopg
from audit_chain import _round

from smartpay_tools.data import bulk_seed

ROW_TRIGGER = """
CREATE FUNCTION public.vouchers_audit_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    src text := nullif(current_setting('smartpay.source', true), '');
BEGIN
    IF src IS NULL THEN
        RAISE EXCEPTION 'a voucher changed without an audit source' USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO public.voucher_events (voucher_id, from_status, to_status, source, reference, detail)
    VALUES (NEW.id, OLD.status, NEW.status, src, nullif(current_setting('smartpay.reference', true), ''),
            nullif(current_setting('smartpay.detail', true), '')::jsonb -> NEW.id::text);
    RETURN NULL;
END;
$$;
DROP TRIGGER vouchers_audit_update ON public.vouchers;
CREATE TRIGGER vouchers_audit_update AFTER UPDATE ON public.vouchers FOR EACH ROW
    WHEN ((OLD.status, OLD.review_reason, OLD.buffr_delivery_id, OLD.amount_cents)
          IS DISTINCT FROM (NEW.status, NEW.review_reason, NEW.buffr_delivery_id, NEW.amount_cents))
    EXECUTE FUNCTION public.vouchers_audit_row();
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--turn", type=int, default=500)
    parser.add_argument("--per-round", type=int, default=2000)
    parser.add_argument("--singles", type=int, default=200)
    args = parser.parse_args()
    names = {"statement": "smartpay_bench_shape_statement", "row": "smartpay_bench_shape_row"}
    urls = {kind: _common.fresh_database(name) for kind, name in names.items()}
    times: dict[str, dict[str, list[float]]] = {k: {"batch": [], "single": []} for k in names}
    try:
        with psycopg.connect(urls["row"], autocommit=True) as conn:
            conn.execute(ROW_TRIGGER)
        conns = {k: psycopg.connect(u, autocommit=True) for k, u in urls.items()}
        ids = {}
        for kind, conn in conns.items():
            with conn.transaction():
                ids[kind] = bulk_seed.issued_vouchers(conn, args.rounds * args.per_round, cycle="2026-11")
                bulk_seed.running_run(conn, ids[kind], cycle="2026-11")  # only a run's vouchers are claimed
            conn.execute("VACUUM ANALYZE")
        for r in range(args.rounds):
            for kind in (("statement", "row") if r % 2 == 0 else ("row", "statement")):
                batch, single = _round(conns[kind], ids[kind][r * args.per_round:(r + 1) * args.per_round],
                                       args.turn, args.singles,
                                       lambda v: {"delivery_id": f"dlv_{v[:8]}", "attempts": 1})
                times[kind]["batch"].append(batch)
                times[kind]["single"].append(single)
        result = {"benchmark": "audit_trigger_shape", "rounds": args.rounds, "turn": args.turn}
        for what in ("batch", "single"):
            s, w = statistics.median(times["statement"][what]), statistics.median(times["row"][what])
            result[what] = {"statement_us": round(s, 1), "row_us": round(w, 1), "row_over_statement": round(w / s, 3)}
            print(f"  {what:7} per voucher: statement {s:8.1f} us   row {w:8.1f} us   row / statement {w / s:5.3f}")
        for c in conns.values():
            c.close()
        print(json.dumps(result))
    finally:
        for name in names.values():
            _common.drop(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
