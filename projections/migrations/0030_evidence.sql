-- The still evidence of every rule hit (EvidenceCaptured on vigil.evidence): object refs
-- only, the bytes are in the object store. One row per rule hit (rule_event_id), found
-- from an alert through its AlertRaised/AlertRepeated causation ids. `erased` is set by an
-- AppearanceErased naming one of the refs, and also at insert when such an erasure is
-- already projected (the privacy topic is read first on a rebuild): erased evidence never
-- comes back by replay (docs/evidence.md).
CREATE TABLE evidence (
    event_id                  text PRIMARY KEY,
    rule_event_id             text NOT NULL,
    camera_id                 text NOT NULL,
    rule_id                   text NOT NULL,
    rule_type                 text NOT NULL,
    zone_id                   text,
    line_id                   text,
    frame_event_id            text NOT NULL,
    analysis_event_id         text NOT NULL,
    occurred_at               timestamptz NOT NULL,
    frame_at                  timestamptz NOT NULL,
    width                     integer NOT NULL,
    height                    integer NOT NULL,
    snapshot_ref              text NOT NULL,
    annotated_ref             text NOT NULL,
    thumbnail_ref             text NOT NULL,
    track_ids                 text[] NOT NULL,
    detection_ids             text[] NOT NULL,
    highlighted_detection_ids text[] NOT NULL,
    erased                    boolean NOT NULL DEFAULT false,
    log_partition             integer NOT NULL,
    log_offset                bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_rule_event ON evidence (rule_event_id);
CREATE INDEX IF NOT EXISTS evidence_camera_time ON evidence (camera_id, occurred_at);
CREATE INDEX IF NOT EXISTS evidence_detections ON evidence USING gin (detection_ids);
