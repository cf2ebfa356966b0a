import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeDns, type FakeDns } from '../testing/fake-dns.ts';
import { auditAddresses, blocklistCheck, isPublicAddress, linkIn, type BlocklistZone } from './blocklist-check.ts';

let dns: FakeDns;
before(async () => {
  dns = await startFakeDns({
    zone: {
      '2.0.0.127.good.test': { A: ['127.0.0.2'] },
      '10.2.0.192.good.test': { A: ['127.0.0.2'], TXT: ['spam seen; removal at https://good.test/rm?192.0.2.10.'] },
      '11.2.0.192.good.test': { A: ['127.0.0.2'], modes: { TXT: 'TIMEOUT' } },
      '12.2.0.192.good.test': { mode: 'SERVFAIL' },
      '13.2.0.192.good.test': { A: ['10.0.0.1'] },
      // no 127.0.0.2 test point
      '10.2.0.192.partial.test': { A: ['127.0.0.4'], TXT: ['listed'] },
      // answers the error code of a public resolver for its test point
      '2.0.0.127.spamhausish.test': { A: ['127.255.255.254'] },
    },
  });
});
after(() => dns.close());

const zone = (z: string, o: Partial<BlocklistZone> = {}): BlocklistZone => ({ zone: z, servers: [`127.0.0.1:${dns.port}`], delistUrl: null, testPoints: 'rfc5782', ...o });
const run = (zones: BlocklistZone[], addresses: string[]) =>
  blocklistCheck({ zones, addresses: () => addresses, servers: [], dnsTimeoutMs: 300 }).run({ signal: new AbortController().signal, now: Date.now });

test('blocklists: listed (TXT reason, link from the TXT or the zone\'s delist URL), clean, failed lookups, garbage answers', async () => {
  const f = await run([zone('good.test'), zone('partial.test'), zone('partial.test', { zone: 'partial.test', testPoints: 'unlisted-only', delistUrl: 'https://partial.test/?ip=$' })],
    ['192.0.2.10', '192.0.2.11', '192.0.2.12', '192.0.2.13', '192.0.2.14']);
  const rows = f.map((x) => [x.check, x.severity, x.subject]);
  assert.deepEqual(rows.slice(0, 5), [
    ['blocklist.listed', 'critical', '192.0.2.10 in good.test'],
    ['blocklist.listed', 'critical', '192.0.2.11 in good.test'],
    ['blocklist.lookup-failed', 'unreachable', '192.0.2.12 in good.test'],
    ['blocklist.answer-broken', 'broken', '192.0.2.13 in good.test'],
    ['blocklist.clean', 'ok', '192.0.2.14 in good.test'],
  ]);
  assert.equal(f[0]!.detail!['reason'], 'spam seen; removal at https://good.test/rm?192.0.2.10.');
  assert.equal(f[0]!.detail!['delistUrl'], 'https://good.test/rm?192.0.2.10');
  assert.equal(f[1]!.detail!['reason'], null, 'listed without a reason when the TXT does not come');
  // partial.test does not list 127.0.0.2: broken under the RFC 5782 policy, usable under 'unlisted-only'
  assert.deepEqual(rows[5], ['blocklist.zone-broken', 'broken', 'partial.test']);
  assert.equal(f[5]!.detail!['health'], 'test-point-missing');
  assert.deepEqual(rows[6], ['blocklist.listed', 'critical', '192.0.2.10 in partial.test']);
  assert.equal(f[6]!.detail!['delistUrl'], 'https://partial.test/?ip=192.0.2.10');
});

test('blocklists: a zone that answers 127.255.255.254 for its test point is broken (public resolver), not a listing source', async () => {
  const f = await run([zone('spamhausish.test')], ['192.0.2.10']);
  assert.deepEqual(f.map((x) => [x.check, x.severity]), [['blocklist.zone-broken', 'broken']]);
  assert.match(f[0]!.summary, /public or open resolver/);
});

test('blocklists: no address or no zone is a warning, never a clean result', async () => {
  assert.deepEqual((await run([zone('good.test')], [])).map((x) => [x.check, x.severity]), [['blocklist.no-addresses', 'warning']]);
  assert.deepEqual((await run([], ['192.0.2.10'])).map((x) => [x.check, x.severity]), [['blocklist.no-zones', 'warning']]);
});

test('addresses: configured ones as given; else public listener addresses, interfaces for a wildcard', () => {
  assert.deepEqual(auditAddresses(['127.0.0.1', '127.0.0.1'], []), ['127.0.0.1']);
  const ifs = () => ['127.0.0.1', '10.1.2.3', '203.0.113.5', '8.8.4.4', '::1', '2a00:1450::5', 'fe80::1'];
  assert.deepEqual(auditAddresses([], [{ address: '127.0.0.1' }, { address: '0.0.0.0' }], ifs), ['8.8.4.4']);
  assert.deepEqual(auditAddresses([], [{ address: '::' }, { address: '9.9.9.9' }], ifs), ['8.8.4.4', '2a00:1450::5', '9.9.9.9']);
  assert.equal(isPublicAddress('192.0.2.1'), false);
  assert.equal(isPublicAddress('100.64.0.1'), false);
  assert.equal(isPublicAddress('1.1.1.1'), true);
  assert.equal(linkIn('see <http://x.test/a?b=1>, thanks'), 'http://x.test/a?b=1');
  assert.equal(linkIn(null), null);
});
