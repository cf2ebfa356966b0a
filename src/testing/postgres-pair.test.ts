/**
 * The primary + synchronous standby pair works as the cluster fault tests need it: replication is synchronous
 * (pg_stat_replication says so; a row committed with remote_apply is visible on the standby the moment COMMIT
 * returns; with synchronous_commit = on the standby has received the commit's WAL when COMMIT returns), the
 * primary killed with SIGKILL leaves no process behind, the promoted standby has every committed row and takes
 * writes, and stop() leaves nothing running.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import pg from 'pg';
import { startPostgresPair, STANDBY_NAME } from './postgres-pair.ts';

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  return c;
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

test('postgres pair: synchronous standby, primary killed -9, standby promoted: every committed row is there, writes work', { timeout: 180_000 }, async () => {
  const pair = await startPostgresPair();
  try {
    const p = await client(pair.primary.url);
    const s = await client(pair.standby.url);
    try {
      const rep = await p.query<{ application_name: string; sync_state: string; state: string }>('SELECT application_name, sync_state, state FROM pg_stat_replication');
      assert.deepEqual(rep.rows, [{ application_name: STANDBY_NAME, sync_state: 'sync', state: 'streaming' }]);
      assert.equal((await s.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r, true);

      await p.query('CREATE TABLE accepted (id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())');
      // remote_apply: visible on the standby as soon as COMMIT returns, with no waiting.
      await p.query("SET synchronous_commit = 'remote_apply'");
      for (let i = 0; i < 20; i++) {
        await p.query('INSERT INTO accepted (id) VALUES ($1)', [`apply-${i}`]);
        const seen = await s.query('SELECT 1 FROM accepted WHERE id = $1', [`apply-${i}`]);
        assert.equal(seen.rowCount, 1, `apply-${i} is not on the standby at commit time`);
      }
      // Synchronous means COMMIT waits for the standby: with replay paused there, a remote_apply commit hangs
      // until replay resumes.
      await s.query('SELECT pg_wal_replay_pause()');
      let returned = false;
      const blocked = p.query('INSERT INTO accepted (id) VALUES ($1)', ['blocked']).then(() => { returned = true; });
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(returned, false, 'COMMIT returned while the standby had not applied it');
      await s.query('SELECT pg_wal_replay_resume()');
      await blocked;
      assert.equal((await s.query('SELECT 1 FROM accepted WHERE id = $1', ['blocked'])).rowCount, 1);
      // on (the queue's setting): the standby has received (and flushed) the commit's WAL when COMMIT returns.
      await p.query("SET synchronous_commit = 'on'");
      for (let i = 0; i < 19; i++) {
        await p.query('BEGIN');
        await p.query('INSERT INTO accepted (id) VALUES ($1)', [`on-${i}`]);
        const before = (await p.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0]!.l;
        await p.query('COMMIT');
        const got = await s.query<{ ok: boolean }>('SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn AS ok', [before]);
        assert.equal(got.rows[0]!.ok, true, `on-${i}: the standby had not received the WAL when COMMIT returned`);
      }
    } finally {
      await p.end().catch(() => undefined);
      await s.end().catch(() => undefined);
    }

    // The machine dies: SIGKILL to the primary; nothing of it stays.
    const primaryPid = pair.primary.pid;
    await pair.killPrimary();
    assert.equal(alive(primaryPid), false);
    await assert.rejects(client(pair.primary.url), 'the primary still answers');

    await pair.promoteStandby();
    const n = await client(pair.standby.url);
    try {
      const rows = await n.query<{ id: string }>('SELECT id FROM accepted ORDER BY id');
      assert.equal(rows.rowCount, 40, 'a row committed on the primary is missing on the promoted standby');
      await n.query('INSERT INTO accepted (id) VALUES ($1)', ['after-promotion']);
      assert.equal((await n.query('SELECT 1 FROM accepted WHERE id = $1', ['after-promotion'])).rowCount, 1);
    } finally {
      await n.end().catch(() => undefined);
    }
  } finally {
    const standbyPid = pair.standby.pid;
    await pair.stop();
    assert.equal(alive(standbyPid), false, 'the standby survived stop()');
    assert.equal(existsSync(pair.baseDir), false, 'the temp dir is left behind');
  }
});
