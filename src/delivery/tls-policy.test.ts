import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import { daneMatches, mxMatches, parseMtaStsPolicy, parseStsTxt, usableTlsa } from './tls-policy.ts';

describe('MTA-STS parsing', () => {
  it('policy files', () => {
    assert.deepEqual(parseMtaStsPolicy('version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.net\r\nmax_age: 604800\r\n'),
      { mode: 'enforce', mx: ['mail.example.com', '*.example.net'], maxAge: 604800 });
    assert.equal(parseMtaStsPolicy('version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n'), null);
    assert.equal(parseMtaStsPolicy('version: STSv1\nmode: enforce\nmax_age: 1\n'), null, 'enforce needs mx');
    assert.equal(parseMtaStsPolicy('version: STSv1\nmode: bogus\nmx: a\nmax_age: 1\n'), null);
    assert.equal(parseMtaStsPolicy('version: STSv1\nmode: none\nmax_age: 99999999999\n')?.maxAge, 31557600);
  });
  it('mx patterns: exact, or a wildcard for one left-most label', () => {
    assert.equal(mxMatches('mail.example.com.', ['mail.example.com']), true);
    assert.equal(mxMatches('a.example.net', ['*.example.net']), true);
    assert.equal(mxMatches('a.b.example.net', ['*.example.net']), false);
    assert.equal(mxMatches('example.net', ['*.example.net']), false);
  });
  it('TXT records: exactly one v=STSv1 with an id', () => {
    assert.equal(parseStsTxt([['v=STSv1; id=2024']]), '2024');
    assert.equal(parseStsTxt([['v=STSv1; ', 'id=abc;']]), 'abc');
    assert.equal(parseStsTxt([['v=STSv1; id=1'], ['v=STSv1; id=2']]), null);
    assert.equal(parseStsTxt([['v=spf1 -all']]), null);
    assert.equal(parseStsTxt([['v=STSv1; id=bad-id!']]), null);
  });
});

describe('DANE matching', () => {
  it('DANE-EE with selector 0/1 and matching 0/1/2; unusable records ignored', async () => {
    const { cert } = await generateSelfSigned('mx.example.test');
    const x = new X509Certificate(cert);
    const der = x.raw;
    const spki = x.publicKey.export({ type: 'spki', format: 'der' });
    const rec = (certUsage: number, selector: number, match: number, data: Buffer) => ({ certUsage, selector, match, data: new Uint8Array(data) });
    const chain = { chain: [der] };
    assert.equal(daneMatches([rec(3, 0, 1, createHash('sha256').update(der).digest())], chain), true);
    assert.equal(daneMatches([rec(3, 1, 1, createHash('sha256').update(spki).digest())], chain), true);
    assert.equal(daneMatches([rec(3, 1, 2, createHash('sha512').update(spki).digest())], chain), true);
    assert.equal(daneMatches([rec(3, 0, 0, der)], chain), true);
    assert.equal(daneMatches([rec(3, 1, 1, Buffer.alloc(32))], chain), false);
    assert.equal(daneMatches([rec(1, 0, 1, createHash('sha256').update(der).digest())], chain), false, 'PKIX-EE is not used for SMTP');
    assert.equal(daneMatches([rec(2, 0, 1, createHash('sha256').update(der).digest())], chain), false, 'DANE-TA matches an issuer, not the leaf');
    assert.equal(daneMatches([rec(2, 0, 1, createHash('sha256').update(der).digest())], { chain: [Buffer.from('leaf'), der] }), true);
    assert.equal(usableTlsa([rec(0, 0, 1, der), rec(3, 2, 1, der), rec(3, 1, 3, der), rec(2, 1, 1, der)]).length, 1);
  });
});
