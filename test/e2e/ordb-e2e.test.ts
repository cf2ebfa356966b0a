/**
 * The end-to-end test, everything on 127.0.0.0/8:
 *
 *   a private Postfix, open relay for the tester's address 127.0.0.2, listening on 127.0.0.1 and 127.0.0.5 and
 *   sending from 127.0.0.5 (smtp_bind_address); local.test is one of its relay domains, routed to relayguard.
 *
 *   1. 127.0.0.5 is submitted to the ORDB workflow (startOrdb, the production wiring: the real tester in proof mode
 *      with its built-in sink for probes.test, which Postfix relays to), proved open and listed;
 *   2. mail handed to Postfix for user@local.test is relayed from 127.0.0.5 to a relayguard relay that consults the
 *      zone: refused at RCPT with 554 5.7.1 ... blocked using relays.test (Postfix logs the bounce);
 *   3. Postfix is closed (mynetworks no longer holds the tester), a delisting request makes the workflow retest it:
 *      CLOSED, delisted;
 *   4. the same mail is accepted by the relay again.
 *
 * Needs root and the Debian postfix package: missing, the test fails (never skips).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promises as dnsPromises } from 'node:dns';
import { parseConfig } from '../../src/config/load.ts';
import { MemoryLogger } from '../../src/core/log.ts';
import { DnsblClient, ordbEvidence } from '../../src/dnsbl/index.ts';
import { startOrdb, type RunningOrdb } from '../../src/cli/ordb-service.ts';
import { hasBinary, startPostfix, type PostfixInstance } from '../../src/testing/postfix.ts';
import { freePort } from '../../src/testing/ports.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import type { RunResult } from '../../src/tester/index.ts';
import { reconfigurePostfix, startGatedRelay, waitFor, type GatedRelay } from './ordb-helpers.ts';

const TESTER = '127.0.0.2';
const RELAY_HOST = '127.0.0.5';
const PROBE_DOMAIN = 'probes.test';

let dataDir: string;
let ordb: RunningOrdb;
let relay: GatedRelay;
let postfix: PostfixInstance;
const logger = new MemoryLogger();

/** Hands one message for user@local.test to Postfix (which relays it to relayguard from 127.0.0.5). */
async function sendThroughPostfix(tag: string): Promise<void> {
  const c = await p1(postfix.port, { localAddress: TESTER });
  try {
    assert.equal((await c.cmd('MAIL FROM:<>')).code, 250);
    const r = await c.cmd('RCPT TO:<user@local.test>');
    assert.equal(r.code, 250, `Postfix takes mail for its relay domain local.test: ${r.lines.join(' ')}`);
    assert.equal((await c.cmd('DATA')).code, 354);
    const end = await c.cmd(`Subject: ${tag}\r\nMessage-ID: <${tag}@e2e.test>\r\n\r\n${tag}\r\n.`);
    assert.equal(end.code, 250, end.lines.join(' '));
  } finally {
    await c.cmd('QUIT').catch(() => {});
    c.close();
  }
}

async function zoneLookup(ip: string): Promise<string> {
  const r = new dnsPromises.Resolver({ timeout: 1000, tries: 1 });
  r.setServers([`127.0.0.1:${ordb.server.port}`]);
  return (await new DnsblClient({ resolver: r, minTtlMs: 0, maxTtlMs: 0, negativeTtlMs: 0 }).lookup(ip, 'relays.test')).kind;
}

