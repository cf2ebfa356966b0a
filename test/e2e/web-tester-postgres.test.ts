/**
 * Web tester runs on PostgreSQL (store.postgres; a private PostgreSQL 15, migrated with `relayguard db migrate`):
 * a run started on node 1 against a closed fake on loopback lands in the shared table tester_runs (state, verdict,
 * the report as JSONB); node 2, on the same database, lists it, serves its report, and replays its events from the
 * stored report (one `trick` per trick, then `done` with the report's verdict). Node 1 stopped during a run marks
 * only its own run aborted.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client as PgClient } from 'pg';
import { startPostgres, type PostgresInstance } from '../../src/testing/postgres.ts';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { startFakeMta, type FakeCommand, type FakeMta } from '../../src/testing/fake-mta.ts';
import { parseEvents, type SseEvent } from '../../src/testing/sse.ts';

let pg: PostgresInstance;
let node1: ServeProcess;
let node2: ServeProcess;
let token = '';
let closed: FakeMta;
let hang: FakeMta;
const dirs: string[] = [];

const webPort = (s: ServeProcess): number => Number(s.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin')!['port']);

function api(s: ServeProcess, method: string, path: string, body?: unknown): Promise<{ status: number; body: string; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port: webPort(s), method, path,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(b); } catch { /* not JSON */ }
        resolve({ status: res.statusCode!, body: b, json });
      });
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function follow(s: ServeProcess, id: string, onData?: () => void): Promise<SseEvent[]> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: webPort(s), path: `/api/tester/runs/${id}/events`, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; onData?.(); }).on('end', () => resolve(parseEvents(b)));
    });
    req.on('error', reject);
    req.end();
  });
}

const IS_POSTMASTER = /^TO:<postmaster(@[^>]*)?>/i;
const closedRcpt = (c: FakeCommand): string => (IS_POSTMASTER.test(c.arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n');

before(async () => {
  closed = await startFakeMta({ commands: { RCPT: closedRcpt } });
  hang = await startFakeMta({ greeting: null });
  pg = await startPostgres();
  const d = mkdtempSync(join(tmpdir(), 'relayguard-webtester-pg-'));
  dirs.push(d);
  writeFileSync(join(d, 'c.yaml'), `dataDir: ${join(d, 'data')}\nstore: { postgres: { url: "${pg.url}" } }\n`);
  const m = spawnSync(NODE, [CLI, 'db', 'migrate', '--config', join(d, 'c.yaml')], { encoding: 'utf8' });
  assert.equal(m.status, 0, m.stderr);
  assert.equal(spawnSync(NODE, [CLI, 'admin', 'add', 'ops', '--password-stdin', '--config', join(d, 'c.yaml')], { encoding: 'utf8', input: 'long passphrase\n' }).status, 0);
  const t = spawnSync(NODE, [CLI, 'admin', 'token', 'add', 'probe', '--admin', 'ops', '--config', join(d, 'c.yaml')], { encoding: 'utf8' });
  assert.equal(t.status, 0, t.stderr);
  token = t.stdout.trim();
  const config = (node: string) => ({
    node, store: { postgres: { url: pg.url, poolSize: 2 } }, dnsbl: { enabled: false },
    web: { enabled: true, port: 0, tester: { allowTargets: ['127.0.0.1/32'] } },
  });
  [node1, node2] = await Promise.all([startServe({ config: config('pg-tester-1'), mailboxes: [] }), startServe({ config: config('pg-tester-2'), mailboxes: [] })]);
});

after(async () => {
  await Promise.all([node1?.stop(), node2?.stop()]);
  await Promise.all([node1?.cleanup(), node2?.cleanup()]);
  await Promise.all([closed?.close(), hang?.close()]);
  await pg?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('a run on node 1 is in tester_runs; node 2 lists it, serves its report and replays its events', async () => {
  const start = await api(node1, 'POST', '/api/tester/runs', { host: '127.0.0.1', ports: [`${closed.port}:mx`], starttls: false, timeoutSeconds: 5 });
  assert.equal(start.status, 202, start.body);
  const id = start.json.id as string;
  const live = await follow(node1, id);
  assert.equal(live.at(-1)!.event, 'done');
  const db = new PgClient(pg.url);
  await db.connect();
  try {
    const r = await db.query("SELECT node, state, verdict, exit_code, report->>'schema' AS schema, report->>'verdict' AS report_verdict FROM tester_runs WHERE id = $1", [id]);
    assert.deepEqual(r.rows, [{ node: 'pg-tester-1', state: 'done', verdict: 'CLOSED', exit_code: 0, schema: 'relayguard-tester/2', report_verdict: 'CLOSED' }]);
  } finally {
    await db.end();
  }
  const listed = await api(node2, 'GET', '/api/tester/runs');
  assert.ok(listed.json.runs.some((r: any) => r.id === id && r.node === 'pg-tester-1' && r.verdict === 'CLOSED'), listed.body);
  const report = (await api(node2, 'GET', `/api/tester/runs/${id}/report`)).json;
  assert.equal(report.verdict, 'CLOSED');
  const replay = await follow(node2, id);
  const tricks = report.targets[0].ports[0].transports.flatMap((t: any) => t.tricks);
  assert.equal(replay.filter((e) => e.event === 'trick').length, tricks.length);
  assert.equal(live.filter((e) => e.event === 'trick').length, tricks.length);
  assert.equal(replay.at(-1)!.data.verdict, 'CLOSED');
});

test('node 1 stopped during a run: its run is aborted; node 2 sees it aborted', async () => {
  const start = await api(node1, 'POST', '/api/tester/runs', { host: '127.0.0.1', ports: [`${hang.port}:mx`], timeoutSeconds: 120 });
  assert.equal(start.status, 202, start.body);
  const id = start.json.id as string;
  // node 2 follows a run of node 1 (polling the shared table), node 1 is stopped.
  let connected!: () => void;
  const streaming = new Promise<void>((resolve) => { connected = resolve; });
  const remote = follow(node2, id, () => connected());
  await Promise.all([hang.session(0), streaming]);
  assert.equal(await node1.stop(), 0, node1.stderr());
  const events = await remote;
  assert.equal(events[0]!.event, 'run');
  assert.equal(events.at(-1)!.event, 'done');
  assert.equal(events.at(-1)!.data.state, 'aborted');
  const r = await api(node2, 'GET', `/api/tester/runs/${id}`);
  assert.equal(r.json.state, 'aborted');
});
