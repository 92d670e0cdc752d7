-- The access record (api/access.py, projections/access_log.py): who read personal data or
-- changed what, one row per AccessRecorded event of the vigil.access topic, in log order.
-- Each row is chained to the previous one: hash = sha256(prev_hash || content_hash), and
-- content_hash covers every recorded field, so `vigil audit verify-access` finds a row
-- that was edited (content no longer matches), deleted (seq gap, broken link) or added
-- (not on the log).
CREATE TABLE access_log (
    seq            bigint PRIMARY KEY,
    event_id       text NOT NULL UNIQUE,
    occurred_at    timestamptz NOT NULL,
    actor_kind     text NOT NULL,
    actor_id       text NOT NULL,
    actor_name     text NOT NULL,
    role           text NOT NULL,
    method         text NOT NULL,
    route          text NOT NULL,
    operation      text NOT NULL,
    resource_ids   text[] NOT NULL,
    client_address text NOT NULL,
    status         integer NOT NULL,
    outcome        text NOT NULL,
    content_hash   text NOT NULL,
    prev_hash      text NOT NULL,
    hash           text NOT NULL,
    log_partition  integer NOT NULL,
    log_offset     bigint NOT NULL
);
CREATE INDEX access_log_time ON access_log (occurred_at, seq);
CREATE INDEX access_log_actor ON access_log (actor_id, seq);

-- Append-only for everyone who goes through the normal paths: an UPDATE or DELETE is an
-- error. (Whoever can disable the trigger can still edit; the hash chain catches that.)
CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only();
