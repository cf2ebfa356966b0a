/**
 * /metrics and the overview of a real `relayguard serve` (web, ORDB, delivery to a discard transport, a DNSBL zone
 * on a loopback fake DNS server), driven by swaks over real SMTP:
 *   - /metrics parsed as Prometheus text exposition 0.0.4 by a strict parser (below): HELP/TYPE before samples,
 *     families contiguous, names and labels well formed, no duplicate series, counters named _total, histogram
 *     buckets cumulative and +Inf equal to _count;
 *   - counters move when mail is accepted (messages, bytes, accept latency, replies by class, commands, sessions,
 *     decisions, DNSBL lookups, delivery attempts by destination class and their latency), when a relay attempt
 *     and a DNSBL-listed client are refused (by rule), when AUTH fails, and when the ORDB answers a DNS query;
 *   - every metric used by docs/grafana-dashboard.json exists in the scrape;
 *   - GET /api/overview (the live charts' data) shows the same traffic, and the home page carries the charts with
 *     their script and uPlot served from /assets (no inline script).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as dnsPromises } from 'node:dns';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import { OUTSIDE, SWAKS, requirePeer, run, explain } from '../interop/peers.ts';
import { parseProm, value, type PromFamily } from './prom-text.ts';

let serve: ServeProcess;
let dns: FakeDns;
let port = 0;
let ordbPort = 0;
let token = '';
const LISTED = '127.0.0.3';

interface Res { status: number; headers: Record<string, string | string[] | undefined>; body: string }

function http(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
const authed = (path: string): Promise<Res> => http('GET', path, { authorization: `Bearer ${token}` });

function cliRun(args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(NODE, [CLI, ...args, '--config', serve.configFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('close', (code) => resolve({ code, out, err }));
    c.stdin.end(input);
  });
}

async function scrape(): Promise<Map<string, PromFamily>> {
  const r = await authed('/metrics');
  assert.equal(r.status, 200, r.body);
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return parseProm(r.body);
}

function swaks(args: readonly string[]): ReturnType<typeof run> {
  return run(SWAKS, ['--timeout', '10s', '--helo', 'swaks.metrics.test', ...args], { timeoutMs: 20_000 });
}

before(async () => {
  requirePeer(SWAKS, 'swaks');
  // bl.test lists 127.0.0.2 (the RFC 5782 test point the health check asks for) and LISTED; 127.0.0.1 is not listed.
  dns = await startFakeDns({
    zone: {
      '2.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: [['test point']] },
      [`${LISTED.split('.').reverse().join('.')}.bl.test`]: { A: ['127.0.0.2'], TXT: [['listed for the metrics test']] },
    },
  });
  serve = await startServe({
    config: {
      web: { enabled: true, port: 0 },
      dnsbl: { enabled: true, listen: { port: 0 }, schedulerInterval: 0 },
      dnsblChecks: [{ zone: 'bl.test' }],
      dnsblResolver: { servers: [`127.0.0.1:${dns.port}`], timeout: '2s' },
      trustedNetworks: ['127.0.0.9/32'], // no client of this test is trusted: each gets the DNSBL check
      delivery: { enabled: true, localTransport: { discard: true } },
      // The self-audit runs once below (its gauge is on the dashboard); only its configuration lint: nothing leaves.
      audit: { relay: { enabled: false }, blocklists: [], mailDomains: false },
    },
  });
  const line = serve.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin');
  assert.ok(line, 'serve logs where the web service listens');
  port = Number(line['port']);
  const o = serve.logs.find((l) => l['msg'] === 'dnsbl listening');
  assert.ok(o, `the ORDB logs its port: ${serve.logs.map((l) => l['msg']).join(', ')}`);
  ordbPort = Number(o['port']);
  const add = await cliRun(['admin', 'add', 'alice', '--password-stdin'], 'correct horse battery\n');
  assert.equal(add.code, 0, add.err);
  const t = await cliRun(['admin', 'token', 'add', 'prometheus', '--admin', 'alice']);
  assert.equal(t.code, 0, t.err);
  token = t.out.trim();
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
  await dns?.close();
});

test('/metrics: strict Prometheus text; counters move with swaks mail, refusals by rule, AUTH failures, DNSBL lookups, ORDB queries, deliveries; every Grafana metric exists', async () => {
  const before = await scrape();
  for (const f of before.values()) for (const s of f.samples) assert.ok(s.labels['node'], `${s.name} carries node`);

  // Two messages from a client not listed in bl.test: accepted, then delivered to the discard transport.
  const body = `Subject: metrics\r\n\r\n${'x'.repeat(3000)}\r\n`;
  for (let i = 0; i < 2; i++) {
    const r = await run(SWAKS, ['--timeout', '10s', '--helo', 'swaks.metrics.test', '--server', `127.0.0.1:${serve.ports.mx}`, '--from', 'a@example.net', '--to', 'u@local.test', '--data', '-'], { timeoutMs: 20_000, input: body });
    assert.equal(r.code, 0, explain(r));
  }
  // A relay attempt from outside (default deny) and mail from a DNSBL-listed client: refused at RCPT.
  const relay = await swaks(['--server', `127.0.0.1:${serve.ports.mx}`, '--local-interface', OUTSIDE, '--from', 'a@example.net', '--to', 'victim@elsewhere.example', '--quit-after', 'RCPT']);
  assert.notEqual(relay.code, 0, 'relay attempt refused');
  const listed = await swaks(['--server', `127.0.0.1:${serve.ports.mx}`, '--local-interface', LISTED, '--from', 'a@example.net', '--to', 'u@local.test', '--quit-after', 'RCPT']);
  assert.notEqual(listed.code, 0, `a listed client is refused: ${explain(listed)}`);
  // A failed AUTH on submission.
  const auth = await swaks(['--server', `127.0.0.1:${serve.ports.submission}`, '-tls', '--auth', 'PLAIN', '--auth-user', 'nobody@local.test', '--auth-password', 'wrong', '--quit-after', 'AUTH']);
  assert.notEqual(auth.code, 0, 'wrong password refused');
  // A DNS query to the ORDB (not listed: NXDOMAIN).
  const resolver = new dnsPromises.Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers([`127.0.0.1:${ordbPort}`]);
  await assert.rejects(resolver.resolve4('9.0.0.127.relays.localhost'), { code: 'ENOTFOUND' });

  // Deliveries run in the background: wait for both.
  let now = await scrape();
  const deadline = Date.now() + 15_000;
  while (value(now, 'relayguard_delivery_attempts_total', { outcome: 'delivered', destination: 'local' }) - value(before, 'relayguard_delivery_attempts_total', { outcome: 'delivered', destination: 'local' }) < 2) {
    assert.ok(Date.now() < deadline, 'two deliveries to the discard transport show in relayguard_delivery_attempts_total');
    await new Promise((r) => setTimeout(r, 200));
    now = await scrape();
  }
  const d = (name: string, labels: Record<string, string> = {}): number => value(now, name, labels) - value(before, name, labels);
  assert.equal(d('relayguard_messages_accepted_total'), 2);
  assert.equal(d('relayguard_messages_accepted_recipients_total'), 2);
  assert.ok(d('relayguard_messages_accepted_bytes_total') >= 2 * 3000, `bytes: ${d('relayguard_messages_accepted_bytes_total')}`);
  assert.equal(d('relayguard_accept_latency_seconds_count'), 2);
  assert.ok(d('relayguard_accept_latency_seconds_sum') > 0);
  assert.equal(d('relayguard_delivery_latency_seconds_count'), 2);
  assert.equal(d('relayguard_relay_decisions_total', { action: 'local', rule: 'local-domain' }), 2);
  assert.equal(d('relayguard_relay_decisions_total', { action: 'reject', rule: 'dnsbl' }), 1);
  const rejects = now.get('relayguard_relay_decisions_total')!.samples.filter((s) => s.labels['action'] === 'reject' && s.labels['rule'] !== 'dnsbl');
  assert.ok(rejects.some((s) => s.value >= 1), `the relay attempt is counted under its rule: ${JSON.stringify(rejects)}`);
  assert.ok(d('relayguard_dnsbl_lookups_total', { zone: 'bl.test', result: 'not-listed' }) >= 1);
  assert.ok(d('relayguard_dnsbl_lookups_total', { zone: 'bl.test', result: 'listed' }) >= 1); // the listed client (and 127.0.0.2, the test point, if looked up)
  assert.equal(d('relayguard_smtp_auth_total', { result: 'failure' }), 1);
  assert.equal(d('relayguard_ordb_dns_queries_total', { rcode: 'nxdomain' }), 1);
  assert.ok(d('relayguard_smtp_sessions_total', { listener: 'mx' }) >= 4);
  assert.ok(d('relayguard_smtp_commands_total') >= 4 * 3);
  assert.ok(d('relayguard_smtp_replies_total', { class: '2xx' }) >= 10);
  assert.ok(d('relayguard_smtp_replies_total', { class: '3xx' }) >= 2, 'two 354s');
  assert.ok(d('relayguard_smtp_replies_total', { class: '5xx' }) >= 3, 'relay, DNSBL and AUTH refusals');
  assert.ok(value(now, 'process_cpu_seconds_total') > 0);

  // Every metric the Grafana dashboard uses exists in this scrape (the audit's gauge once an audit has run).
  const audited = await http('POST', '/api/self-audit/run', { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, '{"wait":true}');
  assert.equal(audited.status, 200, audited.body);
  now = await scrape();
  const dash = JSON.parse(readFileSync(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
  const names = new Set<string>();
  for (const p of dash.panels) for (const t of p.targets ?? []) for (const m of t.expr.matchAll(/\b((?:relayguard|process|nodejs)_[a-z0-9_]+)\b/g)) names.add(m[1]!);
  assert.ok(names.size >= 20, `${names.size} metric names in the dashboard`);
  const exposed = new Set<string>();
  for (const f of now.values()) for (const s of f.samples) exposed.add(s.name);
  const missing = [...names].filter((n) => !exposed.has(n));
  assert.deepEqual(missing, [], 'metrics of docs/grafana-dashboard.json missing from /metrics');
});

test('/api/overview: the live charts\' data shows the traffic; the home page carries the charts, their script and uPlot from /assets', async () => {
  assert.equal((await http('GET', '/api/overview')).status, 401);
  assert.equal((await authed('/api/overview?minutes=0')).status, 400);
  assert.equal((await authed('/api/overview?minutes=abc')).status, 400);
  const r = await authed('/api/overview?minutes=60');
  assert.equal(r.status, 200, r.body);
  const data = JSON.parse(r.body);
  assert.equal(data.stepSeconds, 60);
  assert.equal(data.partial, true);
  assert.ok(data.t.length >= 1);
  const total = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  assert.ok(total(data.messages.in) >= 2, JSON.stringify(data.messages));
  assert.ok(total(data.messages.delivered) >= 2, JSON.stringify(data.messages));
  assert.ok(total(data.refusals['dnsbl'] ?? []) >= 1, JSON.stringify(data.refusals));
  assert.ok(total(data.connections.sessions) >= 4, JSON.stringify(data.connections));
  assert.ok(data.dns.ordbQueries.at(-1) !== null, 'the ORDB runs: its query rate is a number');
  for (const state of ['queued', 'deferred', 'hold', 'corrupt']) assert.ok(Array.isArray(data.queue[state]), state);

  const home = await authed('/');
  assert.equal(home.status, 200);
  assert.match(home.body, /<section id="overview"/);
  assert.match(home.body, /<script type="module" src="\/assets\/overview\.js"><\/script>/);
  assert.doesNotMatch(home.body, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
  assert.match(String(home.headers['content-security-policy']), /script-src 'self'/);
  for (const [path, type, marker] of [
    ['/assets/overview.js', /^text\/javascript/, /from '\/assets\/uPlot\.esm\.js'/],
    ['/assets/uPlot.esm.js', /^text\/javascript/, /export \{ uPlot as default \}|export default/],
    ['/assets/uPlot.min.css', /^text\/css/, /\.uplot/],
    ['/assets/overview.css', /^text\/css/, /\.charts/],
  ] as const) {
    const a = await http('GET', path);
    assert.equal(a.status, 200, path);
    assert.match(String(a.headers['content-type']), type, path);
    assert.match(a.body, marker, path);
  }
});
