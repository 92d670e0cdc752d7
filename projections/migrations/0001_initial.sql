-- Vigil read models, version 1. Runs with search_path = <schema>, public;
-- {{embedding_dim}} is replaced by VIGIL_PROJECTOR_EMBEDDING_DIM.

CREATE TABLE sites (
    site_id            text PRIMARY KEY,
    last_heartbeat_at  timestamptz
);

CREATE TABLE edges (
    edge_id                 text PRIMARY KEY,
    site_id                 text,
    version                 text,
    last_heartbeat_at       timestamptz,
    last_heartbeat_event_id text,
    interval_s              double precision,
    streams                 jsonb,
    disk_free_bytes         bigint,
    memory_rss_bytes        bigint,
    spool_backlog           bigint,
    spool_evicted           bigint,
    status                  text NOT NULL DEFAULT 'unknown',
    status_changed_at       timestamptz,
    status_event_id         text,
    offline_since           timestamptz,
    missed_heartbeats       integer
);
CREATE INDEX edges_site ON edges (site_id);

CREATE TABLE cameras (
    camera_id           text PRIMARY KEY,
    site_id             text,
    edge_id             text,
    name                text,
    timezone            text,
    enabled             boolean,
    configured_at       timestamptz,
    config_event_id     text,
    deleted_at          timestamptz,
    last_frame_at       timestamptz,
    last_frame_seq      bigint,
    last_frame_event_id text,
    stream_state        text NOT NULL DEFAULT 'unknown',
    stream_reason       text,
    stream_changed_at   timestamptz,
    stream_event_id     text
);
CREATE INDEX cameras_site ON cameras (site_id);

