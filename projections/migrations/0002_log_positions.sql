-- The source log position (partition, offset) of every append-only row, also for the
-- tables that had none: `replay --verify` on a long-lived schema must tell rows whose
-- source events Kafka retention has deleted (offset below the partition's log-start
-- offset, so absent from any rebuild) from real differences. NULL for rows projected
-- before this migration (they are compared as before).
ALTER TABLE detections ADD COLUMN log_partition integer, ADD COLUMN log_offset bigint;
ALTER TABLE embeddings ADD COLUMN log_partition integer, ADD COLUMN log_offset bigint;
ALTER TABLE recordings ADD COLUMN log_partition integer, ADD COLUMN log_offset bigint;
ALTER TABLE notifications ADD COLUMN log_partition integer, ADD COLUMN log_offset bigint;
ALTER TABLE health_events ADD COLUMN log_partition integer, ADD COLUMN log_offset bigint;