before(async () => {
  assert.ok(process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix'), 'this test needs root and the Debian postfix package (.ci/run installs it)');
  dataDir = mkdtempSync(join(tmpdir(), 'relayguard-ordb-e2e-'));
  const sinkPort = await freePort();
  const postfixPort = await freePort();
  const config = parseConfig({
    dataDir, hostname: 'ordb.local.test', trustedNetworks: ['127.0.0.1/32'],
    dnsbl: { zone: 'relays.test', listen: { address: '127.0.0.1', port: 0 } },
  });
  ordb = await startOrdb(config, logger, {
    settings: {
      probeDomain: PROBE_DOMAIN, sink: { address: '127.0.0.1', port: sinkPort }, probeWaitMs: 5000,
      testPorts: [{ port: postfixPort, role: 'mx' }], sourceAddress: TESTER, allowPrivateTargets: true, ttlSeconds: 1, schedulerIntervalMs: 0, zonePollMs: 200,
    },
  });
  relay = await startGatedRelay({ dnsPort: ordb.server.port, zones: [{ zone: 'relays.test', weight: 1 }], timeoutMs: 2000 });
  postfix = await startPostfix({
    mode: 'relay-to',
    port: postfixPort,
    relayHost: `127.0.0.1:${sinkPort}`,
    relayDomains: ['peers.test', 'local.test'],
    extraMain: {
      mynetworks: `${TESTER}/32`,
      smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
      default_transport: `smtp:[127.0.0.1]:${sinkPort}`,
      transport_maps: `inline:{ local.test=smtp:[127.0.0.1]:${relay.ports.mx} }`,
      proxy_interfaces: RELAY_HOST, // its own address too (inet_interfaces wants a real interface address)
      smtp_bind_address: RELAY_HOST,
    },
  });
  // The relay host also listens on its own address, where the tester finds it.
  await reconfigurePostfix(postfix.configDir, {}, [`${RELAY_HOST}:${postfix.port}/inet = ${RELAY_HOST}:${postfix.port} inet n - n - - smtpd`]);
  await waitFor(async () => {
    try {
      const c = await p1(postfix.port, { host: RELAY_HOST, localAddress: TESTER });
      c.close();
      return true;
    } catch {
      return false;
    }
  }, `Postfix on ${RELAY_HOST}:${postfix.port}`, 20_000);
});

after(async () => {
  await Promise.all([postfix?.stop(), relay?.close(), ordb?.stop()]);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('ORDB end to end: Postfix open relay -> proved -> listed -> refused -> closed -> retested -> delisted -> accepted', () => {
  it('the open Postfix is submitted, proved open by the tester and listed', { timeout: 240_000 }, async () => {
    const s = ordb.workflow.submit(RELAY_HOST, 'e2e');
    assert.ok(s.ok && s.status === 'queued', JSON.stringify(s));
    const [o] = await ordb.runDue();
    assert.ok(o, 'one test ran');
    const l = ordb.store.get(RELAY_HOST)!;
    const ev = ordbEvidence(l)!;
    assert.equal(o.action, 'list', `${o.detail}\n${JSON.stringify(ev.report).slice(0, 2000)}`);
    assert.equal(l.state, 'listed');
    assert.equal(ev.proved, true);
    assert.equal(ev.mode, 'prove');
    const report = ev.report as RunResult;
    assert.equal(report.schema, 'relayguard-tester/2');
    assert.equal(report.verdict, 'OPEN');
    assert.equal(report.targets[0]!.address, RELAY_HOST);
    assert.equal(report.targets[0]!.sourceAddress, TESTER);
    assert.equal(await zoneLookup(RELAY_HOST), 'listed');
  });

  it('mail relayed by the listed Postfix is refused by the relayguard relay at RCPT (554 5.7.1, zone named)', { timeout: 60_000 }, async () => {
    await sendThroughPostfix('while-listed');
    const blocked = await waitFor(() => relay.logs.find((l) => l.msg === 'relay decision' && l.fields['rule'] === 'dnsbl'), 'the relay to refuse Postfix');
    assert.equal(blocked.fields['client_ip'], RELAY_HOST, 'the relay saw Postfix\'s sending address');
    assert.equal(blocked.fields['zone'], 'relays.test');
    const log = await waitFor(async () => {
      const text = await postfix.readLog();
      return /status=bounced/.test(text) ? text : undefined;
    }, 'Postfix to log the bounce');
    assert.match(log, new RegExp(`554 5\\.7\\.1 Service unavailable; Client host \\[${RELAY_HOST.replace(/\./g, '\\.')}\\] blocked using relays\\.test`));
    assert.ok(!relay.logs.some((l) => l.msg === 'message accepted'), 'nothing was queued');
  });

  it('Postfix is closed; a delisting request retests it: CLOSED, delisted', { timeout: 240_000 }, async () => {
    await reconfigurePostfix(postfix.configDir, { mynetworks: '127.0.0.9/32' });
    // wait until the reloaded smtpd refuses the tester
    await waitFor(async () => {
      const c = await p1(postfix.port, { host: RELAY_HOST, localAddress: TESTER });
      try {
        await c.cmd('MAIL FROM:<x@example.org>');
        return (await c.cmd(`RCPT TO:<x@${PROBE_DOMAIN}>`)).code >= 500;
      } finally {
        c.close();
      }
    }, 'Postfix to stop relaying for the tester', 30_000);
    const d = ordb.workflow.requestDelisting(RELAY_HOST, 'postmaster@local.test');
    assert.ok(d.ok, JSON.stringify(d));
    const [o] = await ordb.runDue();
    assert.ok(o);
    assert.equal(o.action, 'delist', o.detail);
    assert.equal(o.verdict, 'CLOSED');
    assert.equal(ordb.store.get(RELAY_HOST)!.state, 'delisted');
    assert.equal(await zoneLookup(RELAY_HOST), 'not-listed');
    assert.deepEqual(ordb.store.history(RELAY_HOST).map((h) => h.event), ['submitted', 'listed', 'updated', 'delisted']);
  });

  it('the relay accepts mail from Postfix again', { timeout: 60_000 }, async () => {
    await new Promise((r) => setTimeout(r, 1100)); // the listing's 1 s TTL
    await sendThroughPostfix('after-delisting');
    const accepted = await waitFor(() => relay.logs.find((l) => l.msg === 'message accepted'), 'the relay to accept Postfix\'s mail');
    assert.equal(accepted.fields['client_ip'], RELAY_HOST);
    assert.equal(relay.logs.filter((l) => l.msg === 'relay decision' && l.fields['rule'] === 'dnsbl').length, 1, 'refused once, while listed');
    const log = await waitFor(async () => {
      const text = await postfix.readLog();
      return /to=<user@local\.test>.*status=sent/.test(text) ? text : undefined;
    }, 'Postfix to log the delivery');
    assert.match(log, /relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+.*status=sent/);
  });
});