CREATE TABLE zones (
    zone_id         text PRIMARY KEY,
    camera_id       text NOT NULL,
    name            text NOT NULL,
    kind            text NOT NULL,
    polygon         jsonb NOT NULL,
    configured_at   timestamptz NOT NULL,
    config_event_id text NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX zones_camera ON zones (camera_id);

CREATE TABLE lines (
    line_id         text PRIMARY KEY,
    camera_id       text NOT NULL,
    name            text NOT NULL,
    a               jsonb NOT NULL,
    b               jsonb NOT NULL,
    configured_at   timestamptz NOT NULL,
    config_event_id text NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX lines_camera ON lines (camera_id);

CREATE TABLE rules (
    rule_id              text PRIMARY KEY,
    camera_id            text NOT NULL,
    rule_type            text NOT NULL,
    zone_id              text,
    line_id              text,
    severity             text NOT NULL,
    enabled              boolean NOT NULL,
    schedule             jsonb NOT NULL,
    classes              text[] NOT NULL,
    dwell_s              double precision NOT NULL,
    gap_tolerance_s      double precision NOT NULL,
    min_people           integer NOT NULL,
    clear_below          integer NOT NULL,
    window_s             double precision NOT NULL,
    direction            text,
    cooldown_s           double precision NOT NULL,
    escalation_s         double precision NOT NULL,
    max_escalation_level integer NOT NULL,
    auto_resolve         boolean NOT NULL,
    configured_at        timestamptz NOT NULL,
    config_event_id      text NOT NULL,
    deleted_at           timestamptz
);
CREATE INDEX rules_camera ON rules (camera_id);

CREATE TABLE frames (
    event_id      text PRIMARY KEY,
    camera_id     text NOT NULL,
    edge_id       text NOT NULL,
    sequence      bigint NOT NULL,
    occurred_at   timestamptz NOT NULL,
    width         integer NOT NULL,
    height        integer NOT NULL,
    motion_score  double precision NOT NULL,
    object_ref    text,
    has_jpeg      boolean NOT NULL,
    log_partition integer NOT NULL,
    log_offset    bigint NOT NULL
);
CREATE INDEX frames_camera_time ON frames (camera_id, occurred_at);

CREATE TABLE recordings (
    event_id   text PRIMARY KEY,
    camera_id  text NOT NULL,
    edge_id    text NOT NULL,
    object_ref text NOT NULL,
    start_at   timestamptz NOT NULL,
    end_at     timestamptz NOT NULL,
    size_bytes bigint NOT NULL,
    container  text NOT NULL
);
CREATE INDEX recordings_camera_time ON recordings (camera_id, start_at);

CREATE TABLE frame_analyses (
    event_id         text PRIMARY KEY,
    frame_event_id   text,
    camera_id        text NOT NULL,
    edge_id          text NOT NULL,
    frame_sequence   bigint NOT NULL,
    occurred_at      timestamptz NOT NULL,
    skipped          boolean NOT NULL,
    detection_count  integer NOT NULL,
    detector_model   text NOT NULL,
    detector_version text NOT NULL,
    embedder_model   text,
    inference_ms     double precision NOT NULL,
    frame_ref        text,
    log_partition    integer NOT NULL,
    log_offset       bigint NOT NULL
);
CREATE INDEX frame_analyses_camera_time ON frame_analyses (camera_id, occurred_at);
CREATE INDEX frame_analyses_frame ON frame_analyses (frame_event_id);

-- Partitions (detections_yYYYYmMM) are created ahead by the projector and by retention.
CREATE TABLE detections (
    detection_id   text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    event_id       text NOT NULL,
    frame_event_id text,
    camera_id      text NOT NULL,
    frame_sequence bigint NOT NULL,
    label          text NOT NULL,
    score          double precision NOT NULL,
    x1             double precision NOT NULL,
    y1             double precision NOT NULL,
    x2             double precision NOT NULL,
    y2             double precision NOT NULL,
    has_embedding  boolean NOT NULL,
    erased         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (detection_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX detections_camera_time ON detections (camera_id, occurred_at);
CREATE INDEX detections_event ON detections (event_id);

CREATE TABLE detection_daily_counts (
    day        date NOT NULL,
    camera_id  text NOT NULL,
    label      text NOT NULL,
    detections bigint NOT NULL,
    frames     bigint NOT NULL,
    PRIMARY KEY (day, camera_id, label)
);

CREATE TABLE embeddings (
    detection_id   text PRIMARY KEY,
    event_id       text NOT NULL,
    camera_id      text NOT NULL,
    frame_sequence bigint NOT NULL,
    occurred_at    timestamptz NOT NULL,
    model          text NOT NULL,
    embedding      vector({{embedding_dim}}) NOT NULL
);
CREATE INDEX embeddings_hnsw ON embeddings
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX embeddings_time ON embeddings (occurred_at);
CREATE INDEX embeddings_camera_time ON embeddings (camera_id, occurred_at);

CREATE TABLE scene_events (
    event_id       text PRIMARY KEY,
    event_type     text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    camera_id      text NOT NULL,
    zone_id        text,
    line_id        text,
    track_id       text,
    rule_id        text,
    rule_type      text,
    severity       text,
    causation_id   text,
    correlation_id text,
    payload        jsonb NOT NULL,
    log_partition  integer NOT NULL,
    log_offset     bigint NOT NULL
);
CREATE INDEX scene_events_time ON scene_events (occurred_at, event_id);
CREATE INDEX scene_events_camera_time ON scene_events (camera_id, occurred_at);
CREATE INDEX scene_events_type_time ON scene_events (event_type, occurred_at);

CREATE TABLE alerts (
    alert_id          text PRIMARY KEY,
    incident_key      text NOT NULL,
    state             text NOT NULL,
    severity          text NOT NULL,
    site_id           text,
    camera_id         text NOT NULL,
    zone_id           text,
    rule_id           text NOT NULL,
    rule_type         text NOT NULL,
    level             integer NOT NULL DEFAULT 0,
    occurrences       integer NOT NULL DEFAULT 1,
    version           integer NOT NULL,
    raised_at         timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    first_evidence_at timestamptz NOT NULL,
    last_evidence_at  timestamptz NOT NULL,
    snapshot_ref      text,
    escalated_at      timestamptz,
    acknowledged_at   timestamptz,
    acknowledged_by   text,
    ack_note          text,
    resolved_at       timestamptz,
    resolved_by       text,
    resolution        text,
    auto_resolved     boolean,
    raised_event_id   text NOT NULL,
    last_event_id     text NOT NULL
);
CREATE INDEX alerts_state_time ON alerts (state, raised_at DESC);
CREATE INDEX alerts_camera_time ON alerts (camera_id, raised_at DESC);
CREATE INDEX alerts_time ON alerts (raised_at DESC, alert_id);
CREATE INDEX alerts_incident ON alerts (incident_key);

CREATE TABLE alert_events (
    event_id       text PRIMARY KEY,
    alert_id       text NOT NULL,
    incident_key   text,
    event_type     text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    version        integer,
    causation_id   text,
    correlation_id text,
    payload        jsonb NOT NULL,
    log_partition  integer NOT NULL,
    log_offset     bigint NOT NULL
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, occurred_at);

CREATE TABLE commands (
    event_id         text PRIMARY KEY,
    command_type     text NOT NULL,
    alert_id         text NOT NULL,
    operator         text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    expected_version integer,
    payload          jsonb NOT NULL,
    log_partition    integer NOT NULL,
    log_offset       bigint NOT NULL
);
CREATE INDEX commands_alert ON commands (alert_id, occurred_at);

CREATE TABLE notifications (
    event_id       text PRIMARY KEY,
    alert_id       text NOT NULL,
    alert_event_id text NOT NULL,
    status         text NOT NULL,
    destination    text NOT NULL,
    channel        text NOT NULL,
    attempts       integer NOT NULL,
    status_code    integer,
    reason         text,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX notifications_alert ON notifications (alert_id, occurred_at);

CREATE TABLE health_events (
    event_id    text PRIMARY KEY,
    event_type  text NOT NULL,
    occurred_at timestamptz NOT NULL,
    edge_id     text,
    site_id     text,
    camera_id   text,
    worker_id   text,
    reason      text,
    payload     jsonb NOT NULL
);
CREATE INDEX health_events_time ON health_events (occurred_at, event_id);

CREATE TABLE erasures (
    event_id      text PRIMARY KEY,
    occurred_at   timestamptz NOT NULL,
    requested_by  text NOT NULL,
    reason        text NOT NULL,
    detection_ids text[] NOT NULL,
    snapshot_refs text[] NOT NULL
);

CREATE TABLE erased_detections (
    detection_id     text PRIMARY KEY,
    erasure_event_id text NOT NULL,
    erased_at        timestamptz NOT NULL
);

CREATE TABLE projector_offsets (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

CREATE TABLE projector_dead_letters (
    topic            text NOT NULL,
    partition        integer NOT NULL,
    "offset"         bigint NOT NULL,
    reason           text NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
