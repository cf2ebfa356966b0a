/**
 * RemoteVantage against scripted HTTP(S) servers on loopback: the request it makes, polling to the end, the mapping of
 * the remote's report, and every way a remote can fail to test (401, 400 target forbidden, 429 busy, no answer,
 * refused connection, a hanging request, the budget running out, a malformed report, a wrong CA).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import { RemoteVantage, reportProblem } from './remote-vantage.ts';
import { relayFinding, type RelayTarget } from './relay-check.ts';

const dir = await mkdtemp(join(tmpdir(), 'relayguard-remote-vantage-'));
const tokenFile = join(dir, 'token');
await writeFile(tokenFile, 'rgt_good_token_0123456789\n', { mode: 0o600 });
const servers: Server[] = [];
after(async () => {
  for (const s of servers) { s.closeAllConnections(); s.close(); }
  await rm(dir, { recursive: true, force: true });
});

const MX: RelayTarget = { listener: 'mx', role: 'mx', tls: 'starttls', address: '127.0.0.1', port: 2525 };
const SUB: RelayTarget = { listener: 'submissions', role: 'submission', tls: 'implicit', address: '127.0.0.1', port: 2465 };

function report(target: RelayTarget, verdict: 'OPEN' | 'CLOSED', mode: 'safe' | 'prove' = 'prove'): unknown {
  const trick = (id: string, open: boolean) => ({ id, kind: 'relay', verdict: open ? 'OPEN' : 'CLOSED', reason: open ? 'proved' : 'refused', accepted: open });
  return {
    schema: 'relayguard-tester/1', mode, verdict, reason: verdict === 'OPEN' ? 'proved' : 'refused', detail: '', exitCode: verdict === 'OPEN' ? 1 : 0, errors: [],
    targets: [{
      address: target.address, sourceAddress: '127.0.0.9', verdict, reason: verdict === 'OPEN' ? 'proved' : 'refused', detail: 'every trick refused',
      ports: [{ port: target.port, role: 'mx', verdict, reason: verdict === 'OPEN' ? 'proved' : 'refused', transports: [{ transport: 'plain', tricks: [trick('r1', false), trick('r2', verdict === 'OPEN')] }] }],
    }],
  };
}

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;
interface Fake { url: string; requests: { method: string; path: string; auth: string; body: unknown }[] }

async function fake(handler: Handler, tls?: { cert: string; key: string }): Promise<Fake> {
  const requests: Fake['requests'] = [];
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
      requests.push({ method: req.method!, path: req.url!, auth: String(req.headers.authorization ?? ''), body: body ? JSON.parse(body) : null });
      handler(req, body, res);
    });
  };
  const server = tls ? createHttps({ cert: tls.cert, key: tls.key }, onRequest) : createHttp(onRequest);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
};

/** A remote tester: each run is 'running' for `polls` GETs, then done with the report `verdictOf(port)`. */
function tester(verdictOf: (t: RelayTarget) => 'OPEN' | 'CLOSED', polls = 1): Handler {
  const runs = new Map<string, { target: RelayTarget; mode: 'safe' | 'prove'; left: number }>();
  let n = 0;
  return (req, body, res) => {
    if (req.method === 'POST' && req.url === '/api/tester/runs') {
      const b = JSON.parse(body) as { host: string; ports: string[]; mode: 'safe' | 'prove' };
      const port = Number(b.ports[0]!.split(':')[0]);
      const target = [MX, SUB].find((t) => t.port === port)!;
      const id = (++n).toString(16).padStart(16, '0');
      runs.set(id, { target, mode: b.mode, left: polls });
      return json(res, 202, { id, state: 'running' });
    }
    const m = /^\/api\/tester\/runs\/([0-9a-f]{16})$/.exec(req.url ?? '');
    const run = m ? runs.get(m[1]!) : undefined;
    if (!run) return json(res, 404, { error: { code: 'ERR_TESTER_RUN_NOT_FOUND', message: 'no' } });
    if (run.left-- > 0) return json(res, 200, { id: m![1], state: 'running', report: null });
    return json(res, 200, { id: m![1], state: 'done', report: report(run.target, verdictOf(run.target), run.mode) });
  };
}

const vantage = (url: string, extra: Partial<ConstructorParameters<typeof RemoteVantage>[0]> = {}): RemoteVantage => new RemoteVantage({
  url, tokenFile, hostName: 'mx.local.test', domain: 'local.test', budgetMs: 60_000, pollMs: 20, requestTimeoutMs: 2000, ...extra,
});
const never = new AbortController().signal;

