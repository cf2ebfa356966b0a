/**
 * /health of a node on PostgreSQL (store.postgres): 200 while the database answers, 503 (naming the failed
 * checks) while it is down, so HAProxy's `option httpchk GET /health` (docs/cluster.md) takes the node out, and
 * 200 again by itself when the database is back. Relay decisions land in the shared table relay_decisions.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type PostgresInstance } from '../../src/testing/postgres.ts';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import { Client as pgClient } from 'pg';

let pg: PostgresInstance;
let serve: ServeProcess;
let port = 0;
let token = '';
const dirs: string[] = [];

before(async () => {
  pg = await startPostgres();
  const d = mkdtempSync(join(tmpdir(), 'relayguard-webpg-'));
  dirs.push(d);
  writeFileSync(join(d, 'c.yaml'), `dataDir: ${join(d, 'data')}\nstore: { postgres: { url: "${pg.url}" } }\n`);
  const m = spawnSync(NODE, [CLI, 'db', 'migrate', '--config', join(d, 'c.yaml')], { encoding: 'utf8' });
  assert.equal(m.status, 0, m.stderr);
  // Admins live in PostgreSQL with store.postgres: added with the CLI from anywhere, seen by every node.
  const add = spawnSync(NODE, [CLI, 'admin', 'add', 'ops', '--password-stdin', '--config', join(d, 'c.yaml')], { encoding: 'utf8', input: 'long passphrase\n' });
  assert.equal(add.status, 0, add.stderr);
  const t = spawnSync(NODE, [CLI, 'admin', 'token', 'add', 'probe', '--admin', 'ops', '--config', join(d, 'c.yaml')], { encoding: 'utf8' });
  assert.equal(t.status, 0, t.stderr);
  token = t.stdout.trim();
  serve = await startServe({ config: { node: 'pg-web-1', store: { postgres: { url: pg.url, poolSize: 2 } }, dnsbl: { enabled: false }, web: { enabled: true, port: 0 } }, mailboxes: [] });
  port = Number(serve.logs.find((l) => l['msg'] === 'web listening')!['port']);
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
  await pg?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function health(): Promise<{ status: number; body: any }> {
  const r = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(10_000) });
  return { status: r.status, body: await r.json() };
}

async function until(want: number, ms: number): Promise<{ status: number; body: any }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const h = await health();
    if (h.status === want) return h;
    if (Date.now() > deadline) assert.fail(`/health stayed ${h.status}: ${JSON.stringify(h.body)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('admins and tokens in PostgreSQL: a token made by the CLI works on the node; the audit is in PostgreSQL', async () => {
  const me = await fetch(`http://127.0.0.1:${port}/api/me`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(me.status, 200);
  assert.equal(((await me.json()) as { admin: string }).admin, 'ops');
  const audit = await fetch(`http://127.0.0.1:${port}/api/audit`, { headers: { authorization: `Bearer ${token}` } });
  const entries = ((await audit.json()) as { entries: { action: string; actor: string }[] }).entries;
  assert.ok(entries.some((e) => e.action === 'admin.add' && e.actor === 'cli'), JSON.stringify(entries));
});

test('relay decisions go to the shared PostgreSQL table relay_decisions and back through /api/decisions', async () => {
  const c = await p1(serve.ports.mx);
  assert.equal((await c.cmd('MAIL FROM:<someone@example.net>')).code, 250);
  const r = await c.cmd('RCPT TO:<nobody@local.test>');
  assert.equal(r.code, 550, r.text);
  await c.cmd('QUIT');
  const deadline = Date.now() + 5000;
  let rows: any[] = [];
  while (rows.length === 0 && Date.now() < deadline) {
    const res = await fetch(`http://127.0.0.1:${port}/api/decisions?rcpt=nobody@local.test`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    rows = ((await res.json()) as { decisions: any[] }).decisions;
    if (rows.length === 0) await new Promise((res2) => setTimeout(res2, 50));
  }
  assert.equal(rows.length, 1);
  assert.deepEqual([rows[0].node, rows[0].action, rows[0].rule, rows[0].mailFrom], ['pg-web-1', 'reject', 'unknown-recipient', 'someone@example.net']);
  assert.match(rows[0].reply, /^550 5\.1\.1 /);
  const db = new pgClient(pg.url);
  await db.connect();
  try {
    const t = await db.query("SELECT node, rule FROM relay_decisions WHERE rcpt = 'nobody@local.test'");
    assert.deepEqual(t.rows, [{ node: 'pg-web-1', rule: 'unknown-recipient' }]);
  } finally {
    await db.end();
  }
});

test('/health: 200 on PostgreSQL, 503 naming the queue and directory while PostgreSQL is down, 200 again when it is back', { timeout: 90_000 }, async () => {
  const up = await health();
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.equal(up.body.node, 'pg-web-1');
  await pg.pause();
  try {
    const down = await until(503, 20_000);
    assert.equal(down.body.status, 'unavailable');
    assert.equal(down.body.checks.queue.ok, false, JSON.stringify(down.body));
    assert.equal(down.body.checks.directory.ok, false, JSON.stringify(down.body));
    assert.equal(down.body.checks.admins.ok, false);
    assert.equal(down.body.checks.listeners.ok, true);
  } finally {
    await pg.resume();
  }
  const back = await until(200, 30_000);
  assert.equal(back.body.checks.queue.ok, true);
});
