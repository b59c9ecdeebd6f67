-- The audit trail written by the database (docs/database.md "Audit rows written by the database").
--
-- 1. Every change of a voucher's status, review_reason, buffr_delivery_id or amount gets its
--    voucher_events row from a trigger, in the statement that makes the change; every new voucher
--    its 'issued' row. The row's source, reference and detail are what the writer set for its
--    transaction with set_config(..., true):
--      smartpay.source     required (disburse, webhook, reconcile, operator, registry): a change
--                          without it is refused, so no audit row is ever written without a source;
--                          a function's role may name only its own (disburse: disburse, operator);
--      smartpay.reference  optional;
--      smartpay.detail     optional, a JSON object {voucher id: detail}; read and cleared by the
--                          trigger, so one statement's details never reach the next one's rows.
--    The application roles lose INSERT on voucher_events (R__grants.sql): the trigger is the only
--    writer, and the hash chain (0012) links every row it writes.
-- 2. cycle_runs: created awaiting approval with no checker; the maker's terms and, once set, the
--    checker and approval time never change; every status move gets its cycle_run_events row from
--    the database (principal and key from smartpay.actor / smartpay.actor_key, reference and
--    detail from smartpay.run_reference / smartpay.run_detail). Only the owner (these triggers)
--    writes an event with a to_status; the disburse role still writes refusals (no status move).
-- 3. Every SECURITY DEFINER function pins search_path = pg_catalog, public, pg_temp (temp last) and
--    schema-qualifies its tables; the invoker-rights trigger functions qualify theirs; PUBLIC loses
--    CREATE on the schema and TEMPORARY on the database (this migration refuses to finish otherwise).
-- 4. The registry trigger's review reason is audited like every other change (via 1).

-- 1. vouchers -----------------------------------------------------------------------------------

-- Statement-level, with transition tables: one call per statement however many vouchers it
-- changed (a batch's claim or settle statement moves up to a chunk's vouchers at once).
CREATE FUNCTION public.vouchers_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    src text := nullif(current_setting('smartpay.source', true), '');
    ref text := nullif(current_setting('smartpay.reference', true), '');
    details jsonb := nullif(current_setting('smartpay.detail', true), '')::jsonb;
BEGIN
    IF details IS NOT NULL THEN
        PERFORM set_config('smartpay.detail', '', true);
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF src IS NULL THEN
            PERFORM FROM new_rows LIMIT 1;
        END IF;
    ELSIF src IS NULL THEN
        PERFORM FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE (o.status, o.review_reason, o.buffr_delivery_id, o.amount_cents)
                IS DISTINCT FROM (n.status, n.review_reason, n.buffr_delivery_id, n.amount_cents)
          LIMIT 1;
    END IF;
    -- A function's role names only its own sources (an issue through the API is the operator's).
    IF src IS NOT NULL AND NOT src = ANY (CASE session_user::text
            WHEN 'smartpay_disburse' THEN ARRAY['disburse', 'operator']
            WHEN 'smartpay_webhook' THEN ARRAY['webhook']
            WHEN 'smartpay_reconcile' THEN ARRAY['reconcile']
            ELSE ARRAY[src] END) THEN
        RAISE EXCEPTION 'the audit source % is not %''s', src, session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF src IS NULL THEN
        IF FOUND THEN
            RAISE EXCEPTION 'a voucher changed without an audit source: its writer must set smartpay.source for the transaction'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'SELECT set_config(''smartpay.source'', ''operator'', true) in the same transaction';
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.voucher_events (voucher_id, from_status, to_status, source, reference, detail)
        SELECT n.id, NULL, n.status, src, ref, details -> n.id::text
          FROM new_rows n ORDER BY n.id;
    ELSE
        INSERT INTO public.voucher_events (voucher_id, from_status, to_status, source, reference, detail)
        SELECT n.id, o.status, n.status, src, ref,
               nullif(coalesce(details -> n.id::text, '{}'::jsonb)
                      || CASE WHEN n.review_reason IS DISTINCT FROM o.review_reason AND n.review_reason IS NOT NULL
                                   AND NOT coalesce(details -> n.id::text ? 'review_reason', false)
                              THEN jsonb_build_object('review_reason', n.review_reason) ELSE '{}'::jsonb END,
                      '{}'::jsonb)
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE (o.status, o.review_reason, o.buffr_delivery_id, o.amount_cents)
               IS DISTINCT FROM (n.status, n.review_reason, n.buffr_delivery_id, n.amount_cents)
         ORDER BY n.id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER vouchers_audit_insert AFTER INSERT ON public.vouchers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.vouchers_audit();
