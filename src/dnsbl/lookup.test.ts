import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.ts';
import { MemoryLogger } from '../core/log.ts';
import { startFakeDns, type FakeDns } from '../testing/fake-dns.ts';
import { DnsblServer } from './server.ts';
import { buildZone } from './zone.ts';
import { brokenAnswer, DnsblClient, queryName } from './lookup.ts';

let dns: FakeDns;

before(async () => {
  dns = await startFakeDns({
    zone: {
      // bl.test: healthy, lists 192.0.2.7 with a TXT, 192.0.2.8 with an error code, 192.0.2.9 outside 127/8
      '2.0.0.127.bl.test': { A: ['127.0.0.2'], TXT: ['test point'] },
      '7.2.0.192.bl.test': { A: ['127.0.0.2', '127.0.0.3'], TXT: [['Open relay, ', 'see http://bl.test/192.0.2.7']] },
      '8.2.0.192.bl.test': { A: ['127.255.255.254'] },
      '9.2.0.192.bl.test': { A: ['198.51.100.1'] },
      '10.2.0.192.bl.test': { mode: 'SERVFAIL' },
      '11.2.0.192.bl.test': { mode: 'TIMEOUT' },
      '12.2.0.192.bl.test': { A: ['127.0.0.1'] },
      '13.2.0.192.bl.test': { A: ['127.0.0.4'], modes: { TXT: 'TIMEOUT' } },
      // world.test lists everything, including 127.0.0.1
      '2.0.0.127.world.test': { A: ['127.0.0.2'] },
      '1.0.0.127.world.test': { A: ['127.0.0.2'] },
      '7.2.0.192.world.test': { A: ['127.0.0.2'] },
      // dead.test: no test point
      '7.2.0.192.dead.test': { A: ['127.0.0.2'] },
      // rewrite.test: a resolver rewriting NXDOMAIN to an ad server
      '2.0.0.127.rewrite.test': { A: ['203.0.113.80'] },
      // down.test: SERVFAIL for everything
      '2.0.0.127.down.test': { mode: 'SERVFAIL' },
      '1.0.0.127.down.test': { mode: 'SERVFAIL' },
      '7.2.0.192.down.test': { mode: 'SERVFAIL' },
    },
  });
});

after(async () => {
  await dns.close();
});

function client(options: { clock?: ManualClock; zones?: { zone: string; weight: number }[]; logger?: MemoryLogger; timeoutMs?: number } = {}): DnsblClient {
  return new DnsblClient({
    resolver: dns.resolver({ timeout: 200, tries: 1 }),
    zones: options.zones ?? [],
    clock: options.clock,
    logger: options.logger,
    timeoutMs: options.timeoutMs ?? 1000,
  });
}

describe('brokenAnswer and queryName', () => {
  it('accepts 127/8 codes, refuses everything else with a reason', () => {
    assert.equal(brokenAnswer(['127.0.0.2', '127.0.0.10']), null);
    assert.match(brokenAnswer(['127.0.0.2', '10.0.0.1'])!, /outside 127\.0\.0\.0\/8/);
    assert.match(brokenAnswer(['127.255.255.254'])!, /public or open resolver/);
    assert.match(brokenAnswer(['127.255.255.255'])!, /excessive/);
    assert.match(brokenAnswer(['127.255.255.252'])!, /typo/);
    assert.match(brokenAnswer(['127.0.0.1'])!, /never-listed test point/);
  });

  it('reverses IPv4 octets, IPv6 nibbles, and looks IPv4-mapped addresses up as IPv4', () => {
    assert.equal(queryName('192.0.2.7', 'bl.test'), '7.2.0.192.bl.test');
    assert.equal(queryName('::ffff:192.0.2.7', 'bl.test.'), '7.2.0.192.bl.test');
    assert.equal(queryName('2001:db8::1', 'bl.test'), `1${'.0'.repeat(23)}.8.b.d.0.1.0.0.2.bl.test`);
    assert.equal(queryName('not-an-ip', 'bl.test'), null);
    assert.equal(queryName('192.0.2.0/24', 'bl.test'), null);
  });
});

