/**
 * The web tester module inside a real web service (startWeb, real HTTP on loopback) with the real engine
 * (src/cli/tester-engine.ts over src/tester) and scripted fake SMTP servers on 127.0.0.1; names resolve through a
 * fake resolver (no DNS query leaves the machine).
 *   - web "guarded" (no web.tester.allowTargets): every loopback, private, link-local, CGNAT, multicast and
 *     reserved target is refused with 400 ERR_TESTER_TARGET_FORBIDDEN naming the address, names included (every
 *     address they resolve to is checked); nothing is recorded and no fake sees a connection.
 *   - web "lab" (allowTargets 127.0.0.0/8, maxConcurrent 1): a run against a closed fake; its event stream has one
 *     `trick` event per trick of the report before `done`, whose verdict is the report's; a late client gets the
 *     same events replayed; Last-Event-ID resumes; a second run while one goes is 429 ERR_TESTER_BUSY; stopping the
 *     web service during a run ends the stream with `done` aborted and records the run aborted.
 */
import { queueCounts } from '../queue/index.ts';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { DatabaseSync } from 'node:sqlite';
import { MemoryLogger } from '../core/log.ts';
import { AdminAccounts } from '../policy/admin-accounts.ts';
import type { AdminResult } from '../queue/index.ts';
import { SqliteAdminStore } from '../store/sqlite-admin.ts';
import { SqliteTesterRunStore } from '../store/sqlite-tester-runs.ts';
import { createTesterEngine } from '../cli/tester-engine.ts';
import { startFakeMta, type FakeCommand, type FakeMta } from '../testing/fake-mta.ts';
import type { TargetResolver } from '../tester/index.ts';
import { RelayMetrics } from './metrics.ts';
import { startWeb, type RunningWeb } from './server.ts';
import { testerModule } from './tester.ts';
import { parseEvents } from '../testing/sse.ts';

