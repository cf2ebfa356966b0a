-- Relay decisions as data (policy/decisions.ts): one row per recipient decision of every node ('relay decision'
-- log events), written in batches off the SMTP path, pruned by age and row count (web.decisionRetention).
-- Addresses are stored lower-cased without angle brackets; newest first by id.

CREATE TABLE relay_decisions (
  id BIGSERIAL PRIMARY KEY,
  at BIGINT NOT NULL,
  node TEXT NOT NULL,
  session_id TEXT,
  client_ip TEXT COLLATE "C" NOT NULL,
  listener TEXT,
  helo TEXT,
  "user" TEXT,
  mail_from TEXT COLLATE "C",
  rcpt TEXT COLLATE "C" NOT NULL,
  action TEXT NOT NULL,
  rule TEXT NOT NULL,
  reason TEXT,
  reply TEXT
);

CREATE INDEX relay_decisions_at ON relay_decisions (at);
CREATE INDEX relay_decisions_client ON relay_decisions (client_ip, id);
CREATE INDEX relay_decisions_rcpt ON relay_decisions (rcpt, id);
CREATE INDEX relay_decisions_sender ON relay_decisions (mail_from, id);
