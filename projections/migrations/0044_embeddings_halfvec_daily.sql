-- Appearance embeddings at fleet scale (docs/architecture.md, "Appearance embeddings"):
-- half precision (halfvec, pgvector >= 0.7) and one partition per UTC day, each with its
-- own HNSW graph (halfvec_cosine_ops, m = 16, ef_construction = 64). Retention drops whole
-- days instead of deleting rows out of one large graph, and a time-window search reads
-- only the days it covers. Existing `vector` rows are converted, every one of them: a
-- partition is created for each day they hold (later days are created ahead, or on
-- demand by the projector's writer).
--
-- The primary key gains occurred_at (a partitioned table's unique keys must contain the
-- partition key); an embedding's time is that of its detection, so the pair is as unique
-- as the id was.
DROP INDEX IF EXISTS embeddings_hnsw;
DROP INDEX IF EXISTS embeddings_time;
DROP INDEX IF EXISTS embeddings_camera_time;
ALTER TABLE embeddings RENAME TO embeddings_vector_old;
ALTER TABLE embeddings_vector_old DROP CONSTRAINT embeddings_pkey;

CREATE TABLE embeddings (
    detection_id   text NOT NULL,
    event_id       text NOT NULL,
    camera_id      text NOT NULL,
    frame_sequence bigint NOT NULL,
    occurred_at    timestamptz NOT NULL,
    model          text NOT NULL,
    embedding      halfvec({{embedding_dim}}) NOT NULL,
    log_partition  integer,
    log_offset     bigint,
    PRIMARY KEY (detection_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date
             FROM embeddings_vector_old ORDER BY 1 LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF embeddings FOR VALUES FROM (%L) TO (%L)',
                       'embeddings_d' || to_char(d, 'YYYYMMDD'),
                       d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
    END LOOP;
END $$;

INSERT INTO embeddings (detection_id, event_id, camera_id, frame_sequence, occurred_at,
                        model, embedding, log_partition, log_offset)
SELECT detection_id, event_id, camera_id, frame_sequence, occurred_at, model,
       embedding::halfvec({{embedding_dim}}), log_partition, log_offset
FROM embeddings_vector_old;
DROP TABLE embeddings_vector_old;

-- Declared on the parent: every partition, also those created later, gets its own.
CREATE INDEX embeddings_hnsw ON embeddings
    USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX embeddings_time ON embeddings (occurred_at);
CREATE INDEX embeddings_camera_time ON embeddings (camera_id, occurred_at);