CREATE TRIGGER vouchers_audit_update AFTER UPDATE ON public.vouchers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.vouchers_audit();

-- The chain link (0012), its tables qualified.
CREATE OR REPLACE FUNCTION public.voucher_events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    SELECT e.hash INTO prev FROM public.voucher_events e
     WHERE e.voucher_id = NEW.voucher_id ORDER BY e.id DESC LIMIT 1;
    NEW.hash := public.smartpay_audit_hash(NEW, prev);
    RETURN NEW;
END;
$$;

-- 3. search paths -------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION public.vouchers_check_payable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    reason text;
BEGIN
    SELECT public.smartpay_ineligibility(b.status, b.programme, NEW.programme) INTO reason
      FROM public.beneficiaries b WHERE b.id = NEW.beneficiary_id;
    IF NOT FOUND THEN
        reason := public.smartpay_ineligibility(NULL, NULL, NEW.programme);
    END IF;
    IF reason IS NOT NULL THEN
        RAISE EXCEPTION 'voucher %: not sent, %', NEW.id, reason
            USING ERRCODE = 'serialization_failure',
                  HINT = 'the registry changed while the voucher was claimed: retry (it will be held or cancelled)';
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION public.vouchers_guard_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.status INTO bad FROM new_rows n
     WHERE n.status <> 'issued' OR n.buffr_delivery_id IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'voucher %: a voucher is created issued (not %) and not yet at Buffr', bad.id, bad.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT n.id, public.smartpay_ineligibility(b.status, b.programme, n.programme) AS reason
      INTO bad
      FROM new_rows n LEFT JOIN public.beneficiaries b ON b.id = n.beneficiary_id
     WHERE public.smartpay_ineligibility(b.status, b.programme, n.programme) IS NOT NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'voucher %: not issued, %', bad.id, bad.reason
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$;

