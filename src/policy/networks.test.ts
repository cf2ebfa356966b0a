import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetworkList, isValidCidr, normalizeIp, parseCidr, parseIp } from './networks.ts';
import { RelayguardError } from '../core/errors.ts';

test('networks: IPv4 ranges match and exclude', () => {
  const list = new NetworkList(['127.0.0.0/8', '10.1.0.0/16', '192.0.2.7']);
  assert.equal(list.contains('127.0.0.1'), true);
  assert.equal(list.contains('127.255.255.255'), true);
  assert.equal(list.contains('128.0.0.1'), false);
  assert.equal(list.contains('10.1.200.3'), true);
  assert.equal(list.contains('10.2.0.1'), false);
  assert.equal(list.contains('192.0.2.7'), true);
  assert.equal(list.contains('192.0.2.8'), false);
  assert.deepEqual(list.cidrs, ['127.0.0.0/8', '10.1.0.0/16', '192.0.2.7/32']);
});

test('networks: IPv4-mapped IPv6 clients are matched as IPv4', () => {
  const list = new NetworkList(['1.2.3.0/24']);
  assert.equal(list.contains('::ffff:1.2.3.4'), true);
  assert.equal(list.contains('::FFFF:1.2.3.4'), true);
  assert.equal(list.contains('::ffff:102:304'), true);
  assert.equal(list.contains('::ffff:1.2.4.4'), false);
  // A mapped address is IPv4: an IPv6 catch-all does not cover it.
  assert.equal(new NetworkList(['::/0']).contains('::ffff:1.2.3.4'), false);
  assert.equal(new NetworkList(['::/0']).contains('2001:db8::1'), true);
  // A network written in mapped form becomes the IPv4 network.
  const mapped = new NetworkList(['::ffff:10.0.0.0/104']);
  assert.deepEqual(mapped.cidrs, ['10.0.0.0/8']);
  assert.equal(mapped.contains('10.9.9.9'), true);
  assert.equal(mapped.contains('::ffff:10.9.9.9'), true);
});

test('networks: IPv6 ranges, zone ids and prefix edges', () => {
  const list = new NetworkList(['::1/128', '2001:db8:abcd::/48', 'fe80::/10']);
  assert.equal(list.contains('::1'), true);
  assert.equal(list.contains('::2'), false);
  assert.equal(list.contains('2001:db8:abcd:ffff::1'), true);
  assert.equal(list.contains('2001:db8:abce::1'), false);
  assert.equal(list.contains('fe80::1%eth0'), true);
  assert.equal(list.contains('febf:ffff::1'), true);
  assert.equal(list.contains('fec0::1'), false);
  const odd = new NetworkList(['2001:db8::/33']);
  assert.equal(odd.contains('2001:db8:7fff::1'), true);
  assert.equal(odd.contains('2001:db8:8000::1'), false);
  assert.equal(new NetworkList(['0.0.0.0/0']).contains('203.0.113.9'), true);
  assert.equal(new NetworkList(['0.0.0.0/0']).contains('2001:db8::1'), false);
});

test('networks: lenient address spellings never match', () => {
  const list = new NetworkList(['127.0.0.0/8']);
  for (const s of ['127.1', '0x7f.0.0.1', '0177.0.0.1', '127.0.0.01', '2130706433', '127.0.0.1.', ' 127.0.0.1', '', 'localhost', '::ffff:0x7f.0.0.1', '[127.0.0.1]']) {
    assert.equal(list.contains(s), false, s);
  }
  assert.equal(parseIp('256.0.0.1'), null);
  assert.equal(parseIp('1.2.3'), null);
});

test('networks: empty list contains nothing', () => {
  const list = new NetworkList([]);
  assert.equal(list.size, 0);
  assert.equal(list.contains('127.0.0.1'), false);
  assert.equal(list.contains('::1'), false);
});

test('networks: parseCidr is strict about host bits; NetworkList clears them', () => {
  assert.throws(() => parseCidr('10.0.0.1/8'), (e: unknown) => e instanceof RelayguardError && e.code === 'ERR_NETWORK_INVALID' && /10\.0\.0\.0\/8/.test(e.message));
  assert.throws(() => parseCidr('2001:db8::1/32'), /host bits/);
  assert.deepEqual(parseCidr('10.0.0.1/8', { strict: false }), { family: 4, address: '10.0.0.0', prefix: 8, cidr: '10.0.0.0/8' });
  assert.deepEqual(new NetworkList(['10.0.0.1/8', '10.0.0.0/8']).cidrs, ['10.0.0.0/8']);
  for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/08', '10.0.0.0/-1', 'x/8', '::/129', 'fe80::/10%eth0', '::ffff:10.0.0.0/64']) {
    assert.equal(isValidCidr(bad), false, bad);
  }
  assert.throws(() => new NetworkList(['nonsense']), /Invalid network "nonsense"/);
});

test('networks: normalizeIp', () => {
  assert.equal(normalizeIp('::ffff:1.2.3.4'), '1.2.3.4');
  assert.equal(normalizeIp('2001:DB8:0:0::1'), '2001:db8::1');
  assert.equal(normalizeIp('nope'), null);
});

test('networks: contains is fast on a realistic list', () => {
  const cidrs: string[] = [];
  for (let i = 0; i < 50; i++) cidrs.push(`10.${i}.0.0/16`, `2001:db8:${i.toString(16)}::/48`);
  const list = new NetworkList(cidrs);
  const start = performance.now();
  let hits = 0;
  for (let i = 0; i < 100_000; i++) {
    if (list.contains(`10.${i % 60}.1.2`)) hits++;
  }
  const elapsed = performance.now() - start;
  assert.equal(hits, Math.floor(100_000 / 60) * 50 + Math.min(100_000 % 60, 50));
  assert.ok(elapsed < 2000, `100k lookups took ${elapsed} ms`);
});
