/**
 * `relayguard serve` itself on PostgreSQL (store.postgres): the shipped daemon, not a harness. The schema comes from
 * `relayguard db migrate`, the domain and the mailbox from `relayguard domain add` / `user add` (they write to
 * PostgreSQL), and serve must then:
 *   - accept mail for that mailbox from an untrusted address (127.0.0.2) with the message in PostgreSQL's queue,
 *     received_by = the node, and refuse an unknown user (550 5.1.1);
 *   - refuse every relay attempt from the stranger (554 5.7.1) and queue nothing for a non-local domain;
 *   - refuse to start on an unmigrated database (ERR_STORE_SCHEMA_OLD, exit 2), never falling back to SQLite.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { startPostgres, type PostgresInstance } from '../../src/testing/postgres.ts';
import { CLI, NODE, startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { RawSmtpClient } from '../../src/testing/smtp-client.ts';

let pg: PostgresInstance;
let serve: ServeProcess | undefined;
const dirs: string[] = [];

function run(args: string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out, err }));
    child.stdin.end(input ?? '');
  });
}

function configFile(url: string): string {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-pgcli-'));
  dirs.push(d);
  const f = join(d, 'relayguard.yaml');
  writeFileSync(f, `dataDir: ${join(d, 'data')}\nstore: { postgres: { url: "${url}" } }\nlisteners: []\ndnsbl: { enabled: false }\n`);
  return f;
}

async function stranger(port: number): Promise<RawSmtpClient> {
  const c = await RawSmtpClient.connect(port, { localAddress: '127.0.0.2' });
  const greet = await c.readReply();
  assert.equal(greet.code, 220);
  c.write('EHLO stranger.test\r\n');
  assert.equal((await c.readReply()).code, 250);
  return c;
}

before(async () => {
  pg = await startPostgres();
});

after(async () => {
  await serve?.stop();
  await pg?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('serve refuses an unmigrated PostgreSQL with ERR_STORE_SCHEMA_OLD (exit 2), never falling back to SQLite', async () => {
  const url = await pg.createDatabase('unmigrated');
  const r = await run(['serve', '--config', configFile(url)]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /ERR_STORE_SCHEMA_OLD/);
  assert.match(r.err, /relayguard db migrate/);
});

test('serve on PostgreSQL: the CLI\'s domain and mailbox receive mail from a stranger, relaying is refused, nothing foreign is queued', async () => {
  const cli = configFile(pg.url);
  let r = await run(['db', 'migrate', '--config', cli]);
  assert.equal(r.code, 0, r.err);
  r = await run(['domain', 'add', 'pg.test', '--config', cli]);
  assert.equal(r.code, 0, r.err);
  r = await run(['user', 'add', 'alice@pg.test', '--password-stdin', '--config', cli], 'correct horse battery staple\n');
  assert.equal(r.code, 0, r.err);

  serve = await startServe({
    mailboxes: [],
    config: { node: 'pg-node-1', localDomains: [], trustedNetworks: [], store: { postgres: { url: pg.url, poolSize: 4 } } },
  });

  const c = await stranger(serve.ports.mx);
  try {
    c.write('MAIL FROM:<someone@example.org>\r\n');
    assert.equal((await c.readReply()).code, 250);
    c.write('RCPT TO:<alice@pg.test>\r\n');
    assert.equal((await c.readReply()).code, 250);
    c.write('RCPT TO:<nobody@pg.test>\r\n');
    const unknown = await c.readReply();
    assert.equal(unknown.code, 550);
    assert.equal(unknown.enhanced, '5.1.1');
    for (const trick of ['victim@example.net', 'victim%example.net@pg.test', '@pg.test:victim@example.net', 'victim@example.net@pg.test', '"victim@example.net"@pg.test']) {
      c.write(`RCPT TO:<${trick}>\r\n`);
      const refused = await c.readReply();
      assert.equal(Math.floor(refused.code / 100), 5, `${trick}: ${refused.code} ${refused.text}`);
    }
    c.write('DATA\r\n');
    assert.equal((await c.readReply()).code, 354);
    c.write('Message-ID: <pg-serve-1@example.org>\r\nSubject: hello\r\n\r\nbody\r\n.\r\n');
    const done = await c.readReply(15_000);
    assert.equal(done.code, 250, done.text);
    c.write('QUIT\r\n');
  } finally {
    c.close();
  }

  const db = new Client(pg.url);
  await db.connect();
  try {
    const msgs = await db.query('SELECT m.queue_id, m.received_by, m.client_ip, array_agg(r.address ORDER BY r.idx) AS rcpts FROM queue_messages m JOIN queue_recipients r USING (queue_id) GROUP BY m.queue_id');
    assert.equal(msgs.rows.length, 1);
    assert.equal(msgs.rows[0].received_by, 'pg-node-1');
    assert.equal(msgs.rows[0].client_ip, '127.0.0.2');
    assert.deepEqual(msgs.rows[0].rcpts, ['alice@pg.test']);
    const foreign = await db.query("SELECT count(*)::int AS n FROM queue_recipients WHERE domain <> 'pg.test'");
    assert.equal(foreign.rows[0].n, 0, 'nothing for a non-local domain was queued from a stranger');
  } finally {
    await db.end();
  }
  // The CLI (another process) sees the same queue, with the node.
  r = await run(['queue', 'list', '--json', '--config', cli]);
  assert.equal(r.code, 0, r.err);
  const rows = r.out.trim().split('\n').map((l) => JSON.parse(l) as { node?: string });
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!.node, 'pg-node-1');
  // Every relay decision about the stranger's foreign recipients was a refusal.
  const decisions = serve.logs.filter((l) => l['msg'] === 'relay decision');
  assert.ok(decisions.length >= 1);
  assert.ok(decisions.every((l) => l['action'] !== 'relay'), JSON.stringify(decisions));
});
