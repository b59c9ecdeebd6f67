-- A run's ledger is planned in one statement: 300,000 cycle_run_items rows for a national
-- cycle, inside the approval's request (docs/performance.md "Pay day"). Row-by-row foreign-key
-- checks (a lookup and a key-share lock on every voucher and, 300,000 times, on the run) cost
-- twice the insert itself. The same refusal, set-based: one check per statement over the rows
-- it inserted. Items are only ever inserted (R__grants.sql: SELECT and INSERT) and no role may
-- delete a voucher or a run, so the insert is the one place a dangling reference could come from.
ALTER TABLE cycle_run_items DROP CONSTRAINT cycle_run_items_run_id_fkey,
                            DROP CONSTRAINT cycle_run_items_voucher_id_fkey;

CREATE FUNCTION cycle_run_items_refer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_items n WHERE NOT EXISTS (SELECT 1 FROM vouchers v WHERE v.id = n.voucher_id)) THEN
        RAISE EXCEPTION 'cycle_run_items refers to a voucher that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT run_id FROM new_items) n
                WHERE NOT EXISTS (SELECT 1 FROM cycle_runs r WHERE r.id = n.run_id)) THEN
        RAISE EXCEPTION 'cycle_run_items refers to a cycle run that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER cycle_run_items_refer AFTER INSERT ON cycle_run_items
    REFERENCING NEW TABLE AS new_items FOR EACH STATEMENT EXECUTE FUNCTION cycle_run_items_refer();