test('asks the remote to test each listener, follows the run, maps its report', async () => {
  const remote = await fake(tester((t) => (t.port === MX.port ? 'OPEN' : 'CLOSED'), 2));
  const out = await vantage(remote.url, { proof: true }).test([MX, SUB], never);
  assert.deepEqual(out.map((o) => [o.target.listener, o.verdict, o.reason, o.mode]), [['mx', 'OPEN', 'proved', 'prove'], ['submissions', 'CLOSED', 'refused', 'prove']]);
  assert.equal(out[0]!.from, `remote ${remote.url} (127.0.0.9)`);
  assert.deepEqual(out[0]!.acceptedTricks, ['r2/plain']);
  const posts = remote.requests.filter((r) => r.method === 'POST');
  assert.deepEqual(posts.map((p) => p.body), [
    { host: '127.0.0.1', ports: ['2525:mx'], mode: 'prove', mx: false, hostName: 'mx.local.test', domain: 'local.test', transcript: false, budgetSeconds: 60 },
    { host: '127.0.0.1', ports: ['2465:submissions'], mode: 'prove', mx: false, hostName: 'mx.local.test', domain: 'local.test', transcript: false, budgetSeconds: 60 },
  ]);
  assert.ok(remote.requests.every((r) => r.auth === 'Bearer rgt_good_token_0123456789'));
  assert.equal(remote.requests.filter((r) => r.method === 'GET').length, 6, 'two polls while running, one when done, per run');
  const f = out.map((o) => relayFinding(o));
  assert.deepEqual(f.map((x) => [x.check, x.severity]), [['relay.open', 'critical'], ['relay.closed', 'ok']]);
});

test('host option and wildcard binds: the remote is asked about the configured host or audit.addresses', async () => {
  const remote = await fake(tester(() => 'CLOSED'));
  const wild = { ...MX, address: '0.0.0.0' };
  const none = await vantage(remote.url).test([wild], never);
  assert.equal(none[0]!.reason, 'not-tested');
  assert.equal(remote.requests.length, 0);
  await vantage(remote.url, { addresses: ['2001:db8::1', '198.51.100.7'] }).test([wild], never);
  assert.equal((remote.requests[0]!.body as { host: string }).host, '198.51.100.7');
  const other = await vantage(remote.url, { host: 'mx.example.net' }).test([MX], never);
  assert.equal((remote.requests.filter((r) => r.method === 'POST').at(-1)!.body as { host: string }).host, 'mx.example.net');
  assert.equal(other[0]!.verdict, 'CLOSED');
});

test('401: every listener unreachable with the reason, after one request', async () => {
  const remote = await fake((_req, _body, res) => json(res, 401, { error: { code: 'ERR_WEB_UNAUTHENTICATED', message: 'Log in or send Authorization: Bearer <token>' } }));
  const out = await vantage(remote.url).test([MX, SUB], never);
  for (const o of out) {
    assert.equal(o.verdict, 'INCONCLUSIVE');
    assert.equal(o.reason, 'remote-unauthorized');
    assert.match(o.detail, /HTTP 401 ERR_WEB_UNAUTHENTICATED/);
    const f = relayFinding(o);
    assert.equal(f.check, 'relay.inconclusive');
    assert.equal(f.severity, 'unreachable');
  }
  assert.equal(remote.requests.length, 1, 'one failed login on the remote, not one per listener');
});

test('400 ERR_TESTER_TARGET_FORBIDDEN: that listener unreachable, the others still tested', async () => {
  const inner = tester(() => 'CLOSED');
  const remote = await fake((req, body, res) => {
    if (req.method === 'POST' && (JSON.parse(body) as { ports: string[] }).ports[0] === '2525:mx') {
      return json(res, 400, { error: { code: 'ERR_TESTER_TARGET_FORBIDDEN', message: 'Target "127.0.0.1" not tested: 127.0.0.1 is a loopback address' } });
    }
    return inner(req, body, res);
  });
  const out = await vantage(remote.url).test([MX, SUB], never);
  assert.equal(out[0]!.reason, 'remote-target-forbidden');
  assert.match(out[0]!.detail, /ERR_TESTER_TARGET_FORBIDDEN.*allowTargets/);
  assert.equal(out[1]!.verdict, 'CLOSED');
});

test('429 busy: tried again after Retry-After', async () => {
  const inner = tester(() => 'CLOSED');
  let busy = 1;
  const remote = await fake((req, body, res) => {
    if (req.method === 'POST' && busy-- > 0) return json(res, 429, { error: { code: 'ERR_TESTER_BUSY', message: 'busy' } }, { 'retry-after': '1' });
    return inner(req, body, res);
  });
  const out = await vantage(remote.url).test([MX], never);
  assert.equal(out[0]!.verdict, 'CLOSED');
  assert.equal(remote.requests.filter((r) => r.method === 'POST').length, 2);
});

