/**
 * The web tester against a real `relayguard serve` (web on an ephemeral loopback port; web.tester.allowTargets
 * 127.0.0.2/32, the tester speaking from 127.0.0.3, proof mode with its sink on 127.0.0.1), over real HTTP:
 *   - a toy open relay on 127.0.0.2 (forwards into the web tester's sink) tested in proof mode: OPEN, proved; a
 *     scripted closed MX on 127.0.0.2 (its banner carries markup): CLOSED. For both, the event stream has one
 *     `trick` event per trick of the report before `done`, and done's verdict is the report's; the report has the
 *     schema and shape `relayguard test --json` prints for the same target;
 *   - SSRF: 127.0.0.1 (loopback outside allowTargets), 10.1.2.3, 169.254.169.254 and `localhost` (a name resolving
 *     to loopback; /etc/hosts, no DNS query) refused with 400 ERR_TESTER_TARGET_FORBIDDEN naming the address;
 *   - the write route: 401 anonymous, 403 without the CSRF token on a cookie session, 202 with it; the form on the
 *     tester page starts a run and redirects to its page, which renders the verdicts with the banner's markup as
 *     text; /metrics counts runs by verdict; the audit log has each run; the OpenAPI document lists the routes
 *     (the events route as text/event-stream);
 *   - serve stopped during a run: the stream ends with `done` aborted, and after a restart the run reads aborted.
 * Nothing leaves loopback.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { startFakeMta, type FakeCommand, type FakeMta } from '../../src/testing/fake-mta.ts';
import { freePort } from '../../src/testing/ports.ts';
import { parseEvents, type SseEvent } from '../../src/testing/sse.ts';
import { startToyRelay, type ToyRelay } from './tester-helpers.ts';

const TARGET = '127.0.0.2';
const TESTER = '127.0.0.3';
const PROBE_DOMAIN = 'probe.test';
const PASSWORD = 'correct horse battery';

let serve: ServeProcess;
let port = 0;
let token = '';
let sinkPort = 0;
let closed: FakeMta;
let relay: ToyRelay;
const extraFakes: FakeMta[] = [];

interface Res { status: number; headers: Record<string, string | string[] | undefined>; body: string; json: any }

function http(method: string, path: string, options: { headers?: Record<string, string>; body?: string } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: options.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(body); } catch { /* not JSON */ }
        resolve({ status: res.statusCode!, headers: res.headers, body, json });
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}
const api = (method: string, path: string, body?: unknown): Promise<Res> => http(method, path, {
  headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
  ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
});

/** Follows a run's event stream to its end; `onData` fires at the first bytes (the stream is connected). */
function follow(id: string, onData?: () => void): Promise<SseEvent[]> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: `/api/tester/runs/${id}/events`, headers: { authorization: `Bearer ${token}` } }, (res) => {
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), /^text\/event-stream/);
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; onData?.(); }).on('end', () => resolve(parseEvents(body))).on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function cli(args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(NODE, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('close', (code) => resolve({ code, out, err }));
    c.stdin.end(input);
  });
}

const cookiesOf = (r: Res): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const c of [r.headers['set-cookie'] ?? []].flat()) {
    const [pair] = c.split(';');
    const i = pair!.indexOf('=');
    out[pair!.slice(0, i)] = pair!.slice(i + 1);
  }
  return out;
};

