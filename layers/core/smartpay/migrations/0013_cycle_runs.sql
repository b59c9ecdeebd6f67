-- Cycle runs: a programme cycle disbursed server-side, four eyes before money moves.
--
-- A maker prepares a run (what would be sent: count, total, per-region totals, eligibility
-- exceptions, and a fingerprint of exactly those vouchers); a different checker approves it;
-- approval plans the run's chunks (each eligible issued voucher in exactly one chunk of one run)
-- and enqueues them on SQS; the disburse function consumes the queue.

CREATE TABLE cycle_runs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    programme           text NOT NULL REFERENCES programmes (code),
    cycle               text NOT NULL CHECK (cycle ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    idempotency_key     text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    status              text NOT NULL DEFAULT 'awaiting_approval'
                        CHECK (status IN ('awaiting_approval', 'approved', 'enqueuing', 'running', 'paused',
                                          'completed', 'expired', 'cancelled')),
    -- What the maker saw: the sha256 of the eligible issued vouchers (id, amount) and of the
    -- exceptions; approval recomputes it and is refused if the cycle changed since.
    fingerprint         text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    voucher_count       integer NOT NULL CHECK (voucher_count >= 0),
    total_amount_cents  bigint NOT NULL CHECK (total_amount_cents >= 0),
    region_totals       jsonb NOT NULL DEFAULT '[]'::jsonb,
    exceptions          jsonb NOT NULL DEFAULT '{}'::jsonb,
    chunk_size          integer NOT NULL CHECK (chunk_size BETWEEN 1 AND 1000),
    maker_principal     text NOT NULL,
    maker_key_id        text NOT NULL,
    checker_principal   text,
    checker_key_id      text,
    prepared_at         timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    approved_at         timestamptz,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cycle_runs_key_once UNIQUE (programme, cycle, idempotency_key),
    -- Four eyes, refused by the database too: the checker is another key *and* another principal.
    CONSTRAINT cycle_runs_four_eyes CHECK (
        checker_key_id IS NULL OR (checker_key_id <> maker_key_id AND checker_principal <> maker_principal)),
    CONSTRAINT cycle_runs_approved_has_checker CHECK (
        status IN ('awaiting_approval', 'expired', 'cancelled') OR
        (checker_key_id IS NOT NULL AND checker_principal IS NOT NULL AND approved_at IS NOT NULL))
);

-- At most one unfinished run per programme cycle.
CREATE UNIQUE INDEX cycle_runs_one_open ON cycle_runs (programme, cycle)
    WHERE status IN ('awaiting_approval', 'approved', 'enqueuing', 'running', 'paused');

-- A run moves forward only (paused <-> running/enqueuing is the one loop).
CREATE FUNCTION cycle_runs_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) IN (
        ('awaiting_approval', 'approved'), ('awaiting_approval', 'expired'), ('awaiting_approval', 'cancelled'),
        ('approved', 'enqueuing'), ('approved', 'paused'),
        ('enqueuing', 'running'), ('enqueuing', 'paused'),
        ('running', 'paused'), ('running', 'completed'),
        ('paused', 'enqueuing'), ('paused', 'running'), ('paused', 'cancelled')) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'cycle run % may not move from % to %', OLD.id, OLD.status, NEW.status;
END;
$$;
CREATE TRIGGER cycle_runs_forward BEFORE UPDATE OF status ON cycle_runs
    FOR EACH ROW EXECUTE FUNCTION cycle_runs_forward_only();

-- The audit trail of runs: who prepared, approved (or was refused), paused, resumed; append-only.
CREATE TABLE cycle_run_events (
    id          bigserial PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES cycle_runs (id),
    action      text NOT NULL CHECK (action IN ('prepared', 'approved', 'approval_refused', 'enqueued', 'paused',
                                                'resumed', 'completed', 'expired', 'superseded')),
    from_status text,
    to_status   text,
    principal   text NOT NULL,
    key_id      text,
    reference   text,
    detail      jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cycle_run_events_run_idx ON cycle_run_events (run_id, id);
CREATE TRIGGER cycle_run_events_no_update BEFORE UPDATE OR DELETE ON cycle_run_events
    FOR EACH ROW EXECUTE FUNCTION voucher_events_append_only();

-- The enqueue ledger. Each voucher of a run is in exactly one chunk (primary key).
CREATE TABLE cycle_run_items (
    run_id      uuid NOT NULL REFERENCES cycle_runs (id),
    voucher_id  uuid NOT NULL REFERENCES vouchers (id),
    chunk_no    integer NOT NULL CHECK (chunk_no >= 0),
    PRIMARY KEY (run_id, voucher_id)
);
CREATE INDEX cycle_run_items_chunk_idx ON cycle_run_items (run_id, chunk_no);
CREATE INDEX cycle_run_items_voucher_idx ON cycle_run_items (voucher_id);

-- One row per chunk: planned -> sending (a fresh token committed before the SQS send) ->
-- enqueued (the send succeeded) -> done (every voucher settled) or parked (paused; resume
-- plans it again). The consumer acts only on a message carrying the chunk's current token, so a
-- message re-sent after a crash between send and bookkeeping is processed once, never twice.
CREATE TABLE cycle_run_chunks (
    run_id       uuid NOT NULL REFERENCES cycle_runs (id),
    chunk_no     integer NOT NULL CHECK (chunk_no >= 0),
    size         integer NOT NULL CHECK (size BETWEEN 1 AND 1000),
    state        text NOT NULL DEFAULT 'planned'
                 CHECK (state IN ('planned', 'sending', 'enqueued', 'done', 'parked')),
    token        uuid,
    message_id   text,
    sends        integer NOT NULL DEFAULT 0,
    receives     integer NOT NULL DEFAULT 0,
    attempts     integer NOT NULL DEFAULT 0,
    retries      integer NOT NULL DEFAULT 0,
    errors       jsonb NOT NULL DEFAULT '{}'::jsonb,
    enqueued_at  timestamptz,
    done_at      timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, chunk_no)
);
CREATE INDEX cycle_run_chunks_open_idx ON cycle_run_chunks (run_id, state) WHERE state <> 'done';

-- A run's sends of the last minute (its progress rate): the consumer's transitions carry the
-- reference 'cycle-run:<run id>'.
CREATE INDEX voucher_events_cycle_run_idx ON voucher_events (reference, at)
    WHERE reference LIKE 'cycle-run:%';
