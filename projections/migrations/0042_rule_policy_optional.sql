-- A rule's alert policy is its own only when set (RuleConfigured v2): NULL means the
-- site-wide policy (VIGIL_ALERTS_*). Rows folded before keep the values they had.
ALTER TABLE rules ALTER COLUMN cooldown_s DROP NOT NULL;
ALTER TABLE rules ALTER COLUMN escalation_s DROP NOT NULL;
ALTER TABLE rules ALTER COLUMN max_escalation_level DROP NOT NULL;
ALTER TABLE rules ALTER COLUMN auto_resolve DROP NOT NULL;
