-- Leases: "one invocation at a time works on X" without a session-level advisory lock.
--
-- Behind RDS Proxy a session lock (pg_advisory_lock) pins the client's connection to one server
-- connection for the rest of the session, so the proxy stops multiplexing. A lease is a row:
-- taken by one short statement, released by another, and, if its holder dies (a killed Lambda),
-- free again once it expires. Its expiry is the holder's own deadline plus a margin, so a lease
-- never lapses under a live holder.
CREATE TABLE smartpay_leases (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    holder      uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE smartpay_leases IS
    'Named leases (reconcile shard splits, cycle-run chunks): one holder until released or expired';
