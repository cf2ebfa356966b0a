-- The mail queue shared by every node (store/postgres-queue.ts): the same columns and meaning as the embedded
-- SQLite index (queue/index-db.ts), plus the node that received each message and the lease of the node delivering
-- it. Times of the queue's schedule are milliseconds since the epoch (BIGINT) of the nodes' clocks, as in SQLite;
-- lease times are the database's clock (one clock for every node).

-- One row per running node incarnation (a process's runner; a new one after its heartbeat expired). A node renews
-- heartbeat_at every leaseTime/3; a message leased by an incarnation whose heartbeat is older than the lease time
-- (or whose row is gone) may be taken over by any node.
CREATE TABLE queue_nodes (
  incarnation TEXT COLLATE "C" PRIMARY KEY,
  node TEXT NOT NULL,
  started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE queue_messages (
  queue_id TEXT COLLATE "C" PRIMARY KEY,
  received_at BIGINT NOT NULL,
  sender TEXT COLLATE "C" NOT NULL,
  size BIGINT NOT NULL,
  message_id TEXT COLLATE "C",
  client_ip TEXT NOT NULL,
  helo TEXT,
  auth_user TEXT,
  listener TEXT NOT NULL,
  mail_params TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'hold', 'corrupt')),
  state_reason TEXT,
  updated_at BIGINT NOT NULL,
  next_run_at BIGINT,
  delay_warned_at BIGINT,
  -- The node that received the message (config `node`).
  received_by TEXT NOT NULL,
  -- The delivery lease: the incarnation (queue_nodes) and node holding it, or NULL.
  lease_owner TEXT COLLATE "C",
  lease_node TEXT
);
CREATE INDEX queue_messages_run ON queue_messages (state, next_run_at, queue_id);
CREATE INDEX queue_messages_received_at ON queue_messages (received_at, queue_id);
CREATE INDEX queue_messages_sender ON queue_messages (sender);
CREATE INDEX queue_messages_message_id ON queue_messages (message_id);
CREATE INDEX queue_messages_lease ON queue_messages (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE queue_recipients (
  queue_id TEXT COLLATE "C" NOT NULL REFERENCES queue_messages (queue_id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  address TEXT COLLATE "C" NOT NULL,
  domain TEXT COLLATE "C" NOT NULL,
  params TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'deferred', 'delivered', 'bounced')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at BIGINT,
  last_attempt_at BIGINT,
  last_reply TEXT,
  updated_at BIGINT NOT NULL,
  reply TEXT,
  dsn_status TEXT,
  remote_mta TEXT,
  diagnostic TEXT,
  notified_at BIGINT,
  PRIMARY KEY (queue_id, idx)
);
CREATE INDEX queue_recipients_domain ON queue_recipients (domain);
CREATE INDEX queue_recipients_state ON queue_recipients (state);

-- Bodies as received, in their own table (the envelope rows stay small for the runner's scans). STORAGE EXTERNAL:
-- never compressed (mail is mostly compressed or short; pglz would cost CPU on every insert); toast_tuple_target
-- 8160: a body up to ~8 KB stays in the table's own page, so inserting and deleting it touches no TOAST table
-- (larger ones go out of line).
CREATE TABLE queue_bodies (
  queue_id TEXT COLLATE "C" PRIMARY KEY REFERENCES queue_messages (queue_id) ON DELETE CASCADE,
  data BYTEA NOT NULL
) WITH (toast_tuple_target = 8160);
ALTER TABLE queue_bodies ALTER COLUMN data SET STORAGE EXTERNAL;
