-- Cycle runs always finish, and bad input is refused by the database too.
--
-- 1. No chunk is parked while its run is running: a chunk is parked only while its run is not
--    (the run row is read under a share lock, as pause and resume take it), and a run starts
--    running again only once its parked chunks are planned again (resume does both), and only
--    through a resume.
CREATE FUNCTION cycle_run_chunks_park_check() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.cycle_runs r WHERE r.id = NEW.run_id AND r.status IN ('enqueuing', 'running')
               FOR SHARE) THEN
        RAISE EXCEPTION 'chunk % of cycle run % may not be parked while the run is running', NEW.chunk_no, NEW.run_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER cycle_run_chunks_park BEFORE UPDATE OF state ON cycle_run_chunks FOR EACH ROW
    WHEN (NEW.state = 'parked' AND OLD.state IS DISTINCT FROM 'parked')
    EXECUTE FUNCTION cycle_run_chunks_park_check();

CREATE FUNCTION cycle_runs_run_check() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.cycle_run_chunks c WHERE c.run_id = NEW.id AND c.state = 'parked') THEN
        RAISE EXCEPTION 'cycle run % may not run with parked chunks (resume plans them again)', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER cycle_runs_no_parked_chunks BEFORE UPDATE OF status ON cycle_runs FOR EACH ROW
    WHEN (NEW.status IN ('enqueuing', 'running') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cycle_runs_run_check();

-- A paused run runs again only through a resume: at commit, a 'resumed' event of the run must
-- follow its last 'paused' one (deferred, so the event may be written before or after the move).
CREATE FUNCTION cycle_runs_resumed_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.cycle_run_events e
                    WHERE e.run_id = NEW.id AND e.action = 'resumed'
                      AND e.id > coalesce((SELECT max(p.id) FROM public.cycle_run_events p
                                            WHERE p.run_id = NEW.id AND p.action = 'paused'), 0)) THEN
        RAISE EXCEPTION 'cycle run % may leave paused only through a resume (no resumed event)', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER cycle_runs_resumed AFTER UPDATE OF status ON cycle_runs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status = 'paused' AND NEW.status IN ('enqueuing', 'running'))
    EXECUTE FUNCTION cycle_runs_resumed_check();

-- 2. A run can be cancelled once paused (four eyes, like approval): the canceller is recorded.
ALTER TABLE cycle_runs ADD COLUMN canceller_principal text, ADD COLUMN canceller_key_id text,
    ADD CONSTRAINT cycle_runs_cancel_four_eyes CHECK (
        canceller_key_id IS NULL OR (canceller_key_id <> maker_key_id AND canceller_principal <> maker_principal));
ALTER TABLE cycle_run_events DROP CONSTRAINT cycle_run_events_action_check;
ALTER TABLE cycle_run_events ADD CONSTRAINT cycle_run_events_action_check CHECK (action IN (
    'prepared', 'approved', 'approval_refused', 'enqueued', 'paused', 'resumed', 'completed', 'expired',
    'superseded', 'cancelled', 'cancel_refused'));

-- 3. A voucher is issued within its programme's maximum (the issue path and the payroll import
--    check it; the database refuses it for every writer).
CREATE FUNCTION vouchers_within_maximum() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.amount_cents, n.programme, p.max_amount_cents INTO bad
      FROM new_rows n LEFT JOIN public.programmes p ON p.code = n.programme
     WHERE p.code IS NULL OR n.amount_cents > p.max_amount_cents LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'voucher %: amount_cents % is above the % maximum of %', bad.id, bad.amount_cents,
            bad.programme, bad.max_amount_cents USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER vouchers_within_maximum AFTER INSERT ON vouchers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION vouchers_within_maximum();