const none: AdminResult = { changed: [], unchanged: [], missing: [] };
const IS_POSTMASTER = /^TO:<postmaster(@[^>]*)?>/i;
const closedRcpt = (c: FakeCommand): string => (IS_POSTMASTER.test(c.arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n');

/** Names of the fake DNS: nothing else resolves (and no query leaves the machine). */
const RESOLVER: TargetResolver = {
  resolveMx: async (name) => { throw Object.assign(new Error(`no MX for ${name}`), { code: 'ENODATA' }); },
  lookup: async (name) => {
    const table: Record<string, { address: string; family: number }[]> = {
      'loop.example': [{ address: '127.0.0.1', family: 4 }],
      'mixed.example': [{ address: '127.0.0.1', family: 4 }, { address: '10.0.0.5', family: 4 }],
      'v6loop.example': [{ address: '::1', family: 6 }],
    };
    const a = table[name];
    if (!a) throw Object.assign(new Error(`ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
    return a;
  },
};

interface Web { web: RunningWeb; token: string; metrics: RelayMetrics; admins: SqliteAdminStore; runs: SqliteTesterRunStore; close(): Promise<void> }

async function startTesterWeb(allowTargets: string[], maxConcurrent: number): Promise<Web> {
  const admins = new SqliteAdminStore(':memory:');
  const accounts = new AdminAccounts(admins, { scrypt: { N: 1024, r: 8, p: 1 } });
  await accounts.add('alice', 'long enough');
  const token = await accounts.createToken('alice', 'ci');
  const metrics = new RelayMetrics('n1', { processMetrics: false });
  const runs = new SqliteTesterRunStore(new DatabaseSync(':memory:')); // the test's handle: readable after the module closed
  const module = testerModule({
    store: runs, maxConcurrent, allowTargets, keepRuns: 100, stopGraceMs: 3000,
    engine: createTesterEngine({ defaultPorts: [25], sourceAddress: null, budgetMs: 60_000, proof: null, resolver: RESOLVER }),
  });
  const web = await startWeb({
    node: 'n1', logger: new MemoryLogger(), metrics, admins: accounts, modules: [module],
    queue: { list: async () => [], get: async () => null, hold: async () => none, release: async () => none, retry: async () => none, delete: async () => none, flush: async () => none, counts: async () => queueCounts([], 0) },
    checks: {}, admin: { address: '127.0.0.1', port: 0 }, public: null, tls: null,
    sessionLifetimeMs: 60_000, loginFailuresPerIp: 50, loginFailureWindowMs: 60_000,
  });
  let closed = false;
  return {
    web, token, metrics, admins, runs,
    async close() {
      if (!closed) await web.close();
      closed = true;
      await admins.close();
    },
  };
}

function http(w: Web, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port: w.web.admin.port, method, path,
      headers: { authorization: `Bearer ${w.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(b); } catch { /* not JSON */ }
        resolve({ status: res.statusCode!, headers: res.headers, body: b, json });
      });
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

let guarded: Web;
let lab: Web;
const fakes: FakeMta[] = [];

before(async () => {
  guarded = await startTesterWeb([], 2);
  lab = await startTesterWeb(['127.0.0.0/8'], 1);
});
after(async () => {
  await guarded?.close();
  await lab?.close();
  await Promise.all(fakes.map((f) => f.close()));
});

test('SSRF guard: loopback, private, link-local, CGNAT, multicast, reserved and names resolving to them are refused, naming the address', async () => {
  const fake = await startFakeMta({});
  fakes.push(fake);
  const cases: [string, RegExp, Record<string, unknown>?][] = [
    ['127.0.0.1', /127\.0\.0\.1 is a loopback address/],
    ['[::1]', /::1 is a loopback address/],
    ['[IPv6:::ffff:127.0.0.1]', /127\.0\.0\.1 is a loopback address/],
    ['10.1.2.3', /10\.1\.2\.3 is a private address/],
    ['192.168.1.1', /192\.168\.1\.1 is a private address/],
    ['172.16.0.9', /172\.16\.0\.9 is a private address/],
    ['169.254.169.254', /169\.254\.169\.254 is a link-local address/],
    ['[fe80::1]', /fe80::1 is a link-local address/],
    ['[fd00::1]', /fd00::1 is a unique-local address/],
    ['100.64.0.1', /100\.64\.0\.1 is a carrier-grade NAT address/],
    ['224.0.0.1', /224\.0\.0\.1 is a multicast address/],
    ['0.0.0.0', /0\.0\.0\.0 is the unspecified address/],
    ['192.0.2.1', /192\.0\.2\.1 is a reserved address/],
    ['240.0.0.1', /240\.0\.0\.1 is a reserved address/],
    ['loop.example', /127\.0\.0\.1 is a loopback address/, { mx: false }],
    ['v6loop.example', /::1 is a loopback address/, { mx: false }],
    ['mixed.example', /127\.0\.0\.1 is a loopback address; 10\.0\.0\.5 is a private address/, { mx: false }],
  ];
  for (const [host, message, extra] of cases) {
    const r = await http(guarded, 'POST', '/api/tester/runs', { host, ports: [String(fake.port)], ...extra });
    assert.equal(r.status, 400, `${host}: ${r.body}`);
    assert.equal(r.json.error.code, 'ERR_TESTER_TARGET_FORBIDDEN', host);
    assert.match(r.json.error.message, message, host);
  }
  const list = await http(guarded, 'GET', '/api/tester/runs');
  assert.equal(list.status, 200);
  assert.deepEqual(list.json.runs, [], 'a refused target is not recorded');
  assert.equal(fake.sessions.length, 0, 'no refused target was connected to');
});

test('bad input is 400 naming the field; an unknown name is ERR_TESTER_RESOLVE; prove without web.tester.proof is refused', async () => {
  const bad: [unknown, RegExp][] = [
    [{}, /field "host"/],
    [{ host: 'a b' }, /field "host"/],
    [{ host: '127.0.0.1', ports: ['99999'] }, /field "ports/],
    [{ host: '127.0.0.1', ports: ['25:smtp'] }, /field "ports/],
    [{ host: '127.0.0.1', tricks: ['NOPE1'] }, /field "tricks"/],
    [{ host: '127.0.0.1', mode: 'loud' }, /field "mode"/],
    [{ host: '127.0.0.1', extra: 1 }, /body field/],
    [{ host: '127.0.0.1', tlsOnly: true, starttls: false }, /field "tlsOnly"/],
  ];
  for (const [body, message] of bad) {
    const r = await http(lab, 'POST', '/api/tester/runs', body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.body}`);
    assert.equal(r.json.error.code, 'ERR_WEB_BAD_INPUT', r.body);
    assert.match(r.json.error.message, message, r.body);
  }
  const unknown = await http(lab, 'POST', '/api/tester/runs', { host: 'nowhere.example', mx: false });
  assert.equal(unknown.status, 400, unknown.body);
  assert.equal(unknown.json.error.code, 'ERR_TESTER_RESOLVE');
  const prove = await http(lab, 'POST', '/api/tester/runs', { host: '127.0.0.1', mode: 'prove' });
  assert.equal(prove.status, 400);
  assert.equal(prove.json.error.code, 'ERR_TESTER_PROOF_UNAVAILABLE');
  assert.equal((await http(lab, 'POST', '/api/tester/runs', { host: '127.0.0.1' }, { authorization: 'Bearer nope' })).status, 401);
  assert.equal((await http(lab, 'GET', '/api/tester/runs/0123456789abcdef')).json.error.code, 'ERR_TESTER_RUN_NOT_FOUND');
  assert.equal((await http(lab, 'GET', '/api/tester/runs/0123456789abcdef/events')).status, 404);
  assert.equal((await http(lab, 'GET', '/api/tester/runs/NOTANID')).status, 400);
});

/** Reads an event stream until it ends (or `until` says stop); returns the parsed events. */
function follow(w: Web, id: string, headers: Record<string, string> = {}, onData?: () => void): Promise<{ status: number; type: string; events: { id: number; event: string; data: any }[] }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: w.web.admin.port, path: `/api/tester/runs/${id}/events`, headers: { authorization: `Bearer ${w.token}`, ...headers } }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; onData?.(); }).on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), events: parseEvents(b) }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('a run against a closed fake: one trick event per trick before done, done verdict = report verdict; replay for a late client; Last-Event-ID; metrics', async () => {
  const fake = await startFakeMta({ commands: { RCPT: closedRcpt } });
  fakes.push(fake);
  const start = await http(lab, 'POST', '/api/tester/runs', { host: '127.0.0.1', ports: [`${fake.port}:mx`], starttls: false, timeoutSeconds: 2 });
  assert.equal(start.status, 202, start.body);
  assert.equal(start.headers['location'], `/api/tester/runs/${start.json.id}`);
  assert.equal(start.json.state, 'running');
  assert.deepEqual(start.json.addresses, ['127.0.0.1']);
  const id = start.json.id as string;
  const live = await follow(lab, id);
  assert.equal(live.status, 200);
  assert.match(live.type, /^text\/event-stream/);
  const types = live.events.map((e) => e.event);
  assert.equal(types[0], 'run');
  assert.equal(types.at(-1), 'done');
  assert.equal(types.filter((t) => t === 'done').length, 1);
  assert.deepEqual(live.events.map((e) => e.id), live.events.map((_, i) => i + 1), 'ids count from 1');

  const run = await http(lab, 'GET', `/api/tester/runs/${id}`);
  assert.equal(run.json.state, 'done', run.body);
  const report = (await http(lab, 'GET', `/api/tester/runs/${id}/report`)).json;
  assert.equal(report.schema, 'relayguard-tester/2');
  assert.equal(report.verdict, 'CLOSED', JSON.stringify(report.detail));
  assert.deepEqual(run.json.report, report);
  const reportTricks = report.targets.flatMap((t: any) => t.ports.flatMap((p: any) => p.transports.flatMap((tr: any) => tr.tricks)));
  const trickEvents = live.events.filter((e) => e.event === 'trick');
  assert.ok(reportTricks.length > 10, `a battery ran (${reportTricks.length})`);
  assert.equal(trickEvents.length, reportTricks.length, 'one trick event per trick of the report');
  assert.deepEqual(trickEvents.map((e) => e.data.id).sort(), reportTricks.map((t: any) => t.id).sort());
  const done = live.events.at(-1)!.data;
  assert.equal(done.verdict, report.verdict);
  assert.equal(done.exitCode, report.exitCode);
  assert.equal(done.state, 'done');
  assert.equal(live.events.filter((e) => e.event === 'target').length, 1);
  // A refused relay trick carries its dialogue (transcripts are on by default for web runs).
  const refused = trickEvents.find((e) => e.data.verdict === 'CLOSED')!;
  assert.ok(refused, 'a CLOSED trick');
  assert.ok(refused.data.lines.some((l: any) => l.dir === 'C' && /^RCPT TO:/.test(l.line)), JSON.stringify(refused.data.lines));
  assert.ok(refused.data.lines.some((l: any) => l.dir === 'S' && /^554 5\.7\.1 Relay access denied/.test(l.line)), JSON.stringify(refused.data.lines));

  // A late client (the run is finished): the same events, rebuilt from the stored report.
  const late = await follow(lab, id);
  assert.deepEqual(late.events.map((e) => e.event), types);
  assert.equal(late.events.filter((e) => e.event === 'trick').length, reportTricks.length);
  assert.equal(late.events.at(-1)!.data.verdict, 'CLOSED');
  const resumed = await follow(lab, id, { 'last-event-id': String(late.events.length - 2) });
  assert.deepEqual(resumed.events.map((e) => e.id), [late.events.length - 1, late.events.length]);

  const list = await http(lab, 'GET', '/api/tester/runs?limit=10');
  assert.equal(list.json.runs[0].id, id);
  assert.equal(list.json.runs[0].verdict, 'CLOSED');
  assert.match(await lab.metrics.text(), /relayguard_tester_runs_total\{verdict="CLOSED",node="n1"\} 1/);
});

test('concurrency: a second run while web.tester.maxConcurrent runs are going is 429 ERR_TESTER_BUSY with Retry-After', async () => {
  // A tarpit: the greeting comes after 1.5 s.
  const slow = await startFakeMta({ greeting: { delayMs: 1500, reply: '220 slow.test ESMTP\r\n' }, commands: { RCPT: closedRcpt } });
  fakes.push(slow);
  const first = await http(lab, 'POST', '/api/tester/runs', { host: '127.0.0.1', ports: [`${slow.port}:mx`], starttls: false, tricks: ['V02'], timeoutSeconds: 5 });
  assert.equal(first.status, 202, first.body);
  const second = await http(lab, 'POST', '/api/tester/runs', { host: '127.0.0.1', ports: [`${slow.port}:mx`], starttls: false, tricks: ['V02'] });
  assert.equal(second.status, 429, second.body);
  assert.equal(second.json.error.code, 'ERR_TESTER_BUSY');
  assert.equal(second.headers['retry-after'], '10');
  const events = await follow(lab, first.json.id);
  assert.equal(events.events.at(-1)!.event, 'done');
  const third = await http(lab, 'POST', '/api/tester/runs', { host: '127.0.0.1', ports: [`${slow.port}:mx`], starttls: false, tricks: ['V02'], timeoutSeconds: 5 });
  assert.equal(third.status, 202, `a slot is free again: ${third.body}`);
  await follow(lab, third.json.id);
});

test('stopping the web service during a run: the stream ends with done "aborted", the run is recorded aborted', async () => {
  const w = await startTesterWeb(['127.0.0.0/8'], 2);
  try {
    const hang = await startFakeMta({ greeting: null });
    fakes.push(hang);
    const start = await http(w, 'POST', '/api/tester/runs', { host: '127.0.0.1', ports: [`${hang.port}:mx`], timeoutSeconds: 120 });
    assert.equal(start.status, 202, start.body);
    let connected!: () => void;
    const streaming = new Promise<void>((resolve) => { connected = resolve; });
    const stream = follow(w, start.json.id, {}, () => connected());
    await Promise.all([hang.session(0), streaming]);
    const t0 = Date.now();
    await w.close();
    assert.ok(Date.now() - t0 < 4000, `stopped in ${Date.now() - t0} ms`);
    const s = await stream;
    const done = s.events.at(-1)!;
    assert.equal(done.event, 'done');
    assert.equal(done.data.state, 'aborted');
    const r = await w.runs.get(start.json.id);
    assert.equal(r?.state, 'aborted');
    assert.match(String(r?.error), /serve stopped during the run/);
    assert.match(await w.metrics.text(), /relayguard_tester_runs_total\{verdict="aborted",node="n1"\} 1/);
  } finally {
    await w.close();
  }
});