async function login(): Promise<{ cookie: string; csrf: string }> {
  const form = await http('GET', '/login');
  const loginCsrf = cookiesOf(form)['rg_login_csrf']!;
  const r = await http('POST', '/login', {
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${loginCsrf}` },
    body: new URLSearchParams({ name: 'alice', password: PASSWORD, _csrf: loginCsrf }).toString(),
  });
  assert.equal(r.status, 303, r.body);
  const cookie = `rg_session=${cookiesOf(r)['rg_session']}`;
  const me = await http('GET', '/api/me', { headers: { cookie } });
  return { cookie, csrf: me.json.csrfToken };
}

const IS_POSTMASTER = /^TO:<postmaster(@[^>]*)?>/i;
const closedRcpt = (c: FakeCommand): string => (IS_POSTMASTER.test(c.arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n');
const BANNER = '220 mx.closed.test ESMTP <script>alert(1)</script> "><img src=x onerror=alert(2)>\r\n';

function config(): Record<string, unknown> {
  return {
    trustedNetworks: ['127.0.0.1/32'],
    web: {
      enabled: true, port: 0,
      tester: {
        allowTargets: [`${TARGET}/32`], maxConcurrent: 3, sourceAddress: TESTER,
        proof: { probeDomain: PROBE_DOMAIN, sink: { address: '127.0.0.1', port: sinkPort }, wait: '5s' },
      },
    },
  };
}

function webPort(s: ServeProcess): number {
  const line = s.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin');
  assert.ok(line, 'serve logs where the web service listens');
  return Number(line['port']);
}

before(async () => {
  sinkPort = await freePort();
  closed = await startFakeMta({ host: TARGET, greeting: BANNER, commands: { RCPT: closedRcpt } });
  relay = await startToyRelay({ address: TARGET, accept: () => true, nextHop: { host: '127.0.0.1', port: sinkPort } });
  serve = await startServe({ config: config() });
  port = webPort(serve);
  const add = await cli(['admin', 'add', 'alice', '--password-stdin', '--config', serve.configFile], `${PASSWORD}\n`);
  assert.equal(add.code, 0, add.err);
  const t = await cli(['admin', 'token', 'add', 'ci', '--admin', 'alice', '--config', serve.configFile]);
  assert.equal(t.code, 0, t.err);
  token = t.out.trim();
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
  await closed?.close();
  await relay?.close();
  await Promise.all(extraFakes.map((f) => f.close()));
});

/** Starts a run, follows its stream to the end, and checks the stream against the report. */
async function runAndFollow(body: Record<string, unknown>): Promise<{ id: string; events: SseEvent[]; report: any }> {
  const start = await api('POST', '/api/tester/runs', body);
  assert.equal(start.status, 202, start.body);
  const id = start.json.id as string;
  const events = await follow(id);
  const report = (await api('GET', `/api/tester/runs/${id}/report`)).json;
  const tricks = report.targets.flatMap((t: any) => t.ports.flatMap((p: any) => p.transports.flatMap((tr: any) => tr.tricks)));
  const types = events.map((e) => e.event);
  assert.equal(types[0], 'run');
  assert.equal(types.at(-1), 'done', JSON.stringify(types));
  assert.ok(tricks.length > 10, `a battery ran: ${tricks.length}`);
  assert.equal(types.filter((t) => t === 'trick').length, tricks.length, 'one trick event per trick of the report, all before done');
  assert.deepEqual(events.filter((e) => e.event === 'trick').map((e) => `${e.data.transport} ${e.data.id}`).sort(),
    report.targets.flatMap((t: any) => t.ports.flatMap((p: any) => p.transports.flatMap((tr: any) => tr.tricks.map((k: any) => `${tr.transport} ${k.id}`)))).sort());
  const done = events.at(-1)!.data;
  assert.equal(done.state, 'done');
  assert.equal(done.verdict, report.verdict);
  assert.equal(done.exitCode, report.exitCode);
  return { id, events, report };
}

test('a toy open relay, proof mode: OPEN (proved); the stream delivers every trick verdict before done', async () => {
  const { report, events } = await runAndFollow({ host: TARGET, ports: [`${relay.port}:mx`], mode: 'prove', timeoutSeconds: 5 });
  assert.equal(report.verdict, 'OPEN', `${report.reason}: ${report.detail}`);
  assert.equal(report.reason, 'proved');
  assert.equal(report.mode, 'prove');
  assert.equal(report.testerDomain, PROBE_DOMAIN);
  assert.ok(relay.forwarded.length > 0, 'the relay forwarded probes into the sink');
  const v02 = report.targets[0].ports[0].transports[0].tricks.find((t: any) => t.id === 'V02');
  assert.equal(v02.verdict, 'OPEN');
  assert.equal(v02.proof.arrived, true);
  assert.equal(v02.proof.sentFrom, TESTER, 'the tester spoke from web.tester.sourceAddress');
  // The live event of an accepted trick was the session's verdict (not yet proved) with its dialogue, DATA included.
  const live = events.find((e) => e.event === 'trick' && e.data.id === 'V02')!;
  assert.ok(live.data.lines.some((l: any) => l.dir === 'C' && /^RCPT TO:/.test(l.line)));
  assert.ok(live.data.lines.some((l: any) => l.dir === 'C' && l.line === 'DATA'), JSON.stringify(live.data.lines));
});

test('a closed MX: CLOSED; the report is the document `relayguard test --json` prints for the same target', async () => {
  const { report } = await runAndFollow({ host: TARGET, ports: [`${closed.port}:mx`], timeoutSeconds: 5 });
  assert.equal(report.verdict, 'CLOSED', `${report.reason}: ${report.detail}`);
  assert.equal(report.exitCode, 0);
  const c = await cli(['test', TARGET, '--port', `${closed.port}:mx`, '--source-address', TESTER, '--timeout', '5', '--transcript', '--json']);
  assert.equal(c.code, 0, c.err);
  const fromCli = JSON.parse(c.out);
  const shape = (v: unknown): unknown => (Array.isArray(v) ? v.slice(0, 1).map(shape) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, shape((v as Record<string, unknown>)[k])])) : typeof v);
  assert.deepEqual(shape(report), shape(fromCli), 'same schema and shape');
  assert.equal(report.schema, fromCli.schema);
  assert.equal(report.verdict, fromCli.verdict);
  const ids = (r: any): string[] => r.targets[0].ports[0].transports.flatMap((t: any) => t.tricks.map((k: any) => `${t.transport} ${k.id} ${k.verdict}`));
  assert.deepEqual(ids(report), ids(fromCli));
});

test('SSRF: loopback outside allowTargets, private, link-local and a name resolving to loopback are refused, naming the address', async () => {
  const before = (await api('GET', '/api/tester/runs?limit=200')).json.runs.length;
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ host: '127.0.0.1' }, /127\.0\.0\.1 is a loopback address/],
    [{ host: '10.1.2.3' }, /10\.1\.2\.3 is a private address/],
    [{ host: '169.254.169.254' }, /169\.254\.169\.254 is a link-local address/],
    [{ host: 'localhost', mx: false }, /127\.0\.0\.1 is a loopback address/],
  ];
  for (const [body, message] of cases) {
    const r = await api('POST', '/api/tester/runs', { ...body, ports: [`${closed.port}:mx`] });
    assert.equal(r.status, 400, r.body);
    assert.equal(r.json.error.code, 'ERR_TESTER_TARGET_FORBIDDEN');
    assert.match(r.json.error.message, message);
  }
  assert.equal((await api('GET', '/api/tester/runs?limit=200')).json.runs.length, before, 'nothing recorded');
  assert.ok(serve.logs.some((l) => l['msg'] === 'tester target refused' && l['err_code'] === 'ERR_TESTER_TARGET_FORBIDDEN'));
});

test('the write route: 401 anonymous, 403 without the CSRF token, 202 with it; the form starts a run and its page renders the verdicts escaped', async () => {
  const body = JSON.stringify({ host: TARGET, ports: [`${closed.port}:mx`], starttls: false, tricks: ['V02', 'V05'], timeoutSeconds: 5 });
  const anon = await http('POST', '/api/tester/runs', { headers: { 'content-type': 'application/json' }, body });
  assert.equal(anon.status, 401, anon.body);
  const { cookie, csrf } = await login();
  const noCsrf = await http('POST', '/api/tester/runs', { headers: { 'content-type': 'application/json', cookie }, body });
  assert.equal(noCsrf.status, 403, noCsrf.body);
  assert.equal(noCsrf.json.error.code, 'ERR_WEB_CSRF');
  const ok = await http('POST', '/api/tester/runs', { headers: { 'content-type': 'application/json', cookie, 'x-csrf-token': csrf }, body });
  assert.equal(ok.status, 202, ok.body);
  await follow(ok.json.id);

  // The form (CSRF in _csrf), then the run's page.
  const page = await http('GET', '/tester', { headers: { cookie } });
  assert.equal(page.status, 200);
  assert.match(page.body, /<form class="tester-form" method="post" action="\/tester">/);
  assert.match(page.body, /<a href="\/tester">Tester<\/a>/, 'the navigation has the Tester entry');
  assert.ok(!/<script>/i.test(page.body), 'no inline script');
  const noToken = await http('POST', '/tester', { headers: { 'content-type': 'application/x-www-form-urlencoded', cookie }, body: new URLSearchParams({ host: TARGET, ports: `${closed.port}:mx` }).toString() });
  assert.equal(noToken.status, 403);
  const form = await http('POST', '/tester', {
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
    body: new URLSearchParams({ _csrf: csrf, host: TARGET, ports: `${closed.port}:mx`, mode: 'safe', tricks: 'V02,V05' }).toString(),
  });
  assert.equal(form.status, 303, form.body);
  const m = /^\/tester\/runs\/([0-9a-f]{16})$/.exec(String(form.headers['location']));
  assert.ok(m, String(form.headers['location']));
  const running = await http('GET', m[0], { headers: { cookie } });
  assert.equal(running.status, 200);
  if (/data-state="running"/.test(running.body)) {
    assert.match(running.body, new RegExp(`data-events="/api/tester/runs/${m[1]}/events"`));
    assert.match(running.body, /<script type="module" src="\/assets\/tester\.js"><\/script>/);
  }
  await follow(m[1]!);
  const view = await http('GET', m[0], { headers: { cookie } });
  assert.match(view.body, /id="tester-verdict" data-verdict="CLOSED"/);
  assert.match(view.body, /<tr class="trick" data-trick="V02" data-verdict="CLOSED">/);
  assert.match(view.body, /554 5\.7\.1 Relay access denied/);
  assert.match(view.body, /&#60;script&#62;alert\(1\)&#60;\/script&#62;/, 'the banner\'s markup is text');
  assert.ok(!view.body.includes('<script>alert(1)'), 'never raw');
  assert.ok(!view.body.includes('<img src=x'), 'never raw');
  // A refused target on the form: the form again with the error, 400.
  const refused = await http('POST', '/tester', {
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
    body: new URLSearchParams({ _csrf: csrf, host: '10.9.8.7' }).toString(),
  });
  assert.equal(refused.status, 400);
  assert.match(refused.body, /<p class="error" role="alert" id="tester-error">.*10\.9\.8\.7 is a private address/);
  // The script is served as an asset (same origin, CSP script-src 'self').
  const js = await http('GET', '/assets/tester.js');
  assert.equal(js.status, 200);
  assert.match(String(js.headers['content-type']), /javascript/);
  assert.ok(js.body.includes('new EventSource') && !js.body.includes('innerHTML'));
});

test('metrics count runs by verdict; every run is in the audit log; OpenAPI lists the routes', async () => {
  const metrics = await http('GET', '/metrics', { headers: { authorization: `Bearer ${token}` } });
  assert.equal(metrics.status, 200);
  const count = (v: string): number => Number(new RegExp(`relayguard_tester_runs_total\\{verdict="${v}"[^}]*\\} (\\d+)`).exec(metrics.body)?.[1] ?? NaN);
  assert.ok(count('OPEN') >= 1, metrics.body.split('\n').filter((l) => l.includes('tester')).join('\n'));
  assert.ok(count('CLOSED') >= 3);
  assert.equal(count('failed'), 0);
  const runs = (await api('GET', '/api/tester/runs?limit=200')).json.runs as any[];
  const audit = (await api('GET', '/api/audit?limit=1000')).json.entries as any[];
  const audited = new Set(audit.filter((e) => e.action === 'tester.run').map((e) => JSON.parse(e.detail).id));
  assert.ok(runs.length >= 4);
  for (const r of runs) assert.ok(audited.has(r.id), `run ${r.id} audited`);
  assert.equal(audit.find((e) => e.action === 'tester.run')?.target, TARGET);
  // paging
  const p1 = (await api('GET', '/api/tester/runs?limit=2')).json;
  const p2 = (await api('GET', `/api/tester/runs?limit=2&before=${p1.next}`)).json;
  assert.deepEqual([...p1.runs, ...p2.runs].map((r: any) => r.id), runs.slice(0, 4).map((r) => r.id));

  const doc = (await api('GET', '/api/openapi.json')).json;
  assert.ok(doc.paths['/api/tester/runs'].post.requestBody, 'POST with its body schema');
  assert.ok(doc.paths['/api/tester/runs'].get);
  assert.ok(doc.paths['/api/tester/runs/{id}'].get);
  assert.ok(doc.paths['/api/tester/runs/{id}/report'].get);
  assert.ok(doc.paths['/api/tester/runs/{id}/events'].get.responses['200'].content['text/event-stream']);
  assert.ok(doc.paths['/api/tester/runs'].post.responses['403'], 'the write route documents the CSRF refusal');
});

test('serve stopped during a run: the stream ends with done "aborted"; after a restart the run reads aborted', async () => {
  const hang = await startFakeMta({ host: TARGET, greeting: null });
  extraFakes.push(hang);
  const start = await api('POST', '/api/tester/runs', { host: TARGET, ports: [`${hang.port}:mx`], timeoutSeconds: 120 });
  assert.equal(start.status, 202, start.body);
  let connected!: () => void;
  const streaming = new Promise<void>((resolve) => { connected = resolve; });
  const stream = follow(start.json.id, () => connected());
  await Promise.all([hang.session(0), streaming]);
  const code = await serve.stop();
  assert.equal(code, 0, serve.stderr());
  const events = await stream;
  assert.equal(events.at(-1)!.event, 'done');
  assert.equal(events.at(-1)!.data.state, 'aborted');
  assert.ok(serve.logs.some((l) => l['msg'] === 'tester run finished' && l['run_id'] === start.json.id && l['state'] === 'aborted'));

  serve = await startServe({ config: config(), dataDir: serve.dataDir, ports: serve.ports });
  port = webPort(serve);
  const r = await api('GET', `/api/tester/runs/${start.json.id}`);
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.state, 'aborted');
  assert.match(r.json.error, /serve stopped during the run/);
  const late = await follow(start.json.id);
  assert.deepEqual(late.map((e) => e.event).at(-1), 'done');
});
