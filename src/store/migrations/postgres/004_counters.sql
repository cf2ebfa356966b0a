-- Shared sliding-window counters (policy/counters.ts): AUTH failures per client, held across every node.
-- A key keeps the times (ms since the epoch, the caller's clock) of its most recent events, at most `limit`,
-- oldest first. Each operation is ONE statement (one round trip): relayguard_counter_hit() upserts the key's row
-- (INSERT ... ON CONFLICT DO UPDATE ... RETURNING, which locks it), so nodes racing on one key queue on its row
-- and a take never counts beyond the limit. UNLOGGED: counters are short-lived and rebuilt by the next failures;
-- keeping them out of the WAL makes an event cheap (after a PostgreSQL crash the table starts empty, which
-- forgets at most one window of failures; a standby does not have them).

CREATE UNLOGGED TABLE rate_counters (
  key TEXT COLLATE "C" PRIMARY KEY,
  events BIGINT[] NOT NULL,
  newest BIGINT NOT NULL
);
CREATE INDEX rate_counters_newest ON rate_counters (newest);

-- Counts one event at p_now for p_key when p_force, or when fewer than p_limit events are after p_now - p_window;
-- keeps the newest p_limit. Answers whether it counted and the events in the window afterwards (oldest first).
CREATE FUNCTION relayguard_counter_hit(p_key TEXT, p_now BIGINT, p_window BIGINT, p_limit INTEGER, p_force BOOLEAN,
                                       OUT counted BOOLEAN, OUT events BIGINT[])
LANGUAGE plpgsql AS $$
DECLARE
  old_events BIGINT[];
BEGIN
  INSERT INTO rate_counters AS c (key, events, newest) VALUES (p_key, '{}', p_now)
    ON CONFLICT (key) DO UPDATE SET newest = c.newest
    RETURNING c.events INTO old_events;
  SELECT COALESCE(array_agg(e ORDER BY e), '{}') INTO events FROM unnest(old_events) AS e WHERE e > p_now - p_window;
  counted := p_force OR cardinality(events) < p_limit;
  IF counted THEN
    SELECT array_agg(e ORDER BY e) INTO events FROM (SELECT e FROM unnest(events || p_now) AS e ORDER BY e DESC LIMIT p_limit) AS kept;
  END IF;
  UPDATE rate_counters SET events = relayguard_counter_hit.events,
    newest = COALESCE(relayguard_counter_hit.events[cardinality(relayguard_counter_hit.events)], p_now)
    WHERE key = p_key;
END
$$;
