-- A rule hit's clip (ClipRecorded on vigil.evidence): status complete, partial (skipped
-- segments and gaps, with reasons) or no_recording. One row per rule hit; `erased` works
-- as for the stills (docs/evidence.md).
CREATE TABLE clips (
    event_id      text PRIMARY KEY,
    evidence_id   text NOT NULL,
    rule_event_id text NOT NULL,
    camera_id     text NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    status        text NOT NULL,
    reason        text NOT NULL,
    clip_ref      text,
    clip_start_at timestamptz,
    clip_end_at   timestamptz,
    size_bytes    bigint NOT NULL,
    segment_refs  text[] NOT NULL,
    skipped       jsonb NOT NULL,
    gaps          jsonb NOT NULL,
    erased        boolean NOT NULL DEFAULT false,
    log_partition integer NOT NULL,
    log_offset    bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS clips_rule_event ON clips (rule_event_id);