describe('DnsblClient.lookup', () => {
  it('listed: every code and the TXT (character-strings joined)', async () => {
    const r = await client().lookup('192.0.2.7', 'bl.test');
    assert.equal(r.kind, 'listed');
    assert.ok(r.kind === 'listed');
    assert.deepEqual(r.codes, ['127.0.0.2', '127.0.0.3']);
    assert.equal(r.txt, 'Open relay, see http://bl.test/192.0.2.7');
    assert.equal(r.ttl, 60);
  });

  it('not listed: NXDOMAIN', async () => {
    const r = await client().lookup('192.0.2.99', 'bl.test');
    assert.equal(r.kind, 'not-listed');
    assert.equal(r.listed, false);
  });

  it('127.255.255.254 (Spamhaus "public resolver") is broken, not listed', async () => {
    const r = await client().lookup('192.0.2.8', 'bl.test');
    assert.equal(r.kind, 'broken');
    assert.equal(r.listed, false);
  });

  it('an answer outside 127/8 is broken; so is 127.0.0.1', async () => {
    const r = await client().lookup('192.0.2.9', 'bl.test');
    assert.ok(r.kind === 'broken');
    assert.match(r.broken, /198\.51\.100\.1 is outside/);
    assert.equal((await client().lookup('192.0.2.12', 'bl.test')).kind, 'broken');
  });

  it('SERVFAIL and timeouts are errors, never listings', async () => {
    const logger = new MemoryLogger();
    const c = client({ logger });
    const s = await c.lookup('192.0.2.10', 'bl.test');
    assert.ok(s.kind === 'error');
    assert.equal(s.error, 'servfail');
    const t0 = Date.now();
    const t = await c.lookup('192.0.2.11', 'bl.test');
    assert.ok(t.kind === 'error');
    assert.equal(t.error, 'timeout');
    assert.ok(Date.now() - t0 < 1500, 'bounded by the timeout');
    assert.ok(logger.records.some((r) => r.msg === 'dnsbl lookup failed' && r.fields['error'] === 'servfail'));
  });

  it('our own overall timeout bounds a resolver that never answers', async () => {
    const c = new DnsblClient({ resolver: { resolve4: () => new Promise(() => {}), resolveTxt: () => new Promise(() => {}) }, timeoutMs: 50 });
    const r = await c.lookup('192.0.2.1', 'bl.test');
    assert.ok(r.kind === 'error' && r.error === 'timeout');
  });

  it('a TXT that does not come is no reason to fail the listing', async () => {
    const r = await client({ timeoutMs: 300 }).lookup('192.0.2.13', 'bl.test');
    assert.ok(r.kind === 'listed');
    assert.equal(r.txt, null);
  });

  it('a bad address is an error without a query', async () => {
    const before = dns.queries.length;
    const r = await client().lookup('1.2.3', 'bl.test');
    assert.ok(r.kind === 'error' && r.error === 'bad-address');
    assert.equal(dns.queries.length, before);
  });

  it('caches by TTL (clamped), errors not at all; concurrent lookups share one query', async () => {
    const clock = new ManualClock(1_000_000);
    const c = new DnsblClient({ resolver: dns.resolver(), clock, minTtlMs: 10_000, maxTtlMs: 30_000, negativeTtlMs: 5_000 });
    const count = (name: string): number => dns.queries.filter((q) => q.name === name && q.type === 'A').length;
    const n0 = count('7.2.0.192.bl.test');
    await Promise.all([c.lookup('192.0.2.7', 'bl.test'), c.lookup('192.0.2.7', 'bl.test'), c.lookup('192.0.2.7', 'bl.test')]);
    assert.equal(count('7.2.0.192.bl.test'), n0 + 1, 'one query for three concurrent lookups');
    clock.advance(29_000);
    await c.lookup('192.0.2.7', 'bl.test');
    assert.equal(count('7.2.0.192.bl.test'), n0 + 1, 'TTL 60 s clamped to max 30 s: still cached');
    clock.advance(2_000);
    await c.lookup('192.0.2.7', 'bl.test');
    assert.equal(count('7.2.0.192.bl.test'), n0 + 2, 'expired');
    const nx0 = count('99.2.0.192.bl.test');
    await c.lookup('192.0.2.99', 'bl.test');
    clock.advance(4_000);
    await c.lookup('192.0.2.99', 'bl.test');
    assert.equal(count('99.2.0.192.bl.test'), nx0 + 1, 'negative answer cached');
    clock.advance(2_000);
    await c.lookup('192.0.2.99', 'bl.test');
    assert.equal(count('99.2.0.192.bl.test'), nx0 + 2);
    const sf0 = count('10.2.0.192.bl.test');
    await c.lookup('192.0.2.10', 'bl.test');
    await c.lookup('192.0.2.10', 'bl.test');
    assert.equal(count('10.2.0.192.bl.test'), sf0 + 2, 'SERVFAIL is not cached');
    assert.ok(c.stats.cacheHits >= 2);
  });
});