-- 4. The registry trigger (0011): the same moves, audited by vouchers_audit as the source
--    'registry' (the writer's own settings are restored afterwards), and its review reason on
--    vouchers already at Buffr audited too.
CREATE OR REPLACE FUNCTION public.beneficiaries_eligibility_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    outer_source text := current_setting('smartpay.source', true);
    outer_reference text := current_setting('smartpay.reference', true);
BEGIN
    PERFORM set_config('smartpay.source', 'registry', true),
            set_config('smartpay.reference', 'beneficiary ' || NEW.id, true);
    WITH target AS MATERIALIZED (
        SELECT v.id, v.status AS from_status,
               public.smartpay_ineligibility(NEW.status, NEW.programme, v.programme) AS reason
          FROM public.vouchers v
         WHERE v.beneficiary_id = NEW.id AND public.smartpay_before_buffr(v.status)
           AND public.smartpay_ineligibility(NEW.status, NEW.programme, v.programme) IS NOT NULL
         ORDER BY v.id
           FOR NO KEY UPDATE
    ), ctx AS MATERIALIZED (
        SELECT set_config('smartpay.detail',
                          coalesce(jsonb_object_agg(t.id, jsonb_build_object('reason', t.reason))::text, ''), true)
          FROM target t
    )
    UPDATE public.vouchers v
       SET status = public.smartpay_ineligible_target(NEW.status), status_changed_at = now(),
           version = v.version + 1, failure_reason = t.reason
      FROM target t, ctx
     WHERE v.id = t.id AND t.from_status <> public.smartpay_ineligible_target(NEW.status);

    PERFORM set_config('smartpay.detail', '', true);
    UPDATE public.vouchers v
       SET review_reason = public.smartpay_ineligibility(NEW.status, NEW.programme, v.programme)
                           || ' after the voucher was sent to Buffr: check it with Buffr'
     WHERE v.beneficiary_id = NEW.id AND v.status IN ('pending', 'active') AND v.review_reason IS NULL
       AND public.smartpay_ineligibility(NEW.status, NEW.programme, v.programme) IS NOT NULL;
    PERFORM set_config('smartpay.source', coalesce(outer_source, ''), true),
            set_config('smartpay.reference', coalesce(outer_reference, ''), true);
    RETURN NULL;
END;
$$;

-- 2. cycle runs ---------------------------------------------------------------------------------

-- Refuses, always (the WHEN conditions below are the rules, as for vouchers in 0011).
CREATE FUNCTION public.cycle_runs_refuse() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        RAISE EXCEPTION 'cycle run %: a run is created awaiting approval with no checker (not %)', NEW.id, NEW.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RAISE EXCEPTION 'cycle run %: what the maker prepared, and the checker and approval once set, never change', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER cycle_runs_born_awaiting_approval BEFORE INSERT ON public.cycle_runs FOR EACH ROW
    WHEN (NEW.status <> 'awaiting_approval' OR NEW.checker_principal IS NOT NULL OR NEW.checker_key_id IS NOT NULL
          OR NEW.approved_at IS NOT NULL OR NEW.finished_at IS NOT NULL
          OR NEW.canceller_principal IS NOT NULL OR NEW.canceller_key_id IS NOT NULL)
    EXECUTE FUNCTION public.cycle_runs_refuse();
CREATE TRIGGER cycle_runs_immutable BEFORE UPDATE ON public.cycle_runs FOR EACH ROW
    WHEN ((OLD.id, OLD.programme, OLD.cycle, OLD.idempotency_key, OLD.fingerprint, OLD.voucher_count,
           OLD.total_amount_cents, OLD.region_totals, OLD.exceptions, OLD.chunk_size, OLD.maker_principal,
           OLD.maker_key_id, OLD.prepared_at, OLD.expires_at)
          IS DISTINCT FROM
          (NEW.id, NEW.programme, NEW.cycle, NEW.idempotency_key, NEW.fingerprint, NEW.voucher_count,
           NEW.total_amount_cents, NEW.region_totals, NEW.exceptions, NEW.chunk_size, NEW.maker_principal,
           NEW.maker_key_id, NEW.prepared_at, NEW.expires_at)
          OR (OLD.checker_principal IS NOT NULL AND NEW.checker_principal IS DISTINCT FROM OLD.checker_principal)
          OR (OLD.checker_key_id IS NOT NULL AND NEW.checker_key_id IS DISTINCT FROM OLD.checker_key_id)
          OR (OLD.approved_at IS NOT NULL AND NEW.approved_at IS DISTINCT FROM OLD.approved_at)
          OR (OLD.kind, OLD.selection::text) IS DISTINCT FROM (NEW.kind, NEW.selection::text)
          OR (OLD.canceller_principal IS NOT NULL AND NEW.canceller_principal IS DISTINCT FROM OLD.canceller_principal)
          OR (OLD.canceller_key_id IS NOT NULL AND NEW.canceller_key_id IS DISTINCT FROM OLD.canceller_key_id))
    EXECUTE FUNCTION public.cycle_runs_refuse();

ALTER TABLE public.cycle_run_events DROP CONSTRAINT cycle_run_events_action_check;
ALTER TABLE public.cycle_run_events ADD CONSTRAINT cycle_run_events_action_check
    CHECK (action IN ('prepared', 'approved', 'approval_refused', 'enqueuing', 'enqueued', 'paused', 'resumed',
                      'completed', 'expired', 'superseded', 'cancelled', 'cancel_refused'));

-- The event of each status move (and of the creation). Expiry and completion are the system's;
-- every other move names the principal the writer set (refused without one).
CREATE FUNCTION public.cycle_runs_audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
    action text;
    principal text := nullif(current_setting('smartpay.actor', true), '');
    key_id text := nullif(current_setting('smartpay.actor_key', true), '');
    detail jsonb := nullif(current_setting('smartpay.run_detail', true), '')::jsonb;
BEGIN
    IF detail IS NOT NULL THEN
        PERFORM set_config('smartpay.run_detail', '', true);
    END IF;
    action := CASE WHEN TG_OP = 'INSERT' THEN 'prepared'
                   WHEN NEW.status = 'cancelled' AND old_status = 'awaiting_approval' THEN 'superseded'
                   WHEN NEW.status IN ('approved', 'expired', 'cancelled', 'paused', 'completed') THEN NEW.status
                   WHEN old_status = 'paused' THEN 'resumed'
                   WHEN NEW.status = 'enqueuing' THEN 'enqueuing'
                   WHEN NEW.status = 'running' THEN 'enqueued' END;
    IF action IN ('expired', 'completed') THEN
        principal := 'system';
        key_id := NULL;
    ELSIF principal IS NULL THEN
        RAISE EXCEPTION 'cycle run %: % -> % without an actor: the writer must set smartpay.actor', NEW.id,
            old_status, NEW.status USING ERRCODE = 'insufficient_privilege';
    END IF;
    detail := CASE action
        WHEN 'prepared' THEN jsonb_build_object('voucher_count', NEW.voucher_count,
                 'total_amount_cents', NEW.total_amount_cents, 'exceptions', (NEW.exceptions ->> 'total')::int,
                 'fingerprint', NEW.fingerprint)
        WHEN 'approved' THEN jsonb_build_object('maker_principal', NEW.maker_principal,
                 'maker_key_id', NEW.maker_key_id, 'checker_principal', NEW.checker_principal,
                 'checker_key_id', NEW.checker_key_id, 'fingerprint', NEW.fingerprint)
        ELSE '{}'::jsonb END || coalesce(detail, '{}'::jsonb);
    INSERT INTO public.cycle_run_events (run_id, action, from_status, to_status, principal, key_id, reference, detail)
    VALUES (NEW.id, action, old_status, NEW.status, principal, key_id,
            nullif(current_setting('smartpay.run_reference', true), ''), nullif(detail, '{}'::jsonb));
    RETURN NULL;
END;
$$;
CREATE TRIGGER cycle_runs_audit_insert AFTER INSERT ON public.cycle_runs FOR EACH ROW
    EXECUTE FUNCTION public.cycle_runs_audit();
CREATE TRIGGER cycle_runs_audit_status AFTER UPDATE OF status ON public.cycle_runs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION public.cycle_runs_audit();

-- An event with a status move is the database's (cycle_runs_audit runs as the owner).
CREATE FUNCTION public.cycle_run_events_refuse_status() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'cycle run %: status moves are audited by the database, not by %', NEW.run_id, current_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER cycle_run_events_status_by_database BEFORE INSERT ON public.cycle_run_events FOR EACH ROW
    WHEN (NEW.to_status IS NOT NULL)
    EXECUTE FUNCTION public.cycle_run_events_refuse_status();

-- 3. (cont.) No CREATE in the schema and no temporary tables for PUBLIC: a function role cannot
--    shadow a table with its own. Needs the database's and the schema's owner; refuses to finish
--    otherwise (the DBA runs the two REVOKEs, then migrates again).
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_database d,
                      aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                WHERE d.datname = current_database() AND a.grantee = 0 AND a.privilege_type = 'TEMPORARY')
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n,
                         aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                   WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE') THEN
        RAISE EXCEPTION 'PUBLIC still holds TEMPORARY on database % or CREATE on schema public', current_database()
            USING HINT = format('as the owner: REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC; '
                                'REVOKE CREATE ON SCHEMA public FROM PUBLIC; then migrate again', current_database());
    END IF;
END;
$$;
