-- Reconciliation: what a run needs beyond the core schema.

-- Counters the reports and the resume logic read, and how long the run has worked so far
-- (summed over its invocations).
ALTER TABLE reconciliation_runs
    ADD COLUMN unavailable  integer NOT NULL DEFAULT 0,
    ADD COLUMN redisbursed  integer NOT NULL DEFAULT 0,
    ADD COLUMN invocations  integer NOT NULL DEFAULT 0,
    ADD COLUMN duration_ms  bigint  NOT NULL DEFAULT 0;

-- A voucher pending and unknown at Buffr may be re-sent (same idempotency key) when a run enables it.
ALTER TABLE reconciliation_records DROP CONSTRAINT reconciliation_records_action_check;
ALTER TABLE reconciliation_records
    ADD CONSTRAINT reconciliation_records_action_check
    CHECK (action IN ('none', 'healed', 'flagged', 'redisbursed'));

-- At most one unfinished run per shard split (and dry-run flag): the next invocation resumes it.
-- Runs over an explicit list of voucher ids stand alone.
CREATE UNIQUE INDEX reconciliation_runs_one_running
    ON reconciliation_runs (shard, shards, dry_run) WHERE status = 'running' AND mode <> 'vouchers';

-- The latest run of a shard split (incremental windows start where the last one ended).
CREATE INDEX reconciliation_runs_latest_idx ON reconciliation_runs (shards, shard, window_end DESC)
    WHERE status = 'completed';

-- Reports per class / per cycle, and "what is still flagged".
CREATE INDEX reconciliation_records_run_class_idx ON reconciliation_records (run_id, discrepancy, action);
CREATE INDEX reconciliation_records_voucher_idx ON reconciliation_records (voucher_id, checked_at DESC);

-- Which shard a voucher belongs to out of ``shards``: a stable hash of its id (first 32 bits
-- of md5 of the canonical text form), computed only here, so shards 0..k-1 partition the
-- vouchers exactly, whatever their ids look like.
CREATE FUNCTION smartpay_shard(voucher_id uuid, shards integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (('x' || left(md5(voucher_id::text), 8))::bit(32)::bigint % shards)::integer;