describe('DnsblClient health check and checkAll', () => {
  it('a healthy zone stays enabled; one that lists the world, lacks the test point or answers outside 127/8 is disabled and logged', async () => {
    const logger = new MemoryLogger();
    const c = client({ logger, zones: [
      { zone: 'bl.test', weight: 1 }, { zone: 'world.test', weight: 1 }, { zone: 'dead.test', weight: 1 },
      { zone: 'rewrite.test', weight: 1 }, { zone: 'down.test', weight: 1 },
    ] });
    const health = await c.healthCheck();
    const by = Object.fromEntries(health.map((h) => [h.zone, h]));
    assert.equal(by['bl.test']!.status, 'healthy');
    assert.equal(by['bl.test']!.enabled, true);
    assert.equal(by['world.test']!.status, 'lists-the-world');
    assert.equal(by['world.test']!.enabled, false);
    assert.equal(by['dead.test']!.status, 'test-point-missing');
    assert.equal(by['dead.test']!.enabled, false);
    assert.equal(by['rewrite.test']!.status, 'broken');
    assert.equal(by['rewrite.test']!.enabled, false);
    assert.equal(by['down.test']!.status, 'unreachable');
    assert.equal(by['down.test']!.enabled, true, 'an unreachable zone keeps its state: its lookups fail open anyway');
    const disabled = logger.records.filter((r) => r.msg === 'dnsbl zone disabled').map((r) => r.fields['zone']);
    assert.deepEqual(disabled.sort(), ['dead.test', 'rewrite.test', 'world.test']);
    assert.equal(logger.records.find((r) => r.fields['zone'] === 'world.test')!.level, 'error');

    const all = await c.checkAll('192.0.2.7');
    const k = Object.fromEntries(all.map((r) => [r.zone, r.kind]));
    assert.deepEqual(k, { 'bl.test': 'listed', 'world.test': 'disabled', 'dead.test': 'disabled', 'rewrite.test': 'disabled', 'down.test': 'error' });
    assert.ok(!dns.queries.some((q) => q.name === '7.2.0.192.world.test'), 'a disabled zone is not queried');
  });

  it('lookups made while the first health check runs wait for it (a world-listing zone is never used)', async () => {
    const c = client({ zones: [{ zone: 'world.test', weight: 1 }] });
    const health = c.startHealthChecks(0);
    const r = await c.checkAll('192.0.2.7');
    assert.equal(r[0]!.kind, 'disabled');
    await health;
    c.stopHealthChecks();
  });

  it('a zone is enabled again once it is healthy', async () => {
    const logger = new MemoryLogger();
    dns.set('1.0.0.127.flap.test', { A: ['127.0.0.2'] });
    dns.set('2.0.0.127.flap.test', { A: ['127.0.0.2'] });
    const c = client({ logger, zones: [{ zone: 'flap.test', weight: 2 }] });
    await c.healthCheck();
    assert.equal(c.zones[0]!.enabled, false);
    dns.zone.delete('1.0.0.127.flap.test');
    await c.healthCheck();
    assert.equal(c.zones[0]!.enabled, true);
    assert.ok(logger.records.some((r) => r.msg === 'dnsbl zone enabled again'));
  });

  it('against the real ORDB server: the test points pass and a listing is found', async () => {
    const zone = buildZone([{ network: '198.51.100.0/24', txt: 'Open relay $' }], { apex: 'relays.test' });
    const server = new DnsblServer({ zone, port: 0 });
    await server.start();
    try {
      const resolver = dns.resolver();
      resolver.setServers([`127.0.0.1:${server.port}`]);
      const c = new DnsblClient({ resolver, zones: [{ zone: 'relays.test', weight: 1 }] });
      assert.equal((await c.healthCheck())[0]!.status, 'healthy');
      const r = await c.lookup('198.51.100.77', 'relays.test');
      assert.ok(r.kind === 'listed');
      assert.equal(r.txt, 'Open relay 198.51.100.77');
      assert.equal((await c.lookup('198.51.101.1', 'relays.test')).kind, 'not-listed');
      assert.equal((await c.lookup('2001:db8::1', 'relays.test')).kind, 'not-listed');
    } finally {
      await server.stop();
    }
  });
});
