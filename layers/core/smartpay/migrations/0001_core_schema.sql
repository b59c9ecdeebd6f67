-- Core schema: registry, vouchers, audit trail, webhook log, reconciliation.
-- Money is integer minor units (cents). Statuses are checked against the lifecycle.

CREATE TABLE programmes (
    code              text PRIMARY KEY CHECK (code ~ '^[a-z_]{2,32}$'),
    name              text NOT NULL,
    max_amount_cents  bigint NOT NULL CHECK (max_amount_cents > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);

INSERT INTO programmes (code, name, max_amount_cents) VALUES
    ('old_age',     'Old Age Grant',        300000),
    ('disability',  'Disability Grant',     300000),
    ('child_grant', 'Child Support Grant',  150000);

CREATE TABLE beneficiaries (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    id_number   text NOT NULL CHECK (id_number ~ '^[0-9]{11}$'),
    first_name  text NOT NULL CHECK (length(first_name) BETWEEN 1 AND 100),
    last_name   text NOT NULL CHECK (length(last_name) BETWEEN 1 AND 100),
    msisdn      text NOT NULL CHECK (msisdn ~ '^\+264[0-9]{8,9}$'),
    region      text NOT NULL,
    programme   text NOT NULL REFERENCES programmes (code),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deceased')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT beneficiaries_id_number_key UNIQUE (id_number)
);

CREATE TABLE vouchers (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    beneficiary_id     uuid NOT NULL REFERENCES beneficiaries (id),
    programme          text NOT NULL REFERENCES programmes (code),
    cycle              text NOT NULL CHECK (cycle ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    amount_cents       bigint NOT NULL CHECK (amount_cents > 0),
    currency           text NOT NULL DEFAULT 'NAD' CHECK (currency = 'NAD'),
    status             text NOT NULL DEFAULT 'issued'
                       CHECK (status IN ('issued', 'pending', 'active', 'redeemed', 'expired', 'cancelled', 'failed')),
    buffr_delivery_id  text,
    failure_reason     text,
    review_reason      text,
    issued_at          timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    status_changed_at  timestamptz NOT NULL DEFAULT now(),
    version            integer NOT NULL DEFAULT 1,
    CONSTRAINT vouchers_one_per_cycle UNIQUE (beneficiary_id, programme, cycle),
    CONSTRAINT vouchers_expiry_after_issue CHECK (expires_at > issued_at)
);

-- Reconciliation and disbursement walk only the open vouchers.
CREATE INDEX vouchers_open_idx ON vouchers (id) WHERE status IN ('issued', 'pending', 'active');
CREATE INDEX vouchers_changed_idx ON vouchers (status_changed_at);
CREATE INDEX vouchers_cycle_idx ON vouchers (programme, cycle, status);

CREATE TABLE voucher_events (
    id           bigserial PRIMARY KEY,
    voucher_id   uuid NOT NULL REFERENCES vouchers (id),
    from_status  text,
    to_status    text NOT NULL,
    source       text NOT NULL CHECK (source IN ('disburse', 'webhook', 'reconcile', 'operator')),
    reference    text,
    detail       jsonb,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX voucher_events_voucher_idx ON voucher_events (voucher_id, id);

-- The audit trail is append-only: nobody (not even the owner role by accident) edits history.
CREATE FUNCTION voucher_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'voucher_events is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER voucher_events_no_update BEFORE UPDATE OR DELETE ON voucher_events
    FOR EACH ROW EXECUTE FUNCTION voucher_events_append_only();

CREATE TABLE webhook_events (
    id               bigserial PRIMARY KEY,
    webhook_id       text NOT NULL,
    idempotency_key  text,
    type             text,
    voucher_id       uuid,
    delivery_id      text,
    payload          jsonb NOT NULL,
    occurred_at      timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    outcome          text NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'stale', 'ignored', 'rejected')),
    reason           text
);
CREATE INDEX webhook_events_webhook_idx ON webhook_events (webhook_id);
CREATE INDEX webhook_events_voucher_idx ON webhook_events (voucher_id, received_at);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

CREATE TABLE reconciliation_runs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    mode         text NOT NULL CHECK (mode IN ('incremental', 'full', 'vouchers')),
    window_start timestamptz,
    window_end   timestamptz NOT NULL DEFAULT now(),
    shard        integer NOT NULL DEFAULT 0,
    shards       integer NOT NULL DEFAULT 1 CHECK (shards >= 1 AND shard >= 0 AND shard < shards),
    dry_run      boolean NOT NULL DEFAULT false,
    options      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    cursor       uuid,
    checked      integer NOT NULL DEFAULT 0,
    matched      integer NOT NULL DEFAULT 0,
    healed       integer NOT NULL DEFAULT 0,
    flagged      integer NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX reconciliation_runs_open_idx ON reconciliation_runs (shard, shards) WHERE status = 'running';

CREATE TABLE reconciliation_records (
    id              bigserial PRIMARY KEY,
    run_id          uuid NOT NULL REFERENCES reconciliation_runs (id),
    voucher_id      uuid NOT NULL REFERENCES vouchers (id),
    ketchup_status  text NOT NULL,
    buffr_status    text,
    ketchup_amount_cents bigint,
    buffr_amount_cents   bigint,
    match           boolean NOT NULL,
    discrepancy     text,
    action          text NOT NULL CHECK (action IN ('none', 'healed', 'flagged')),
    detail          text,
    checked_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reconciliation_records_once_per_run UNIQUE (run_id, voucher_id)
);
