import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  canonicalDomain, canonicalIp, canonicalMailDomain, domainOfAddress, foldLocalPart, isRoutedLocalPart, literalIp,
} from './canonical.ts';
import { createLocality } from './locality.ts';

test('canonicalIp: strict forms only; IPv6 in RFC 5952 form; IPv4-mapped folded to IPv4', () => {
  assert.equal(canonicalIp('127.0.0.1'), '127.0.0.1');
  assert.equal(canonicalIp('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(canonicalIp('::FFFF:7F00:1'), '127.0.0.1');
  assert.equal(canonicalIp('0:0:0:0:0:ffff:7f00:1'), '127.0.0.1');
  assert.equal(canonicalIp('2001:DB8:0:0::1'), '2001:db8::1');
  assert.equal(canonicalIp('0:0::1'), '::1');
  for (const bad of ['127.1', '0x7f.0.0.1', '0177.0.0.1', '127.000.0.1', '2130706433', 'fe80::1%eth0', '[::1]', '1.2.3.4.5', '::ffff:1.02.3.4', '', ' 1.2.3.4']) {
    assert.equal(canonicalIp(bad), null, bad);
  }
});

test('canonicalDomain: NFC, IDNA A-labels, lower case, one trailing dot; LDH labels; numeric TLD refused', () => {
  assert.equal(canonicalDomain('Example.ORG.'), 'example.org');
  assert.equal(canonicalDomain('Bücher.Example'), 'xn--bcher-kva.example');
  assert.equal(canonicalDomain('Bu\u0308cher.example'), 'xn--bcher-kva.example', 'NFD folds to the NFC name');
  assert.equal(canonicalDomain('xn--bcher-kva.example'), 'xn--bcher-kva.example');
  for (const bad of ['a..b', '-a.example', 'a-.example', '127.0.0.1', '[127.0.0.1]', 'a b.example', 'a_b.example', '', '.', 'x'.repeat(64) + '.test']) {
    assert.equal(canonicalDomain(bad), null, bad);
  }
  assert.equal(canonicalDomain('_dmarc.example', { allowUnderscore: true }), '_dmarc.example');
});

test('literalIp and canonicalMailDomain: every literal form of one address is one domain', () => {
  for (const form of ['[127.0.0.1]', '[IPv6:::ffff:127.0.0.1]', '[ipv6:::FFFF:7F00:1]', '[IPv6:0:0:0:0:0:ffff:7f00:1]']) {
    assert.equal(literalIp(form), '127.0.0.1', form);
    assert.deepEqual(canonicalMailDomain(form), { domain: '[127.0.0.1]', ip: '127.0.0.1' }, form);
  }
  assert.deepEqual(canonicalMailDomain('[IPv6:2001:DB8::0:1]'), { domain: '[IPv6:2001:db8::1]', ip: '2001:db8::1' });
  assert.equal(literalIp('[127.1]'), null);
  assert.equal(literalIp('example.org'), null);
  assert.equal(domainOfAddress('"a@b"@Example.ORG.'), 'example.org');
  assert.equal(domainOfAddress('x@[IPv6:::ffff:10.0.0.1]'), '[10.0.0.1]');
});

test('isRoutedLocalPart: ASCII routing characters and their NFKC look-alikes', () => {
  for (const routed of ['u%v', 'u@v', 'v!u', 'u\uFF05v', 'u\uFE6Bv', 'u\uFF20v', 'v\uFF01u', 'u\uFE6Av']) assert.equal(isRoutedLocalPart(routed), true, routed);
  for (const plain of ['alice', 'alice+tag', 'ALICE', 'jos\u00e9', 'a.b-c_d']) assert.equal(isRoutedLocalPart(plain), false, plain);
  assert.equal(foldLocalPart('ALICE'), 'alice');
  assert.equal(foldLocalPart('Jose\u0301'), 'jos\u00e9');
});

test('locality: local domains, own addresses in any form, loopback and unspecified literals are ours; others are not', () => {
  const domains = new Set(['local.test']);
  const l = createLocality({ domains: () => domains, ownAddresses: () => ['192.0.2.10', '2001:DB8::25'] });
  for (const d of ['local.test', 'LOCAL.TEST.', '[127.0.0.1]', '[127.3.2.1]', '[IPv6:::1]', '[IPv6:::ffff:127.0.0.1]', '[0.0.0.0]', '[IPv6:::]', '[192.0.2.10]', '[IPv6:::ffff:192.0.2.10]', '[IPv6:2001:db8:0::25]']) {
    assert.equal(l.isLocal(d), true, d);
  }
  for (const d of ['remote.test', 'local.test.evil', '[192.0.2.11]', '[IPv6:2001:db8::26]', '[127.1]', '']) assert.equal(l.isLocal(d), false, d);
  assert.equal(l.isOwnLiteral('local.test'), false);
  assert.equal(l.isOwnLiteral('[IPv6:::1]'), true);
});
