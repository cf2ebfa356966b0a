-- Admin accounts of the web service (policy/admin-accounts.ts), their API tokens (SHA-256 of the token only) and
-- the audit log of admin actions, shared by every node: an admin added on one node logs in on any, and the audit
-- trail is one. Admins are not mail users (users table): a mailbox password never opens the dashboard.

CREATE TABLE admin_users (
  name TEXT COLLATE "C" PRIMARY KEY,
  password_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE TABLE admin_tokens (
  token_hash TEXT COLLATE "C" PRIMARY KEY,
  admin TEXT COLLATE "C" NOT NULL REFERENCES admin_users (name) ON DELETE CASCADE,
  name TEXT COLLATE "C" NOT NULL,
  created_at BIGINT NOT NULL,
  last_used_at BIGINT,
  UNIQUE (admin, name)
);

CREATE TABLE admin_audit (
  id BIGSERIAL PRIMARY KEY,
  at BIGINT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  detail TEXT,
  client_ip TEXT
);
