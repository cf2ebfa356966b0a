/**
 * TLS policy on the delivery side: MTA-STS (RFC 8461) with the policy served over real HTTPS on 127.0.0.1 and its
 * TXT record from the fake DNS, and DANE (RFC 7672) with TLSA records from the fake DNS; next hops are fake MTAs.
 * A required-TLS failure always defers and never sends MAIL FROM in the clear (TLS-13).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { startFakeMta, type FakeMta } from '../../src/testing/fake-mta.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import { generateSelfSigned } from '../../src/smtp/tls-cert.ts';
import { MemoryLogger } from '../../src/core/log.ts';
import { MtaSts, TlsPolicy } from '../../src/delivery/index.ts';
import { makeJob, signal, testDeliverer } from './delivery-helpers.ts';

let dns: FakeDns;
let https: Server;
let httpsPort = 0;
const policies = new Map<string, string>();
let stsCert: { cert: string; key: string };
let mxCert: { cert: string; key: string };
const fakes: FakeMta[] = [];

before(async () => {
  dns = await startFakeDns();
  stsCert = await generateSelfSigned('mta-sts.sts.test');
  mxCert = await generateSelfSigned('mx.sts.test');
  https = createServer({ cert: stsCert.cert, key: stsCert.key }, (req, res) => {
    const host = String(req.headers.host ?? '').replace(/:\d+$/, '');
    const body = policies.get(host);
    if (req.url !== '/.well-known/mta-sts.txt' || body === undefined) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  });
  await new Promise<void>((r) => https.listen(0, '127.0.0.1', r));
  httpsPort = (https.address() as AddressInfo).port;
});

after(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  https?.closeAllConnections();
  await new Promise<void>((r) => (https ? https.close(() => r()) : r()));
  await dns?.close();
});

async function fake(options: Parameters<typeof startFakeMta>[0] = {}): Promise<FakeMta> {
  const f = await startFakeMta(options);
  fakes.push(f);
  return f;
}

function stsDomain(name: string, policy: string, mx = `mx.sts.test`): string {
  dns.set(name, { MX: [{ preference: 10, exchange: mx }] });
  dns.set('mx.sts.test', { A: ['127.0.0.1'] });
  dns.set(`_mta-sts.${name}`, { TXT: ['v=STSv1; id=20240101'] });
  dns.set(`mta-sts.${name}`, { A: ['127.0.0.1'] });
  policies.set(`mta-sts.${name}`, policy);
  return name;
}

function stsDeliverer(port: number, logger = new MemoryLogger()) {
  const resolver = dns.resolver();
  const mtaSts = new MtaSts({ resolver, ca: [stsCert.cert], port: httpsPort, logger });
  return testDeliverer(dns, port, { tlsPolicy: new TlsPolicy({ mtaSts, static: { ca: [mxCert.cert] }, logger }) });
}

const ENFORCE = 'version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n';

// The certificate of mta-sts.sts.test only matches that name: every STS domain here serves its policy under it.
test('MTA-STS enforce: MX matches and the certificate verifies → delivered over TLS', async () => {
  const f = await fake({ tls: mxCert });
  const d = stsDomain('sts.test', ENFORCE);
  const out = await stsDeliverer(f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered', JSON.stringify(out));
  assert.equal(f.sessions[0]!.tls, true);
});

test('MTA-STS enforce: no STARTTLS, or an untrusted certificate, or no matching MX → deferred, never plaintext', async () => {
  const d = stsDomain('sts.test', ENFORCE);
  const plain = await fake();
  let out = await stsDeliverer(plain.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.equal(out[0]!.reply?.enhanced, '4.7.4');
  assert.equal(plain.sessions[0]!.commands.some((c) => c.startsWith('MAIL')), false);

  const other = await generateSelfSigned('mx.sts.test');
  const untrusted = await fake({ tls: other });
  out = await stsDeliverer(untrusted.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.equal(out[0]!.reply?.enhanced, '4.7.5');
  assert.equal(untrusted.sessions[0]!.commands.some((c) => c.startsWith('MAIL')), false);

  policies.set('mta-sts.sts.test', 'version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 86400\n');
  dns.set('_mta-sts.sts.test', { TXT: ['v=STSv1; id=20240102'] });
  const unused = await fake({ tls: mxCert });
  out = await stsDeliverer(unused.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.match(out[0]!.diagnostic ?? '', /matches its MTA-STS policy/);
  assert.equal(unused.sessions.length, 0);
});

test('MTA-STS testing: delivered even without TLS, the mismatch logged', async () => {
  const d = stsDomain('sts.test', 'version: STSv1\nmode: testing\nmx: other.test\nmax_age: 600\n');
  dns.set('_mta-sts.sts.test', { TXT: ['v=STSv1; id=20240103'] });
  const plain = await fake();
  const logger = new MemoryLogger();
  const out = await stsDeliverer(plain.port, logger).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  assert.ok(logger.records.some((r) => r.msg.startsWith('MTA-STS testing')));
});

test('MTA-STS: the policy is cached by max_age and survives a later fetch failure', async () => {
  const d = stsDomain('sts.test', ENFORCE);
  dns.set('_mta-sts.sts.test', { TXT: ['v=STSv1; id=cache1'] });
  const mtaSts = new MtaSts({ resolver: dns.resolver(), ca: [stsCert.cert], port: httpsPort });
  assert.equal((await mtaSts.policy(d))?.mode, 'enforce');
  policies.delete('mta-sts.sts.test');
  assert.equal((await mtaSts.policy(d))?.mode, 'enforce', 'same id: cached');
  dns.set('_mta-sts.sts.test', { TXT: ['v=STSv1; id=cache2'] });
  assert.equal((await mtaSts.policy(d))?.mode, 'enforce', 'new id but fetch fails: cached policy kept');
  dns.set('_mta-sts.sts.test', { mode: 'SERVFAIL' });
  assert.equal((await mtaSts.policy(d))?.mode, 'enforce', 'TXT lookup failure: cached policy kept');
  assert.equal(await new MtaSts({ resolver: dns.resolver(), ca: [stsCert.cert], port: httpsPort }).policy('nosts.test'), null);
});

// ---------------------------------------------------------------------------------------------------------

function sha256(pem: string): Buffer {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest();
}

function spkiSha256(pem: string): Buffer {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest();
}

async function daneSetup(tlsa: 'match' | 'match-spki' | 'mismatch' | 'servfail' | 'none', options: Parameters<typeof startFakeMta>[0] = { tls: mxCert }) {
  const f = await fake(options);
  const d = `dane-${tlsa}-${f.port}.test`;
  dns.set(d, { MX: [{ preference: 10, exchange: `mx.${d}` }] });
  dns.set(`mx.${d}`, { A: ['127.0.0.1'] });
  const name = `_${f.port}._tcp.mx.${d}`;
  if (tlsa === 'match') dns.set(name, { TLSA: [{ usage: 3, selector: 0, matchingType: 1, certificate: sha256(mxCert.cert) }] });
  if (tlsa === 'match-spki') dns.set(name, { TLSA: [{ usage: 3, selector: 1, matchingType: 1, certificate: spkiSha256(mxCert.cert) }] });
  if (tlsa === 'mismatch') dns.set(name, { TLSA: [{ usage: 3, selector: 0, matchingType: 1, certificate: Buffer.alloc(32, 1) }] });
  if (tlsa === 'servfail') dns.set(name, { mode: 'SERVFAIL' });
  const resolver = dns.resolver();
  const deliverer = testDeliverer(dns, f.port, { tlsPolicy: new TlsPolicy({ dane: resolver }) });
  const out = await deliverer.deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  return { f, out };
}

test('DANE: a matching TLSA record (3 0 1) → delivered over TLS even with a self-signed certificate', async () => {
  const { f, out } = await daneSetup('match');
  assert.equal(out[0]!.outcome, 'delivered', JSON.stringify(out));
  assert.equal(f.sessions[0]!.tls, true);
});

test('DANE: a matching SPKI record (3 1 1) is checked against the DER the client exposes', async () => {
  const { f, out } = await daneSetup('match-spki');
  assert.equal(out[0]!.outcome, 'delivered', JSON.stringify(out));
  assert.equal(f.sessions[0]!.tls, true);
});

test('DANE: no matching record, or STARTTLS missing → deferred 4.7.x, never MAIL in the clear', async () => {
  let r = await daneSetup('mismatch');
  assert.equal(r.out[0]!.outcome, 'deferred');
  assert.equal(r.out[0]!.reply?.enhanced, '4.7.5');
  assert.equal(r.f.sessions[0]!.commands.some((c) => c.startsWith('MAIL')), false);
  r = await daneSetup('match', {});
  assert.equal(r.out[0]!.outcome, 'deferred');
  assert.equal(r.out[0]!.reply?.enhanced, '4.7.4');
  assert.equal(r.f.sessions[0]!.commands.some((c) => c.startsWith('MAIL')), false);
});

test('DANE: a failing TLSA lookup makes the host unusable (deferred); no TLSA → ordinary opportunistic TLS', async () => {
  let r = await daneSetup('servfail');
  assert.equal(r.out[0]!.outcome, 'deferred');
  assert.equal(r.f.sessions.length, 0);
  r = await daneSetup('none', {});
  assert.equal(r.out[0]!.outcome, 'delivered');
});
