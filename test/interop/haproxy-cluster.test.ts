/**
 * docs/cluster.md's HAProxy configuration, run as written (only the bind ports and server addresses replaced by
 * loopback ones) with Debian's HAProxy 2.6 in front of two real `relayguard serve` nodes (SQLite, each its own
 * dataDir, listeners with proxyProtocol, trustedProxies = HAProxy's address 127.0.0.1):
 *   - a stranger (127.0.0.2) through HAProxy: mail for a local domain accepted, relaying refused with 554 5.7.1,
 *     and the relay decisions logged with 127.0.0.2 (from the PROXY v2 header), never HAProxy's address;
 *   - a client in trustedNetworks (127.0.0.3, by its real address) may relay;
 *   - sessions are spread over both nodes;
 *   - the health check is HTTP (GET /health on each node's public web listener): no SMTP session from the balancer;
 *   - a node killed with SIGKILL is marked DOWN by the health check and new sessions all go to the survivor.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { docsHaproxyConfig, substitute } from '../../src/testing/cluster-rig.ts';
import { startHaproxy, type HaproxyInstance } from '../../src/testing/haproxy.ts';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { freePort } from '../../src/testing/ports.ts';
import { p1, type RawSmtpClient } from '../../src/testing/smtp-client.ts';

const STRANGER = '127.0.0.2';
const TRUSTED = '127.0.0.3';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));


interface Node { serve: ServeProcess; mx: number; submission: number; web: number }
const nodes: Node[] = [];
let haproxy: HaproxyInstance;
const front = { mx: 0, submission: 0 };

before(async () => {
  for (let i = 0; i < 2; i++) {
    const mx = await freePort();
    const submission = await freePort();
    const web = await freePort();
    const serve = await startServe({
      ports: { mx, submission, submissions: await freePort() },
      config: {
        hostname: 'mx.local.test', // one name for the service on every node (docs/cluster.md)
        trustedProxies: ['127.0.0.1/32'],
        trustedNetworks: [`${TRUSTED}/32`],
        dnsbl: { enabled: false },
        // HAProxy's health check asks /health on the public web listener (docs/cluster.md).
        web: { enabled: true, port: 0, public: { address: '127.0.0.1', port: web } },
        listeners: [
          { name: 'mx', role: 'mx', address: '127.0.0.1', port: mx, tls: 'starttls', proxyProtocol: true },
          { name: 'submission', role: 'submission', address: '127.0.0.1', port: submission, tls: 'starttls', proxyProtocol: true },
        ],
      },
    });
    nodes.push({ serve, mx, submission, web });
  }
  front.mx = await freePort();
  front.submission = await freePort();
  const config = substitute(docsHaproxyConfig(), [
    ['bind :25\n', `bind 127.0.0.1:${front.mx}\n`],
    ['bind :587\n', `bind 127.0.0.1:${front.submission}\n`],
    // Both nodes on 127.0.0.1: each server line gets its node's web port for the check (`port` overrides the
    // default-server's 8025).
    ['192.0.2.11:25\n', `127.0.0.1:${nodes[0]!.mx} port ${nodes[0]!.web}\n`],
    ['192.0.2.12:25\n', `127.0.0.1:${nodes[1]!.mx} port ${nodes[1]!.web}\n`],
    ['192.0.2.11:587\n', `127.0.0.1:${nodes[0]!.submission} port ${nodes[0]!.web}\n`],
    ['192.0.2.12:587\n', `127.0.0.1:${nodes[1]!.submission} port ${nodes[1]!.web}\n`],
  ]);
  haproxy = await startHaproxy({ config: `global\n    maxconn 4096\n\n${config}`, waitFor: [front.mx, front.submission] });
  // Both nodes UP by their health checks before the test starts.
  const deadline = Date.now() + 20_000;
  for (;;) {
    const up = (await haproxy.stats()).filter((s) => s.proxy === 'relayguard_mx' && /^(mx1|mx2)$/.test(s.server) && s.status.startsWith('UP'));
    if (up.length === 2) break;
    if (Date.now() > deadline) throw new Error(`nodes not UP: ${JSON.stringify(await haproxy.stats())}\n${haproxy.output()}`);
    await sleep(100);
  }
});

after(async () => {
  await haproxy?.stop();
  for (const n of nodes) {
    await n.serve.stop();
    await n.serve.cleanup();
  }
});

async function via(from: string): Promise<RawSmtpClient> {
  return p1(front.mx, { localAddress: from, helo: from === STRANGER ? 'stranger.example' : 'trusted.example' });
}

const sessionsFrom = (n: Node, ip: string): number => n.serve.logs.filter((l) => l['msg'] === 'session closed' && l['client_ip'] === ip).length;

test('haproxy (docs/cluster.md) in front of two nodes: a stranger gets local mail in, no relay, and is logged by its real address', { timeout: 60_000 }, async () => {
  const c = await via(STRANGER);
  try {
    assert.equal((await c.cmd('MAIL FROM:<someone@remote.example>')).code, 250);
    const local = await c.cmd('RCPT TO:<u@local.test>');
    assert.equal(local.code, 250, local.lines.join(' '));
    const relay = await c.cmd('RCPT TO:<victim@elsewhere.example>');
    assert.equal(relay.code, 554, relay.lines.join(' '));
    assert.match(relay.lines.join(' '), /^554 5\.7\.1 /);
    assert.equal((await c.cmd('DATA')).code, 354);
    const end = await c.cmd('Subject: through haproxy\r\nMessage-ID: <hap-1@stranger.example>\r\n\r\nhello\r\n.');
    assert.equal(end.code, 250, end.lines.join(' '));
    await c.cmd('QUIT');
  } finally {
    c.close();
  }
  await sleep(200);
  const decisions = nodes.flatMap((n) => n.serve.logs.filter((l) => l['msg'] === 'relay decision'));
  const refusal = decisions.find((l) => l['action'] === 'reject' && String(l['reply'] ?? '').startsWith('554 5.7.1'));
  assert.ok(refusal, `no refusal logged: ${JSON.stringify(decisions)}`);
  assert.equal(refusal['client_ip'], STRANGER, 'the relay decision names HAProxy, not the client');
  assert.ok(decisions.every((l) => l['client_ip'] !== '127.0.0.1'), 'a relay decision about the balancer\'s address');
  const accepted = nodes.flatMap((n) => n.serve.logs.filter((l) => l['msg'] === 'message accepted'));
  assert.ok(accepted.some((l) => l['client_ip'] === STRANGER), JSON.stringify(accepted));
  // The checks went to /health, not to the SMTP ports: no session of the balancer's own (PROXY LOCAL, not proxied)
  // in either node's log.
  for (const n of nodes) {
    // A connection gone before its address was read (client_ip "", nothing sent) is a stray probe of the port by
    // something else on the machine (seen once in a full run), never a balancer's check: HAProxy's connections keep
    // their address. Those are not counted.
    const own = n.serve.logs.filter((l) => l['msg'] === 'session closed' && l['proxied'] === false && !(l['client_ip'] === '' && l['bytes_in'] === 0));
    assert.equal(own.length, 0, `an SMTP health-check session: ${JSON.stringify(own[0])}`);
  }
});

test('haproxy: a client in trustedNetworks (its real address, through the balancer) may relay', { timeout: 30_000 }, async () => {
  const c = await via(TRUSTED);
  try {
    assert.equal((await c.cmd('MAIL FROM:<me@trusted.example>')).code, 250);
    const r = await c.cmd('RCPT TO:<friend@elsewhere.example>');
    assert.equal(r.code, 250, r.lines.join(' '));
    await c.cmd('QUIT');
  } finally {
    c.close();
  }
});

test('haproxy: sessions are spread over both nodes; a node killed is taken out by the health check', { timeout: 90_000 }, async () => {
  const before = nodes.map((n) => sessionsFrom(n, STRANGER));
  for (let i = 0; i < 10; i++) {
    const c = await via(STRANGER);
    assert.equal((await c.cmd('NOOP')).code, 250);
    await c.cmd('QUIT');
    c.close();
  }
  await sleep(300);
  const spread = nodes.map((n, i) => sessionsFrom(n, STRANGER) - before[i]!);
  assert.equal(spread[0]! + spread[1]!, 10, `sessions per node ${spread}`);
  assert.ok(spread[0]! > 0 && spread[1]! > 0, `all sessions on one node: ${spread}`);

  // Kill node 1: the health check marks it DOWN; every new session goes to node 2.
  await nodes[0]!.serve.kill9();
  const deadline = Date.now() + 20_000;
  for (;;) {
    const s = (await haproxy.stats()).find((x) => x.proxy === 'relayguard_mx' && x.server === 'mx1');
    if (s?.status.startsWith('DOWN')) break;
    if (Date.now() > deadline) throw new Error(`mx1 not DOWN: ${JSON.stringify(s)}\n${haproxy.output()}`);
    await sleep(100);
  }
  assert.match(haproxy.output(), /Server relayguard_mx\/mx1 is DOWN/);
  const survivorBefore = sessionsFrom(nodes[1]!, STRANGER);
  for (let i = 0; i < 6; i++) {
    const c = await via(STRANGER);
    assert.equal((await c.cmd('NOOP')).code, 250);
    await c.cmd('QUIT');
    c.close();
  }
  await sleep(300);
  assert.equal(sessionsFrom(nodes[1]!, STRANGER) - survivorBefore, 6, 'a session did not reach the survivor');
});
