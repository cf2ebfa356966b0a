-- The self-audit history (src/audit, store/postgres-audit.ts): one row per audit report of every node, the report
-- itself as JSON (relayguard-audit/1); the newest reports of each node are kept (audit.keep), older ones deleted
-- when a report is saved.

CREATE TABLE audit_reports (
  id BIGSERIAL PRIMARY KEY,
  node TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  exit_code SMALLINT NOT NULL,
  status TEXT NOT NULL,
  report JSONB NOT NULL
);

CREATE INDEX audit_reports_node ON audit_reports (node, id);