test('a remote that does not answer: refused connection, a hanging request, the budget running out', async () => {
  const closed = await fake(() => {});
  const port = Number(new URL(closed.url).port);
  servers.at(-1)!.close();
  const refused = await vantage(`http://127.0.0.1:${port}`).test([MX, SUB], never);
  assert.deepEqual(refused.map((o) => o.reason), ['remote-unreachable', 'remote-unreachable']);
  assert.match(refused[0]!.detail, /ECONNREFUSED/);

  const hang = await fake(() => { /* never answers */ });
  const t0 = Date.now();
  const hung = await vantage(hang.url, { requestTimeoutMs: 300 }).test([MX, SUB], never);
  assert.deepEqual(hung.map((o) => o.reason), ['remote-timeout', 'remote-timeout']);
  assert.ok(Date.now() - t0 < 2000, 'the second listener is not waited for again');

  const slow = await fake(tester(() => 'CLOSED', 1_000_000));
  const budget = new AbortController();
  setTimeout(() => budget.abort(new Error('budget')), 300);
  const t1 = Date.now();
  const late = await vantage(slow.url).test([MX, SUB], budget.signal);
  assert.deepEqual(late.map((o) => o.reason), ['remote-timeout', 'remote-timeout']);
  assert.ok(Date.now() - t1 < 1000, `returns at once when the budget runs out (${Date.now() - t1} ms)`);
});

test('a malformed report or a failed run is never closed', async () => {
  const bad = await fake((req, _body, res) => {
    if (req.method === 'POST') return json(res, 202, { id: '00000000000000aa' });
    return json(res, 200, { state: 'done', report: { schema: 'relayguard-tester/1', mode: 'safe', targets: [{ verdict: 'CLOSED' }], errors: [] } });
  });
  const out = await vantage(bad.url).test([MX], never);
  assert.equal(out[0]!.verdict, 'INCONCLUSIVE');
  assert.equal(out[0]!.reason, 'remote-error');
  assert.match(out[0]!.detail, /malformed/);
  const failed = await fake((req, _body, res) => {
    if (req.method === 'POST') return json(res, 202, { id: '00000000000000ab' });
    return json(res, 200, { state: 'failed', error: 'boom', report: null });
  });
  const f = await vantage(failed.url).test([MX], never);
  assert.equal(f[0]!.reason, 'remote-run-failed');
  assert.match(f[0]!.detail, /failed: boom/);
  const noId = await fake((_req, _body, res) => json(res, 202, { id: '../../etc' }));
  assert.equal((await vantage(noId.url).test([MX], never))[0]!.reason, 'remote-error');
  assert.equal(reportProblem(report(MX, 'CLOSED')), null);
  assert.match(String(reportProblem({ schema: 'x' })), /schema/);
  // a report about another address than the one asked for
  const other = await fake(tester(() => 'CLOSED'));
  const wrong = await vantage(other.url, { host: '127.0.0.2' }).test([MX], never);
  assert.equal(wrong[0]!.reason, 'remote-error');
  assert.match(wrong[0]!.detail, /not 127\.0\.0\.2:2525/);
});

test('https: verified with the ca file; a wrong CA is unreachable; an unreadable token file is named', async () => {
  const cert = await generateSelfSigned('remote.test');
  const remote = await fake(tester(() => 'CLOSED'), cert);
  const ca = join(dir, 'remote.pem');
  await writeFile(ca, cert.cert);
  const ok = await vantage(remote.url, { ca }).test([MX], never);
  assert.equal(ok[0]!.verdict, 'CLOSED', ok[0]!.detail);
  const other = await generateSelfSigned('other.test');
  const wrongCa = join(dir, 'other.pem');
  await writeFile(wrongCa, other.cert);
  const bad = await vantage(remote.url, { ca: wrongCa }).test([MX], never);
  assert.equal(bad[0]!.reason, 'remote-unreachable');
  assert.match(bad[0]!.detail, /certificate/i);
  const missing = await vantage(remote.url, { ca, tokenFile: join(dir, 'nope') }).test([MX], never);
  assert.equal(missing[0]!.reason, 'remote-unusable');
  assert.match(missing[0]!.detail, /token file .*nope: ENOENT/);
});

test('proof mode the remote cannot give, and a remote without the tester: every listener unreachable, named', async () => {
  const noProof = await fake((_req, _body, res) => json(res, 400, { error: { code: 'ERR_TESTER_PROOF_UNAVAILABLE', message: 'body field "mode": proof mode needs web.tester.proof' } }));
  const p = await vantage(noProof.url, { proof: true }).test([MX, SUB], never);
  assert.deepEqual(p.map((o) => [o.reason, o.mode]), [['remote-proof-unavailable', 'prove'], ['remote-proof-unavailable', 'prove']]);
  assert.match(p[0]!.detail, /configure web\.tester\.proof there, or set proof: false/);
  assert.equal(noProof.requests.length, 1);
  const none = await fake((_req, _body, res) => json(res, 404, { error: { code: 'ERR_WEB_NOT_FOUND', message: 'Route POST:/api/tester/runs not found' } }));
  const n = await vantage(none.url).test([MX, SUB], never);
  assert.deepEqual(n.map((o) => o.reason), ['remote-no-tester', 'remote-no-tester']);
  const html = await fake((_req, _body, res) => { res.writeHead(502, { 'content-type': 'text/html' }).end('<html><body>Bad   Gateway</body></html>'); });
  const h = await vantage(html.url).test([MX], never);
  assert.equal(h[0]!.reason, 'remote-error');
  assert.match(h[0]!.detail, /HTTP 502: <html><body>Bad Gateway/);
});
