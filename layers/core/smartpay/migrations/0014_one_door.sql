-- One door for money: a voucher is claimed for payment (moves to pending, the step before the call
-- to Buffr) only while it belongs to a run that is approved, enqueuing or running, and never past
-- its expiry. The claim (smartpay.transitions) checks both in its own statement and holds a share
-- lock on the run, so a pause or cancel waits for it or is seen by it; the trigger below refuses
-- the same for any role and any statement that tries otherwise.

-- Runs: a cycle run pays the cycle's issued vouchers; a supplementary run pays a named selection
-- of the cycle (explicit voucher ids, or the held vouchers whose beneficiary is eligible again),
-- prepared and approved like any run.
ALTER TABLE cycle_runs ADD COLUMN kind text NOT NULL DEFAULT 'cycle' CHECK (kind IN ('cycle', 'supplementary'));
ALTER TABLE cycle_runs ADD COLUMN selection jsonb;
ALTER TABLE cycle_runs ADD CONSTRAINT cycle_runs_selection CHECK (
    (kind = 'cycle' AND selection IS NULL) OR
    (kind = 'supplementary' AND (jsonb_typeof(selection -> 'voucher_ids') = 'array'
                                 OR selection = '{"held_eligible_again": true}'::jsonb)));

-- The statuses in which a run's vouchers may be claimed.
CREATE FUNCTION smartpay_run_claims(status text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN status IN ('approved', 'enqueuing', 'running');

CREATE FUNCTION vouchers_check_in_run() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NEW.expires_at <= now() THEN
        RAISE EXCEPTION 'voucher %: not sent, expired at %', NEW.id, NEW.expires_at
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM public.cycle_run_items i JOIN public.cycle_runs r ON r.id = i.run_id
                    WHERE i.voucher_id = NEW.id AND smartpay_run_claims(r.status)) THEN
        RAISE EXCEPTION 'voucher %: not sent, it is not part of an approved run', NEW.id
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'payments go through cycle runs (prepare, approve by another principal)';
    END IF;
    RETURN NEW;
END;
$$;
-- Named to fire after vouchers_lifecycle and vouchers_payable (triggers fire in name order): a move
-- the lifecycle or the registry refuses is refused for that reason first.
CREATE TRIGGER vouchers_run_gate BEFORE UPDATE OF status ON vouchers FOR EACH ROW
    WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending')
    EXECUTE FUNCTION vouchers_check_in_run();
