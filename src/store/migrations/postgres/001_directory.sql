-- The directory (policy/directory.ts): users, the addresses they own, database-managed local domains, aliases.
-- The same tables and meaning as the embedded SQLite database (store/sqlite-directory.ts). Text columns are
-- COLLATE "C" so that lists sort by code point, as SQLite's BINARY order does, whatever the database's locale.
-- Times are milliseconds since the epoch (BIGINT), as in SQLite.

CREATE TABLE users (
  name TEXT COLLATE "C" PRIMARY KEY,
  password_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  disabled BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE user_addresses (
  name TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
  address TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (name, address)
);
-- isMailbox(address): "which enabled user owns this address".
CREATE INDEX user_addresses_by_address ON user_addresses (address);

CREATE TABLE domains (
  domain TEXT COLLATE "C" PRIMARY KEY,
  created_at BIGINT NOT NULL
);

CREATE TABLE aliases (
  address TEXT COLLATE "C" NOT NULL,
  target TEXT COLLATE "C" NOT NULL,
  remote BOOLEAN NOT NULL DEFAULT false,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (address, target)
);
