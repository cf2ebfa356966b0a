/**
 * Users and local domains through the web API of a `relayguard serve` on PostgreSQL (store.postgres): the change
 * lands in the shared tables (what every node reads), a user added through the API can AUTH at once on the same
 * serve, a removed domain is refused at the next RCPT, and the answers validate against the OpenAPI document.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client as pgClient } from 'pg';
import { answerProblems, type RecordedAnswer } from '../../src/testing/openapi.ts';
import { startPostgres, type PostgresInstance } from '../../src/testing/postgres.ts';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { p1 } from '../../src/testing/smtp-client.ts';

let pg: PostgresInstance;
let serve: ServeProcess;
let port = 0;
let token = '';
const dirs: string[] = [];
const recorded: RecordedAnswer[] = [];

before(async () => {
  pg = await startPostgres();
  const d = mkdtempSync(join(tmpdir(), 'relayguard-webdirpg-'));
  dirs.push(d);
  const cfg = join(d, 'c.yaml');
  writeFileSync(cfg, `dataDir: ${join(d, 'data')}\nstore: { postgres: { url: "${pg.url}" } }\n`);
  for (const args of [['db', 'migrate'], ['admin', 'add', 'ops', '--password-stdin']]) {
    const r = spawnSync(NODE, [CLI, ...args, '--config', cfg], { encoding: 'utf8', input: 'long passphrase\n' });
    assert.equal(r.status, 0, r.stderr);
  }
  const t = spawnSync(NODE, [CLI, 'admin', 'token', 'add', 'probe', '--admin', 'ops', '--config', cfg], { encoding: 'utf8' });
  assert.equal(t.status, 0, t.stderr);
  token = t.stdout.trim();
  serve = await startServe({
    config: { node: 'pg-dir-1', trustedNetworks: ['127.0.0.1/32'], store: { postgres: { url: pg.url, poolSize: 2 } }, dnsbl: { enabled: false }, web: { enabled: true, port: 0 } },
    mailboxes: [],
  });
  port = Number(serve.logs.find((l) => l['msg'] === 'web listening')!['port']);
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
  await pg?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, {
    method, signal: AbortSignal.timeout(10_000),
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = await r.json();
  recorded.push({ method, path, status: r.status, body: json });
  return { status: r.status, json };
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

test('PostgreSQL: a domain and a user added through the API are in the shared tables and AUTH at once; a removed domain is refused at RCPT', async () => {
  assert.equal((await api('POST', '/api/domains', { domain: 'pg.test' })).status, 200);
  const add = await api('POST', '/api/users', { name: 'ann@pg.test', password: 'pg password 1' });
  assert.equal(add.status, 200, JSON.stringify(add.json));

  const db = new pgClient(pg.url);
  await db.connect();
  try {
    assert.equal((await db.query("SELECT count(*)::int AS n FROM users WHERE name = 'ann@pg.test'")).rows[0].n, 1);
    const hash = (await db.query("SELECT password_hash FROM users WHERE name = 'ann@pg.test'")).rows[0].password_hash as string;
    assert.doesNotMatch(hash, /pg password/);
  } finally {
    await db.end();
  }

  const c = await p1(serve.ports.submissions, { tls: true, localAddress: '127.0.0.31' });
  try {
    assert.equal((await c.cmd(`AUTH PLAIN ${b64('\0ann@pg.test\0pg password 1')}`)).code, 235);
  } finally {
    c.close();
  }

  const rcpt = async (): Promise<number> => {
    const m = await p1(serve.ports.mx, { localAddress: '127.0.0.2' });
    try {
      assert.equal((await m.cmd('MAIL FROM:<someone@example.net>')).code, 250);
      return (await m.cmd('RCPT TO:<ann@pg.test>')).code;
    } finally {
      m.close();
    }
  };
  assert.equal(await rcpt(), 250);
  assert.deepEqual((await api('GET', '/api/domains')).json.database, ['pg.test']);
  assert.equal((await api('DELETE', '/api/domains/pg.test')).status, 200);
  assert.equal(await rcpt(), 554);

  const users = await api('GET', '/api/users?search=ann');
  assert.deepEqual(users.json.users.map((u: { name: string }) => u.name), ['ann@pg.test']);
  const audit = await api('GET', '/api/audit?limit=20');
  assert.ok(audit.json.entries.some((e: { action: string; actor: string }) => e.action === 'user.add' && e.actor === 'ops (token probe)'));
  const doc = await api('GET', '/api/openapi.json');
  assert.deepEqual(answerProblems(doc.json, recorded), []);
});
