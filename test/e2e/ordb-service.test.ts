/**
 * The ORDB service and the relay's DNSBL gate together, with a scripted tester (the real tester against a real
 * Postfix is in ordb-e2e.test.ts): submit -> listed -> the relay refuses the client at RCPT with 554 5.7.1 ->
 * delisting request -> retest CLOSED -> delisted -> the relay accepts it again. Also: a change made by another
 * process (the CLI) reaches the DNS server; trusted and authenticated clients pass; a zone whose lookups fail and a
 * DNS server that is gone never cause a 5xx.
 */
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promises as dnsPromises } from 'node:dns';
import { parseConfig } from '../../src/config/load.ts';
import { MemoryLogger } from '../../src/core/log.ts';
import { DnsblClient, ListingStore, type HostTestResult } from '../../src/dnsbl/index.ts';
import { ordbSettings, startOrdb, type RunningOrdb } from '../../src/cli/ordb-service.ts';
import { dnsblCheckFromConfig as dnsblGateFromConfig } from '../../src/relay/index.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import { startGatedRelay, waitFor, type GatedRelay } from './ordb-helpers.ts';

const LISTED_IP = '127.0.0.5';
const OTHER_IP = '127.0.0.6';

let dataDir: string;
let ordb: RunningOrdb;
let relay: GatedRelay;
let ordbStopped = false;
const logger = new MemoryLogger();
const script: HostTestResult[] = [];
const calls: { ip: string; prove: boolean }[] = [];

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'relayguard-ordb-svc-'));
  const config = parseConfig({
    dataDir, hostname: 'ordb.local.test', trustedNetworks: ['127.0.0.1/32'],
    dnsbl: { zone: 'relays.test', listen: { address: '127.0.0.1', port: 0 } },
  });
  ordb = await startOrdb(config, logger, {
    prove: true,
    testHost: async (ip, { prove }) => {
      calls.push({ ip, prove });
      const r = script.shift();
      if (!r) throw new Error('no scripted result');
      return r;
    },
    settings: { allowPrivateTargets: true, ttlSeconds: 1, schedulerIntervalMs: 0, zonePollMs: 200 },
  });
  relay = await startGatedRelay({
    dnsPort: ordb.server.port,
    // other.test is not served by the ORDB's server: REFUSED, i.e. a failing zone with a heavy weight
    zones: [{ zone: 'relays.test', weight: 1 }, { zone: 'other.test', weight: 5 }],
    users: [{ name: 'alice', password: 'correct horse', addresses: ['alice@example.org'] }],
  });
});

