-- A delivery that changes nothing (duplicate, stale, ignored, rejected) is logged once per
-- webhook id and outcome: Buffr's retries over days and operator replays then add no rows.
-- Applied rows are not constrained here: the state machine lets each change happen only once.
CREATE UNIQUE INDEX webhook_events_once_per_outcome
    ON webhook_events (webhook_id, outcome) WHERE outcome <> 'applied';
