-- Payment integrity: eligibility at every payment point, and the database refusing
-- what the code must never do. The lifecycle's own data (which status changes are allowed, the
-- status list, where an ineligible voucher goes) is NOT written here: smartpay.migrate renders it
-- from smartpay/lifecycle.py after the numbered migrations, on every run where it changed
-- (docs/database.md "Generated from Python").

-- 1. The lifecycle as data: every (from, to) pair and lifecycle.decide()'s outcome for it, for
--    auditors and reports. Filled by smartpay.migrate (generated "lifecycle" step), which also
--    re-creates the vouchers_lifecycle trigger below with the allowed pairs.
CREATE TABLE voucher_lifecycle (
    from_status    text NOT NULL,
    to_status      text NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'stale')),
    review_reason  text,
    PRIMARY KEY (from_status, to_status)
);

-- Registry changes act on vouchers as the source "registry" in the audit trail.
ALTER TABLE voucher_events DROP CONSTRAINT voucher_events_source_check;
ALTER TABLE voucher_events ADD CONSTRAINT voucher_events_source_check
    CHECK (source IN ('disburse', 'webhook', 'reconcile', 'operator', 'registry'));

-- Held vouchers are open too (reconciliation and disbursement walk them).
DROP INDEX vouchers_open_idx;
CREATE INDEX vouchers_open_idx ON vouchers (id) WHERE status IN ('issued', 'held', 'pending', 'active');

-- 2. Eligibility, the one rule (docs/api.md "Eligibility"): NULL when a beneficiary in this
--    registry state may be paid a voucher of ``programme``, else the reason. Issue (API and
--    payroll import, smartpay.issuance), every claim for payment (smartpay.transitions) and the
--    triggers below all call it. A plain SQL expression: the planner inlines it into each query.
CREATE FUNCTION smartpay_ineligibility(beneficiary_status text, enrolled_programme text, programme text)
    RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN beneficiary_status IS NULL THEN 'unknown beneficiary'
                WHEN beneficiary_status <> 'active' THEN 'beneficiary is ' || beneficiary_status
                WHEN enrolled_programme IS DISTINCT FROM programme
                    THEN 'beneficiary is not enrolled in ' || programme END;

