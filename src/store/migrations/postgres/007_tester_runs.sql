-- Tester runs started from the web (policy/tester-runs.ts, web/tester.ts): one row per run of every node, with its
-- state (running -> done | failed | aborted), verdict and report (the `relayguard test --json` document).
-- A node marks its own running runs aborted when it stops or starts again after a crash.

CREATE TABLE tester_runs (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT COLLATE "C" NOT NULL UNIQUE,
  node TEXT NOT NULL,
  actor TEXT NOT NULL,
  target TEXT NOT NULL,
  options JSONB NOT NULL,
  addresses JSONB NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'aborted')),
  verdict TEXT,
  exit_code INTEGER,
  error TEXT,
  report JSONB,
  created_at BIGINT NOT NULL,
  finished_at BIGINT
);

CREATE INDEX tester_runs_state ON tester_runs (node, state);
