import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { MailauthDkimSigner, fromHeaderDomain, generateDkimKey, type GeneratedDkimKey } from './dkim.ts';

const MSG = 'From: "Alice, A." <alice@src.test>\r\nTo: b@peers.test\r\nSubject: signed\r\nDate: Tue, 2 Jan 2024 03:04:05 +0000\r\nMessage-ID: <d1@src.test>\r\n\r\nbody\r\n.dot\r\n';

async function verify(signed: string, keys: GeneratedDkimKey[]): Promise<string[]> {
  const res = await dkimVerify(signed, {
    resolver: async (name: string, type: string) => {
      const k = keys.find((x) => x.dnsName === name);
      if (!k || type !== 'TXT') throw Object.assign(new Error('nx'), { code: 'ENOTFOUND' });
      return [[k.txt]];
    },
  });
  return res.results.map((r: { status: { result: string } }) => r.status.result);
}

describe('dkim', () => {
  it('fromHeaderDomain', () => {
    assert.equal(fromHeaderDomain('From: a@Example.ORG\r\n'), 'example.org');
    assert.equal(fromHeaderDomain('Subject: x\r\nfrom: "x@evil.test" <a@good.test>\r\n'), 'good.test');
    assert.equal(fromHeaderDomain('From: Name\r\n <a@folded.test>\r\n'), 'folded.test');
    assert.equal(fromHeaderDomain('To: a@b.test\r\n'), null);
  });

  it('generates RSA 2048 and Ed25519 keys with their TXT records', () => {
    const rsa = generateDkimKey('Example.ORG', 's2024');
    assert.equal(rsa.dnsName, 's2024._domainkey.example.org');
    assert.match(rsa.txt, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}$/);
    assert.match(rsa.zoneLine, /^s2024\._domainkey\.example\.org\. IN TXT \( "v=DKIM1; k=rsa; p=[^"]{200,}" "[^"]+" \)$/);
    assert.match(rsa.privateKey, /^-----BEGIN PRIVATE KEY-----/);
    const ed = generateDkimKey('example.org', 'ed', { type: 'ed25519' });
    assert.match(ed.txt, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
    assert.throws(() => generateDkimKey('bad domain', 's'));
    assert.throws(() => generateDkimKey('example.org', 'a;b'));
  });

  it('signs mail from configured domains (From: first); the signature verifies; others are left unsigned', async () => {
    const rsa = generateDkimKey('src.test', 'rsa1');
    const ed = generateDkimKey('other.test', 'ed1', { type: 'ed25519' });
    const signer = new MailauthDkimSigner({ keys: [rsa, ed] });
    const open = (m: string) => () => Readable.from([Buffer.from(m)]);
    const sig = await signer.sign('bounce@other.test', open(MSG));
    assert.ok(sig !== null);
    assert.match(sig, /^DKIM-Signature: .*d=src\.test;/s);
    assert.doesNotMatch(sig.replace(/\r\n/g, ''), /[\r\n]/);
    assert.ok(sig.endsWith('\r\n'));
    assert.deepEqual(await verify(sig + MSG, [rsa, ed]), ['pass']);
    const byEnvelope = await signer.sign('x@other.test', open(MSG.replace('alice@src.test', 'alice@unsigned.test')));
    assert.match(byEnvelope ?? '', /a=ed25519-sha256/);
    assert.deepEqual(await verify(byEnvelope + MSG.replace('alice@src.test', 'alice@unsigned.test'), [rsa, ed]), ['pass']);
    assert.equal(await signer.sign('x@unsigned.test', open(MSG.replace('alice@src.test', 'a@unsigned.test'))), null);
  });
});
