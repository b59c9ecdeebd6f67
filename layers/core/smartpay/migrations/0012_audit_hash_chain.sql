-- Tamper-evident audit trail (docs/database.md "Audit hash chain").
--
-- Every voucher_events row carries hash = sha256(canonical encoding of the row and the hash of
-- the previous row of the SAME voucher). One chain per voucher: every writer already holds the
-- voucher row's lock when it audits a change (smartpay.transitions), and a voucher's first row is
-- written in the transaction that creates the voucher, so chains never contend with each other
-- and a chain never forks. `smartpay audit verify` recomputes the chains in Python from the
-- plain column values (not with this SQL), so a row edited, deleted or inserted with the
-- append-only trigger disabled is found, and named.
--
-- Canonical encoding (version 1), UTF-8 text:
--   'smartpay-audit-v1' | prev | id | voucher_id | from_status | to_status | source | reference
--                       | detail | at
-- joined by '|', where prev is the previous hash in lower-case hex ('' for a voucher's first
-- row), id is decimal, voucher_id the canonical lower-case uuid, each text field (and detail as
-- PostgreSQL prints jsonb) is '<octet length>:<value>' or '-' when NULL, and at is the number of
-- microseconds since 1970-01-01 00:00 UTC (decimal). The length prefix makes the encoding
-- unambiguous whatever a field contains.

-- PL/pgSQL, not SQL: a SQL function taking a row is re-planned in every statement that calls it
-- (+~150 us per single-row INSERT here); a PL/pgSQL function's plan is kept for the session.
CREATE FUNCTION smartpay_audit_hash(e voucher_events, prev bytea) RETURNS bytea
    LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN sha256(convert_to(concat_ws('|', 'smartpay-audit-v1', coalesce(encode(prev, 'hex'), ''), e.id::text,
        e.voucher_id::text,
        coalesce(octet_length(e.from_status)::text || ':' || e.from_status, '-'),
        coalesce(octet_length(e.to_status)::text || ':' || e.to_status, '-'),
        coalesce(octet_length(e.source)::text || ':' || e.source, '-'),
        coalesce(octet_length(e.reference)::text || ':' || e.reference, '-'),
        coalesce(octet_length(e.detail::text)::text || ':' || e.detail::text, '-'),
        (extract(epoch FROM e.at) * 1000000)::bigint::text), 'UTF8'));
END;
$$;

ALTER TABLE voucher_events ADD COLUMN hash bytea;

-- Rows written before this migration get their chains now, voucher by voucher in id order.
-- The append-only trigger is switched off for this one transaction (the migration runs as the
-- owner, in one transaction with its schema_migrations row) and on again before it commits.
ALTER TABLE voucher_events DISABLE TRIGGER voucher_events_no_update;
DO $$
DECLARE
    e voucher_events;
    prev bytea;
    last_voucher uuid;
BEGIN
    FOR e IN SELECT * FROM voucher_events ORDER BY voucher_id, id LOOP
        IF last_voucher IS DISTINCT FROM e.voucher_id THEN
            prev := NULL;
            last_voucher := e.voucher_id;
        END IF;
        prev := smartpay_audit_hash(e, prev);
        UPDATE voucher_events SET hash = prev WHERE id = e.id;
    END LOOP;
END;
$$;
ALTER TABLE voucher_events ENABLE TRIGGER voucher_events_no_update;

ALTER TABLE voucher_events ALTER COLUMN hash SET NOT NULL,
    ADD CONSTRAINT voucher_events_hash_is_sha256 CHECK (octet_length(hash) = 32);

-- The chain link, computed by the database whatever the writer sent (a writer cannot choose its
-- row's hash). Column defaults (id, at) are already filled in when a BEFORE trigger runs. The
-- previous row is found by voucher_events_voucher_idx (voucher_id, id); in READ COMMITTED this
-- query sees what a concurrent writer committed before we got the voucher's lock.
CREATE FUNCTION voucher_events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    SELECT hash INTO prev FROM voucher_events WHERE voucher_id = NEW.voucher_id ORDER BY id DESC LIMIT 1;
    NEW.hash := smartpay_audit_hash(NEW, prev);
    RETURN NEW;
END;
$$;
CREATE TRIGGER voucher_events_chain BEFORE INSERT ON voucher_events
    FOR EACH ROW EXECUTE FUNCTION voucher_events_chain();

-- What the compliance report needs of the registry and the webhook log, without PII or payloads:
-- read by the auditor and by the reconcile function's role (the report as a reconcile event).
CREATE VIEW beneficiary_eligibility AS
SELECT id, programme, status, updated_at FROM beneficiaries;

CREATE VIEW webhook_receipts AS
SELECT id, voucher_id, type, outcome, occurred_at, received_at FROM webhook_events;
