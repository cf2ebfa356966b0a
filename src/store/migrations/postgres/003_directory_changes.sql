-- Change notification for the directory: every node keeps an in-memory copy of what the per-RCPT path needs
-- (mailboxes, local domains, aliases) and must learn of a change made by any node or by the CLI.
-- directory_version holds one row whose number goes up with every statement that changes users, user_addresses,
-- domains or aliases (statement-level triggers, in the changing transaction: it commits with the change), and
-- each such statement sends NOTIFY relayguard_directory (delivered at commit, to every listening node). The
-- notification is the fast path; a node also compares the version every few seconds, so a lost LISTEN connection
-- cannot leave it stale.

CREATE TABLE directory_version (
  id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
  version BIGINT NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (true, 1);

CREATE FUNCTION relayguard_directory_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE directory_version SET version = version + 1 WHERE id;
  PERFORM pg_notify('relayguard_directory', TG_TABLE_NAME);
  RETURN NULL;
END
$$;

CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
  FOR EACH STATEMENT EXECUTE FUNCTION relayguard_directory_changed();
CREATE TRIGGER user_addresses_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON user_addresses
  FOR EACH STATEMENT EXECUTE FUNCTION relayguard_directory_changed();
CREATE TRIGGER domains_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON domains
  FOR EACH STATEMENT EXECUTE FUNCTION relayguard_directory_changed();
CREATE TRIGGER aliases_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aliases
  FOR EACH STATEMENT EXECUTE FUNCTION relayguard_directory_changed();
