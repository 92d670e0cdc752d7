-- Indexes the operator API needs (api/), kept out of 0001 so existing schemas gain them.

-- Alert listing pages by (raised_at, alert_id) DESC with a row-comparison cursor; the
-- mixed-direction alerts_time (raised_at DESC, alert_id) cannot serve that order, so
-- every page was a top-N sort over all alerts. A plain ascending index is scanned
-- backwards.
CREATE INDEX IF NOT EXISTS alerts_time_id ON alerts (raised_at, alert_id);

-- The live stream polls alert_events past a per-partition log position every 200 ms and
-- replays from a client's Last-Event-ID position: both are ranges of (partition, offset).
CREATE INDEX IF NOT EXISTS alert_events_log_position ON alert_events (log_partition, log_offset);