after(async () => {
  await relay?.close();
  if (!ordbStopped) await ordb?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function rcptFrom(localAddress: string, rcpt = 'user@local.test'): Promise<{ code: number; text: string }> {
  const c = await p1(relay.ports.mx, { localAddress });
  try {
    const m = await c.cmd('MAIL FROM:<sender@example.org>');
    assert.equal(m.code, 250, m.text);
    const r = await c.cmd(`RCPT TO:<${rcpt}>`);
    return { code: r.code, text: r.lines.join(' ') };
  } finally {
    await c.cmd('QUIT').catch(() => {});
    c.close();
  }
}

function dnsClient(): DnsblClient {
  const r = new dnsPromises.Resolver({ timeout: 1000, tries: 1 });
  r.setServers([`127.0.0.1:${ordb.server.port}`]);
  return new DnsblClient({ resolver: r, minTtlMs: 0, negativeTtlMs: 0, maxTtlMs: 0 });
}

describe('ORDB service + relay DNSBL gate', () => {
  it('the health check finds relays.test healthy; the failing zone stays enabled (its lookups fail open)', () => {
    const z = Object.fromEntries(relay.gate.client.zones.map((h) => [h.zone, h]));
    assert.equal(z['relays.test']!.status, 'healthy');
    assert.equal(z['other.test']!.status, 'unreachable');
    assert.equal(z['other.test']!.enabled, true);
  });

  it('before any listing: accepted (the failing weight-5 zone does not block)', async () => {
    assert.equal((await rcptFrom(LISTED_IP)).code, 250);
  });

  it('submitted, proved open, listed: the relay refuses the client at RCPT with 554 5.7.1 naming the zone and reason', async () => {
    const s = ordb.workflow.submit(LISTED_IP, 'e2e');
    assert.ok(s.ok && s.status === 'queued');
    script.push({ verdict: 'OPEN', proved: true, reason: 'proved', detail: 'V02: the probe arrived', mode: 'prove', report: { schema: 'relayguard-tester/1' } });
    const [o] = await ordb.runDue();
    assert.equal(o!.action, 'list');
    assert.deepEqual(calls, [{ ip: LISTED_IP, prove: true }]);
    const dns = await dnsClient().lookup(LISTED_IP, 'relays.test');
    assert.ok(dns.kind === 'listed', JSON.stringify(dns));
    assert.deepEqual(dns.codes, ['127.0.0.2']);
    assert.equal(dns.ttl, 1);

    const r = await rcptFrom(LISTED_IP);
    assert.equal(r.code, 554);
    assert.equal(r.text, `554 5.7.1 Service unavailable; Client host [${LISTED_IP}] blocked using relays.test; Open relay, see http://127.0.0.1:8025/dnsbl/lookup?ip=${LISTED_IP}`);
    const log = relay.logs.find((l) => l.msg === 'relay decision' && l.fields['rule'] === 'dnsbl');
    assert.ok(log);
    assert.equal(log.fields['client_ip'], LISTED_IP);
    assert.equal(log.fields['zone'], 'relays.test');
    assert.equal(log.level, 'warn');
  });

  it('trusted networks and authenticated users are never blocked', async () => {
    assert.equal((await rcptFrom('127.0.0.1', 'someone@example.net')).code, 250, 'trusted 127.0.0.1 relays');
    const c = await p1(relay.ports.submission, { localAddress: LISTED_IP });
    try {
      await c.cmd('STARTTLS');
      await c.startTls({ rejectUnauthorized: false });
      assert.equal((await c.cmd('EHLO client.test')).code, 250);
      const auth = await c.cmd(`AUTH PLAIN ${Buffer.from('\0alice\0correct horse').toString('base64')}`);
      assert.equal(auth.code, 235, auth.text);
      assert.equal((await c.cmd('MAIL FROM:<alice@example.org>')).code, 250);
      const r = await c.cmd('RCPT TO:<friend@example.net>');
      assert.equal(r.code, 250, `an authenticated user on a listed address may submit: ${r.text}`);
    } finally {
      c.close();
    }
  });

  it('a change made by another process (the CLI) reaches the DNS server within the poll interval', async () => {
    const cli = ListingStore.open(join(dataDir, 'relayguard.db'));
    try {
      cli.add({ network: OTHER_IP, reason: 'listed from the CLI' });
    } finally { cli.close(); }
    await waitFor(async () => (await dnsClient().lookup(OTHER_IP, 'relays.test')).kind === 'listed', 'the CLI listing in DNS', 5000);
    const r = await rcptFrom(OTHER_IP);
    assert.equal(r.code, 554);
    assert.match(r.text, /blocked using relays\.test; listed from the CLI, see /);
  });

  it('delisting request -> retest CLOSED -> delisted -> accepted again once the TTL passed', async () => {
    const d = ordb.workflow.requestDelisting(LISTED_IP, 'owner@example.org');
    assert.ok(d.ok);
    script.push({ verdict: 'CLOSED', proved: false, reason: 'refused', detail: 'RCPT 554 5.7.1 Relay access denied', mode: 'prove', report: {} });
    const [o] = await ordb.runDue();
    assert.equal(o!.action, 'delist');
    assert.equal((await dnsClient().lookup(LISTED_IP, 'relays.test')).kind, 'not-listed');
    const r = await waitFor(async () => { const x = await rcptFrom(LISTED_IP); return x.code === 250 ? x : undefined; }, 'the relay to accept again', 5000);
    assert.equal(r.code, 250);
    assert.deepEqual(ordb.store.history(LISTED_IP).map((h) => h.event), ['submitted', 'listed', 'updated', 'delisted']);
  });

  it('the DNS server gone: the relay still accepts, never a 5xx', async () => {
    await ordb.stop();
    ordbStopped = true;
    relay.gate.client.clearCache();
    const t0 = Date.now();
    const r = await rcptFrom(OTHER_IP);
    assert.equal(r.code, 250, r.text);
    assert.ok(Date.now() - t0 < 5000);
    const failed = relay.logs.find((l) => l.msg === 'dnsbl lookup failed' && l.fields['zone'] === 'relays.test');
    assert.ok(failed, 'the failure is logged');
    assert.ok(['timeout', 'network'].includes(failed.fields['error'] as string), JSON.stringify(failed.fields));
  });
});

describe('configuration', () => {
  it('dnsblGateFromConfig: null without dnsblChecks; otherwise the configured zones, trusted networks honoured', async () => {
    assert.equal(dnsblGateFromConfig(parseConfig({ dataDir }), logger), null);
    const resolver = { resolve4: async () => [{ address: '127.0.0.2', ttl: 60 }], resolveTxt: async () => [['listed']] };
    const gate = dnsblGateFromConfig(parseConfig({ dataDir, trustedNetworks: ['192.0.2.0/24'], dnsblChecks: [{ zone: 'a.test', weight: 2 }] }), logger, { resolver })!;
    assert.deepEqual(gate.client.zones.map((z) => [z.zone, z.weight]), [['a.test', 2]]);
    assert.equal((await gate.check('198.51.100.1')).blocked, true);
    assert.equal((await gate.check('192.0.2.1')).blocked, false, 'trusted');
    assert.equal((await gate.check('198.51.100.1', { user: 'alice' })).blocked, false, 'authenticated');
  });

  it('ordbSettings: defaults from the configuration, overrides win', () => {
    const s = ordbSettings(parseConfig({ dataDir, dnsbl: { zone: 'bl.example.org' } }), { submissionsPerHour: 3 });
    assert.equal(s.zone, 'bl.example.org');
    assert.equal(s.databasePath, join(dataDir, 'relayguard.db'));
    assert.equal(s.probeDomain, null);
    assert.deepEqual(s.testPorts.map((p) => p.port), [25, 587, 465]);
    assert.equal(s.retestIntervalMs, 7 * 24 * 3_600_000);
    assert.equal(s.ttlSeconds, 2100);
    assert.equal(s.submissionsPerHour, 3);
    assert.equal(s.allowPrivateTargets, false);
  });
});

describe('NOTIFY at start (field report 1, M3)', () => {
  it('a change made while serve was down reaches the secondaries when the ORDB starts, not at their next refresh', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-ordb-notify-'));
    const secondary = createSocket('udp4');
    const seen: { opcode: number; name: string }[] = [];
    secondary.on('message', (m, r) => {
      seen.push({ opcode: (m.readUInt16BE(2) >> 11) & 0xf, name: String((dnsPacket.decode(m) as { questions?: { name: string }[] }).questions?.[0]?.name) });
      const ack = Buffer.from(m.subarray(0, 12));
      ack.writeUInt16BE(0x8000 | (4 << 11) | 0x0400, 2);
      ack.writeUInt32BE(0, 4);
      ack.writeUInt32BE(0, 8);
      secondary.send(ack, r.port, r.address);
    });
    await new Promise<void>((r) => secondary.bind(0, '127.0.0.1', () => r()));
    const config = parseConfig({
      dataDir: dir, hostname: 'ordb.local.test',
      dnsbl: { zone: 'relays.test', listen: { address: '127.0.0.1', port: 0 }, notify: [{ address: '127.0.0.1', port: secondary.address().port }], schedulerInterval: 0 },
    });
    const started = await startOrdb(config, new MemoryLogger(), { prove: false, testHost: async () => { throw new Error('not used'); } });
    try {
      await waitFor(() => seen.length > 0, 'a NOTIFY at start', 10_000);
      assert.equal(seen[0]!.opcode, 4, 'opcode NOTIFY');
      assert.equal(seen[0]!.name, 'relays.test');
    } finally {
      await started.stop();
      secondary.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