-- 3. vouchers: what may change after issue. A row trigger whose WHEN condition is the whole
--    rule, evaluated natively for each updated row: the function runs only to refuse (it always
--    raises), so a webhook's or a batch's legal updates cost no PL/pgSQL call at all. The WHEN
--    condition lists the lifecycle's allowed (from, to) pairs: smartpay.migrate re-creates this
--    trigger from lifecycle.py (generated step); the one created here refuses every status change
--    until then (fail-closed).
CREATE FUNCTION vouchers_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.id, OLD.beneficiary_id, OLD.programme, OLD.cycle, OLD.amount_cents, OLD.currency, OLD.issued_at)
       IS DISTINCT FROM
       (NEW.id, NEW.beneficiary_id, NEW.programme, NEW.cycle, NEW.amount_cents, NEW.currency, NEW.issued_at) THEN
        RAISE EXCEPTION 'voucher %: its id, beneficiary, programme, cycle, amount, currency and issue time never change after issue', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RAISE EXCEPTION 'voucher %: % -> % is not a transition the lifecycle allows', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER vouchers_lifecycle BEFORE UPDATE ON vouchers FOR EACH ROW
    WHEN ((OLD.id, OLD.beneficiary_id, OLD.programme, OLD.cycle, OLD.amount_cents, OLD.currency, OLD.issued_at)
          IS DISTINCT FROM
          (NEW.id, NEW.beneficiary_id, NEW.programme, NEW.cycle, NEW.amount_cents, NEW.currency, NEW.issued_at)
          OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION vouchers_refuse_update();

-- Nothing becomes pending (is sent to Buffr) for a beneficiary who is not eligible. Runs only
-- for a claim (WHEN), as the claiming role (disburse reads the registry's status and programme;
-- a role that may not is refused anyway). Its query sees the registry as committed now, not as
-- the claiming statement saw it: if a registry change committed in between, the claim is
-- refused as a serialisation failure and the claimer's retry (a fresh snapshot) holds or
-- cancels the voucher instead.
CREATE FUNCTION vouchers_check_payable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    reason text;
BEGIN
    SELECT smartpay_ineligibility(b.status, b.programme, NEW.programme) INTO reason
      FROM beneficiaries b WHERE b.id = NEW.beneficiary_id;
    IF NOT FOUND THEN
        reason := smartpay_ineligibility(NULL, NULL, NEW.programme);
    END IF;
    IF reason IS NOT NULL THEN
        RAISE EXCEPTION 'voucher %: not sent, %', NEW.id, reason
            USING ERRCODE = 'serialization_failure',
                  HINT = 'the registry changed while the voucher was claimed: retry (it will be held or cancelled)';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER vouchers_payable BEFORE UPDATE OF status ON vouchers FOR EACH ROW
    WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending')
    EXECUTE FUNCTION vouchers_check_payable();

-- A voucher is born issued, for an eligible beneficiary (the payroll import runs as the owner:
-- this holds for it too).
CREATE FUNCTION vouchers_guard_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.status INTO bad FROM new_rows n
     WHERE n.status <> 'issued' OR n.buffr_delivery_id IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'voucher %: a voucher is created issued (not %) and not yet at Buffr', bad.id, bad.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT n.id, smartpay_ineligibility(b.status, b.programme, n.programme) AS reason
      INTO bad
      FROM new_rows n LEFT JOIN beneficiaries b ON b.id = n.beneficiary_id
     WHERE smartpay_ineligibility(b.status, b.programme, n.programme) IS NOT NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'voucher %: not issued, %', bad.id, bad.reason
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER vouchers_guard_insert AFTER INSERT ON vouchers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION vouchers_guard_insert();

-- 4. The audit trail: append-only including TRUNCATE, for every role but the migration owner
--    (tests and disposable environments empty it as the owner). UPDATE and DELETE stay refused
--    for everyone (0001).
CREATE FUNCTION voucher_events_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'voucher_events is append-only (TRUNCATE refused for %)', current_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER voucher_events_no_truncate BEFORE TRUNCATE ON voucher_events
    FOR EACH STATEMENT EXECUTE FUNCTION voucher_events_no_truncate();

-- 5. A registry change acts at once on the beneficiary's vouchers (docs/operations.md "When the
--    registry changes"): those not yet at Buffr (issued, held: smartpay_before_buffr, generated
--    from lifecycle.BEFORE_BUFFR) are held (suspended) or cancelled
--    for good (deceased, no longer enrolled), each with its audit row; those possibly or surely at
--    Buffr (pending, active) are flagged for review (Buffr's API has no cancel call).
--    Reinstatement changes nothing here: the next disburse pays a held voucher.
CREATE FUNCTION beneficiaries_eligibility_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    WITH target AS MATERIALIZED (
        SELECT v.id, v.status AS from_status, smartpay_ineligibility(NEW.status, NEW.programme, v.programme) AS reason
          FROM vouchers v
         WHERE v.beneficiary_id = NEW.id AND smartpay_before_buffr(v.status)
           AND smartpay_ineligibility(NEW.status, NEW.programme, v.programme) IS NOT NULL
         ORDER BY v.id
           FOR NO KEY UPDATE
    ), moved AS (
        UPDATE vouchers v
           SET status = smartpay_ineligible_target(NEW.status), status_changed_at = now(),
               version = v.version + 1, failure_reason = t.reason
          FROM target t
         WHERE v.id = t.id AND t.from_status <> smartpay_ineligible_target(NEW.status)
        RETURNING v.id, t.from_status, v.status AS to_status, t.reason
    )
    INSERT INTO voucher_events (voucher_id, from_status, to_status, source, reference, detail)
    SELECT id, from_status, to_status, 'registry', 'beneficiary ' || NEW.id, jsonb_build_object('reason', reason)
      FROM moved ORDER BY id;

    UPDATE vouchers v
       SET review_reason = smartpay_ineligibility(NEW.status, NEW.programme, v.programme)
                           || ' after the voucher was sent to Buffr: check it with Buffr'
     WHERE v.beneficiary_id = NEW.id AND v.status IN ('pending', 'active') AND v.review_reason IS NULL
       AND smartpay_ineligibility(NEW.status, NEW.programme, v.programme) IS NOT NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER beneficiaries_eligibility_changed AFTER UPDATE OF status, programme ON beneficiaries
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.programme IS DISTINCT FROM NEW.programme)
    EXECUTE FUNCTION beneficiaries_eligibility_changed();
