-- Notification routes (RouteConfigured / EntityDeleted route on vigil.config), so the API
-- can show them (GET /api/v1/routes). The notifier still folds them from the topic itself;
-- this is the read model's copy (docs/notifications.md).
CREATE TABLE routes (
    route_id        text PRIMARY KEY,
    site_id         text,
    cameras         text[] NOT NULL,
    rule_types      text[] NOT NULL,
    severities      text[] NOT NULL,
    event_types     text[] NOT NULL,
    levels          integer[] NOT NULL,
    channels        text[] NOT NULL,
    recipients      text[] NOT NULL,
    quiet_start     text,
    quiet_end       text,
    timezone        text,
    enabled         boolean NOT NULL,
    configured_at   timestamptz NOT NULL,
    config_event_id text NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX routes_site ON routes (site_id);
-- Routes configured before this table existed were folded into nothing: forget the
-- stored position on the (compacted, small) config topic so the projector reads it again
-- from its start. Every config fold is an upsert guarded by (configured_at, event id), so
-- the second reading changes nothing but the new table.
DELETE FROM projector_offsets WHERE topic ~ '[.]config$';
