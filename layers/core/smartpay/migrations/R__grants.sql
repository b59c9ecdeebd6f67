-- The access matrix (README "Database access"): REPEATABLE, re-applied whenever this file
-- changes or a numbered migration was applied. It states the whole desired state: every
-- role starts from nothing in this database, then gets exactly what is granted below.
-- A new table gets no access until it is added here (and to tests/integration/test_db_roles.py).
-- The roles themselves come from smartpay/access.py (cluster-wide, created if missing).

-- 1. Start from nothing (column privileges go with their table's REVOKE ALL).
REVOKE ALL ON ALL TABLES IN SCHEMA public
    FROM smartpay_beneficiaries, smartpay_disburse, smartpay_webhook, smartpay_reconcile, buffr_readonly, auditor;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public
    FROM smartpay_beneficiaries, smartpay_disburse, smartpay_webhook, smartpay_reconcile, buffr_readonly, auditor;
REVOKE ALL ON SCHEMA public
    FROM smartpay_beneficiaries, smartpay_disburse, smartpay_webhook, smartpay_reconcile, buffr_readonly, auditor;
GRANT USAGE ON SCHEMA public
    TO smartpay_beneficiaries, smartpay_disburse, smartpay_webhook, smartpay_reconcile, buffr_readonly, auditor;

-- Only these roles (and the owner/administrators) may connect to this database; no temp tables.
-- Needs the database's owner: a migrating role that is not the owner leaves it to the DBA.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO smartpay_beneficiaries, smartpay_disburse, '
                   'smartpay_webhook, smartpay_reconcile, buffr_readonly, auditor', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'not the owner of database %: CONNECT privileges left unchanged', current_database();
END;
$$;

-- 2. beneficiaries function: the registry with PII (it verifies ID numbers and masks its
--    replies) and the vouchers it lists. Nothing else, no writes.
GRANT SELECT ON beneficiaries, vouchers TO smartpay_beneficiaries;

-- 3. disburse function: issues vouchers and sends them to Buffr, which needs the ID number
--    (beneficiary_id_number) but never the names or phone number.
--    A voucher is inserted with the terms of issue only: its id, status (issued), timestamps
--    and Buffr columns take their defaults (the vouchers insert trigger refuses anything else
--    for every role, the owner's payroll import included).
GRANT SELECT ON programmes TO smartpay_disburse;
GRANT SELECT (id, id_number, region, programme, status, created_at, updated_at) ON beneficiaries
    TO smartpay_disburse;
GRANT SELECT ON vouchers TO smartpay_disburse;
GRANT INSERT (beneficiary_id, programme, cycle, amount_cents, currency, expires_at) ON vouchers
    TO smartpay_disburse;
GRANT UPDATE (status, status_changed_at, version, buffr_delivery_id, failure_reason, review_reason) ON vouchers
    TO smartpay_disburse;
-- Its audit rows are written by the database (migration 0016): SELECT only.
GRANT SELECT ON voucher_events TO smartpay_disburse;
-- Cycle runs (prepare, approve, enqueue, consume the queue). What the maker prepared (fingerprint,
-- totals, maker) is never rewritten: only the run's progress columns may change; its audit
-- trail and its voucher ledger are append-only for this role.
GRANT SELECT, INSERT ON cycle_runs, cycle_run_events, cycle_run_items, cycle_run_chunks TO smartpay_disburse;
GRANT UPDATE (status, checker_principal, checker_key_id, canceller_principal, canceller_key_id, approved_at,
              finished_at, updated_at) ON cycle_runs
    TO smartpay_disburse;
GRANT UPDATE (state, token, message_id, sends, receives, attempts, retries, errors, enqueued_at, done_at,
              updated_at) ON cycle_run_chunks TO smartpay_disburse;
GRANT USAGE ON SEQUENCE cycle_run_events_id_seq TO smartpay_disburse;
-- One consumer per cycle-run chunk at a time (smartpay/leases.py).
GRANT SELECT, INSERT, UPDATE, DELETE ON smartpay_leases TO smartpay_disburse;

-- 4. webhook function: status columns of vouchers (audited by the database), the audit trail
--    (read) and its own log. No access to beneficiaries at all.
GRANT SELECT ON vouchers TO smartpay_webhook;
GRANT UPDATE (status, status_changed_at, version, buffr_delivery_id, failure_reason, review_reason) ON vouchers
    TO smartpay_webhook;
GRANT SELECT ON voucher_events TO smartpay_webhook;
GRANT SELECT, INSERT ON webhook_events TO smartpay_webhook;
GRANT USAGE ON SEQUENCE webhook_events_id_seq TO smartpay_webhook;

-- 5. reconcile function: status columns of vouchers, the audit trail, its own tables and
--    reports, and the registry's non-PII columns for reports. Re-disbursing a voucher that
--    Buffr does not know goes through the disburse function (its role holds the ID number).
GRANT SELECT ON programmes, vouchers, voucher_events, reconciliation_report TO smartpay_reconcile;
-- The compliance report as a reconcile event: the PII-free eligibility and webhook receipt views.
GRANT SELECT ON beneficiary_eligibility, webhook_receipts TO smartpay_reconcile;
GRANT SELECT (id, region, programme, status, created_at, updated_at) ON beneficiaries TO smartpay_reconcile;
GRANT UPDATE (status, status_changed_at, version, buffr_delivery_id, failure_reason, review_reason) ON vouchers
    TO smartpay_reconcile;
GRANT SELECT, INSERT, UPDATE ON reconciliation_runs, reconciliation_records TO smartpay_reconcile;
GRANT USAGE ON SEQUENCE reconciliation_records_id_seq TO smartpay_reconcile;
-- The cycle run a voucher was sent by (sent vs confirmed in the cycle report); read only.
GRANT SELECT ON cycle_runs, cycle_run_items, cycle_run_chunks TO smartpay_reconcile;
-- One invocation per shard split at a time (smartpay/leases.py).
GRANT SELECT, INSERT, UPDATE, DELETE ON smartpay_leases TO smartpay_reconcile;

-- 6. Buffr (partner, read-only): vouchers and the masked registry view. Nothing else.
GRANT SELECT ON vouchers, beneficiaries_masked TO buffr_readonly;

-- 7. Auditors (read-only): the audit trail, the webhook log, reconciliation tables and
--    reports, and the vouchers and masked registry they refer to.
GRANT SELECT ON programmes, vouchers, voucher_events, webhook_events, reconciliation_runs,
    reconciliation_records, reconciliation_report, beneficiaries_masked, voucher_lifecycle,
    beneficiary_eligibility, webhook_receipts, cycle_runs, cycle_run_events, cycle_run_items, cycle_run_chunks
    TO auditor;

-- 8. Status columns: whichever role may UPDATE them, the vouchers trigger (migration 0011) lets
--    a status change only along the lifecycle (voucher_lifecycle, generated from lifecycle.py)
--    and never a change of a voucher's terms; voucher_events refuses UPDATE, DELETE and (but for
--    the owner) TRUNCATE, and its rows are written by the vouchers trigger only (migration 0016:
--    no application role holds INSERT on it). A cycle run's status moves are audited by the
--    cycle_runs trigger; the disburse role's INSERT on cycle_run_events writes refusals only.
--    Nobody but the owner holds TRUNCATE anyway.

-- 9. The transition statement, as the two functions migrate generates from smartpay/transitions.py
--    (SECURITY INVOKER: the caller's own privileges above decide what it may read and change).
--    EXECUTE for the roles that change a voucher's status; the paying one (a move to pending,
--    which reads the registry and share-locks the voucher's run) for the disburse role only.
REVOKE ALL ON FUNCTION smartpay_transition_many(jsonb, uuid[], text, text),
    smartpay_transition_many_paying(jsonb, uuid[], text, text)
    FROM PUBLIC, smartpay_beneficiaries, smartpay_disburse, smartpay_webhook, smartpay_reconcile, buffr_readonly, auditor;
GRANT EXECUTE ON FUNCTION smartpay_transition_many(jsonb, uuid[], text, text)
    TO smartpay_disburse, smartpay_webhook, smartpay_reconcile;
GRANT EXECUTE ON FUNCTION smartpay_transition_many_paying(jsonb, uuid[], text, text) TO smartpay_disburse;
