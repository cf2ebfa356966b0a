/**
 * The web tester against real Postfix instances on loopback, started through the HTTP API of a real
 * `relayguard serve` (web.tester.allowTargets 127.0.0.2/32, the tester speaking from 127.0.0.3, proof mode with its
 * sink on 127.0.0.1):
 *   - a Postfix that is an open relay for 127.0.0.3 and delivers everything to the web tester's sink: OPEN, proved,
 *     with the client address Postfix wrote into its Received header;
 *   - a default Postfix (permit_mynetworks for 127.0.0.1 only, defer_unauth_destination): CLOSED, never OPEN.
 * For each, the event stream brings one `trick` event per trick before `done`, whose verdict is the report's.
 * Missing peers fail with a clear message (never skip). Nothing leaves loopback.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { hasBinary, startPostfix, type PostfixInstance } from '../../src/testing/postfix.ts';
import { freePort } from '../../src/testing/ports.ts';
import { parseEvents, type SseEvent } from '../../src/testing/sse.ts';

const TARGET = '127.0.0.2';
const TESTER = '127.0.0.3';
const PROBE_DOMAIN = 'probes.test';

let serve: ServeProcess;
let openPostfix: PostfixInstance;
let closedPostfix: PostfixInstance;
let port = 0;
let token = '';

function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: string; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port, method, path,
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

function follow(id: string): Promise<SseEvent[]> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: `/api/tester/runs/${id}/events`, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => resolve(parseEvents(b)));
    });
    req.on('error', reject);
    req.end();
  });
}

function cli(args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
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

before(async () => {
  assert.ok(process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix'), 'the Postfix peers need root and the Debian postfix package (scripts/peers.sh installs it)');
  const sinkPort = await freePort();
  [serve, openPostfix, closedPostfix] = await Promise.all([
    startServe({
      config: {
        web: {
          enabled: true, port: 0,
          tester: { allowTargets: [`${TARGET}/32`], sourceAddress: TESTER, proof: { probeDomain: PROBE_DOMAIN, sink: { address: '127.0.0.1', port: sinkPort }, wait: '8s' } },
        },
      },
    }),
    startPostfix({
      mode: 'relay-to', relayHost: `127.0.0.1:${sinkPort}`, listenAddresses: [TARGET],
      extraMain: { mynetworks: `${TESTER}/32`, smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination', default_transport: `smtp:[127.0.0.1]:${sinkPort}` },
    }),
    startPostfix({
      mode: 'discard', listenAddresses: [TARGET],
      extraMain: { mynetworks: '127.0.0.1/32', smtpd_relay_restrictions: 'permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination' },
    }),
  ]);
  const line = serve.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin');
  assert.ok(line);
  port = Number(line['port']);
  assert.equal((await cli(['admin', 'add', 'alice', '--password-stdin'], 'correct horse battery\n')).code, 0);
  const t = await cli(['admin', 'token', 'add', 'ci', '--admin', 'alice']);
  assert.equal(t.code, 0, t.err);
  token = t.out.trim();
});

after(async () => {
  await Promise.all([serve?.stop(), openPostfix?.stop(), closedPostfix?.stop()]);
  await serve?.cleanup();
});

async function run(body: Record<string, unknown>): Promise<{ report: any; events: SseEvent[] }> {
  const start = await api('POST', '/api/tester/runs', body);
  assert.equal(start.status, 202, start.body);
  const events = await follow(start.json.id);
  const report = (await api('GET', `/api/tester/runs/${start.json.id}/report`)).json;
  const tricks = report.targets.flatMap((t: any) => t.ports.flatMap((p: any) => p.transports.flatMap((tr: any) => tr.tricks)));
  assert.equal(events[0]!.event, 'run');
  assert.equal(events.at(-1)!.event, 'done');
  assert.equal(events.filter((e) => e.event === 'trick').length, tricks.length, 'one trick event per trick, before done');
  assert.equal(events.at(-1)!.data.verdict, report.verdict);
  return { report, events };
}

test('Postfix open for the tester, relaying into the web tester\'s sink: OPEN, proved, through the API', async () => {
  const { report } = await run({ host: TARGET, ports: [`${openPostfix.port}:mx`], mode: 'prove', starttls: false, timeoutSeconds: 5 });
  assert.equal(report.verdict, 'OPEN', `${report.reason}: ${report.detail}`);
  assert.equal(report.reason, 'proved');
  const v02 = report.targets[0].ports[0].transports[0].tricks.find((t: any) => t.id === 'V02');
  assert.equal(v02.verdict, 'OPEN');
  assert.equal(v02.proof.arrived, true);
  assert.equal(v02.proof.relaySawClient, TESTER, 'Postfix recorded the web tester\'s address');
  assert.ok(v02.proof.received.some((h: string) => h.includes('(Postfix')), v02.proof.received.join('\n'));
});

test('a default Postfix (defer_unauth_destination): CLOSED, never OPEN, through the API', async () => {
  const { report, events } = await run({ host: TARGET, ports: [`${closedPostfix.port}:mx`], timeoutSeconds: 5 });
  assert.equal(report.verdict, 'CLOSED', `${report.reason}: ${report.detail}`);
  assert.match(report.detail, /454 4\.7\.1 .*Relay access denied/);
  assert.ok(!events.some((e) => e.event === 'trick' && e.data.verdict === 'OPEN'));
  assert.ok(events.some((e) => e.event === 'trick' && e.data.lines.some((l: any) => l.dir === 'S' && /^454 4\.7\.1 .*Relay access denied/.test(l.line))), 'a trick\'s dialogue has Postfix\'s refusal');
  const transcript = report.targets[0].ports[0].transports[0].transcripts[0].lines;
  assert.match(transcript[0].line, new RegExp(`^220 .*Postfix-peer ${closedPostfix.bannerToken}`), 'the report keeps the whole dialogue, banner included');
});
