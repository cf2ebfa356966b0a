import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { generate } from 'selfsigned';
import { externalDestinations, organizationalDomain, parseDmarc, parseDmarcUri } from './dmarc.ts';
import { parseStsPolicy, parseStsTxt, stsMxMatches } from './mta-sts.ts';
import { parseTlsRpt } from './tls-rpt.ts';
import { dkimKeyMatches, expectedDkimP, parseDkimKey } from './dkim-key.ts';
import { certCoversHost, expiryOf, tlsaVerdict } from './certificate.ts';

describe('DMARC', () => {
  it('parses a full record', () => {
    const p = parseDmarc('v=DMARC1; p=reject; sp=quarantine; pct=50; adkim=s; aspf=r; rua=mailto:dmarc@example.test,mailto:agg@reports.example.net!10m; ruf=mailto:f@example.test; fo=1:d; rf=afrf; ri=3600');
    assert.ok(p.ok, JSON.stringify(p));
    assert.equal(p.record.p, 'reject');
    assert.equal(p.record.sp, 'quarantine');
    assert.equal(p.record.pct, 50);
    assert.equal(p.record.adkim, 's');
    assert.deepEqual(p.record.rua.map((u) => [u.address, u.maxSize]), [['dmarc@example.test', null], ['agg@reports.example.net', 10 * 1024 * 1024]]);
    assert.deepEqual(p.record.fo, ['1', 'd']);
    assert.equal(p.record.ri, 3600);
    assert.deepEqual(externalDestinations('example.test', p.record), ['reports.example.net']);
  });

  const bad: Array<[string, RegExp]> = [
    ['v=DMARC1; p=block', /p: "block"/],
    ['v=DMARC1; rua=mailto:a@example.test', /"p" is missing/],
    ['v=DMARC1; p=none; pct=101', /pct: "101"/],
    ['v=DMARC1; p=none; pct=-1', /pct/],
    ['v=DMARC1; p=none; sp=maybe', /sp: "maybe"/],
    ['v=DMARC1; p=none; adkim=x', /adkim: "x"/],
    ['v=DMARC1; p=none; rua=dmarc@example.test', /not a DMARC URI/],
    ['v=DMARC1; p=none; rua=mailto:nobody', /not an email address/],
    ['v=DMARC1; p=none; fo=2', /fo: "2"/],
    ['v=DMARC1; p=none; rf=iodef', /rf/],
    ['v=DMARC1; p=none; ri=abc', /ri/],
    ['v=DMARC1; p=none; p=reject', /appears twice/],
    ['v=DMARC1; p=none; garbage', /not a tag=value/],
    ['v=DMARC2; p=none', /does not start with "v=DMARC1"/],
    ['p=none; v=DMARC1', /does not start/],
  ];
  for (const [rec, re] of bad) {
    it(`rejects ${JSON.stringify(rec)}`, () => {
      const p = parseDmarc(rec);
      assert.equal(p.ok, false);
      assert.match((p as { error: string }).error, re);
    });
  }

  it('warns about unknown tags and p not second', () => {
    const p = parseDmarc('v=DMARC1; rua=mailto:a@example.test; p=none; foo=bar');
    assert.ok(p.ok);
    assert.ok(p.warnings.some((w) => w.includes('unknown tag "foo"')));
    assert.ok(p.warnings.some((w) => w.includes('directly follow')));
  });

  it('organizational domain approximation', () => {
    assert.equal(organizationalDomain('a.b.example.test'), 'example.test');
    assert.equal(organizationalDomain('mail.example.co.uk'), 'example.co.uk');
    assert.equal(organizationalDomain('example.test'), 'example.test');
  });

  it('never throws; valid generated records parse and keep their values (property)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (s) => { parseDmarc(`v=DMARC1; ${s}`); parseDmarc(s); parseDmarcUri(s); }), { numRuns: 2000 });
    const local = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,15}$/);
    const dom = fc.stringMatching(/^[a-z][a-z0-9]{0,8}\.(test|example|net)$/);
    fc.assert(fc.property(
      fc.constantFrom('none', 'quarantine', 'reject'), fc.option(fc.constantFrom('none', 'quarantine', 'reject'), { nil: undefined }),
      fc.integer({ min: 0, max: 100 }), fc.array(fc.tuple(local, dom), { minLength: 1, maxLength: 3 }), fc.constantFrom(' ', '', '  '),
      (p, sp, pct, rua, ws) => {
        const rec = [`v=DMARC1`, `p=${p}`, ...(sp ? [`sp=${sp}`] : []), `pct=${pct}`, `rua=${rua.map(([l, d]) => `mailto:${l}@${d}`).join(',')}`].join(`;${ws}`);
        const r = parseDmarc(rec);
        assert.ok(r.ok, `${rec}: ${(r as { error?: string }).error}`);
        assert.equal(r.record.p, p);
        assert.equal(r.record.sp, sp ?? null);
        assert.equal(r.record.pct, pct);
        assert.deepEqual(r.record.rua.map((u) => u.address), rua.map(([l, d]) => `${l}@${d}`));
      }), { numRuns: 500 });
  });
});

describe('MTA-STS', () => {
  it('parses the TXT record', () => {
    assert.deepEqual(parseStsTxt('v=STSv1; id=20240101T000000;'), { ok: true, id: '20240101T000000', warnings: [] });
    assert.match((parseStsTxt('v=STSv1; id=has-dash') as { error: string }).error, /id: "has-dash"/);
    assert.match((parseStsTxt('v=STSv1;') as { error: string }).error, /"id" is missing/);
    assert.match((parseStsTxt('v=STSv1; id=' + 'a'.repeat(33)) as { error: string }).error, /1 to 32/);
    assert.match((parseStsTxt('v=STSv1; id=a; id=b') as { error: string }).error, /twice/);
  });

  it('parses policies and names the errors', () => {
    const ok = parseStsPolicy('version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmx: *.example.net\r\nmax_age: 604800\r\n');
    assert.ok(ok.ok);
    assert.deepEqual(ok.policy, { mode: 'enforce', mx: ['mail.example.test', '*.example.net'], maxAge: 604800 });
    assert.deepEqual(ok.warnings, []);
    const cases: Array<[string, RegExp]> = [
      ['mode: enforce\nmx: a.test\nmax_age: 86400\n', /"version" is missing/],
      ['version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 86400\n', /version: "STSv2"/],
      ['version: STSv1\nmode: enforcing\nmx: a.test\nmax_age: 86400\n', /mode: "enforcing"/],
      ['version: STSv1\nmode: enforce\nmax_age: 86400\n', /at least one "mx"/],
      ['version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n', /max_age/],
      ['version: STSv1\nmode: enforce\nmx: a.test\nmax_age: soon\n', /max_age: "soon"/],
      ['version: STSv1\nmode: enforce\nmx: a.test\n', /"max_age" is missing/],
      ['version: STSv1\nmode: enforce\nmx: *.*.test\nmax_age: 86400\n', /mx: "\*\.\*\.test"/],
      ['<html>not found</html>', /is not "key: value"/],
    ];
    for (const [text, re] of cases) {
      const p = parseStsPolicy(text);
      assert.equal(p.ok, false, text);
      assert.match((p as { error: string }).error, re, text);
    }
    const lf = parseStsPolicy('version: STSv1\nmode: testing\nmx: a.test\nmax_age: 3600\n');
    assert.ok(lf.ok);
    assert.ok(lf.warnings.some((w) => w.includes('CRLF')));
    assert.ok(lf.warnings.some((w) => w.includes('under a day')));
  });

  it('mx patterns match exactly one extra left label (property)', () => {
    const label = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);
    fc.assert(fc.property(label, label, label, (a, b, c) => {
      const base = `${b}.${c}`;
      assert.equal(stsMxMatches(`${a}.${base}`, `*.${base}`), true);
      assert.equal(stsMxMatches(`${a}.${a}.${base}`, `*.${base}`), false);
      assert.equal(stsMxMatches(base, `*.${base}`), false);
      assert.equal(stsMxMatches(`${a}.${base}.`, `${a}.${base}`), true);
      assert.equal(stsMxMatches(`${a.toUpperCase()}.${base}`, `${a}.${base}`), true);
    }));
  });

  it('never throws on garbage (fuzz)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => { parseStsPolicy(s); parseStsTxt(s); parseStsTxt(`v=STSv1; ${s}`); parseTlsRpt(`v=TLSRPTv1; ${s}`); parseDkimKey(s); }), { numRuns: 2000 });
  });
});

describe('TLS-RPT', () => {
  it('parses and rejects', () => {
    assert.deepEqual(parseTlsRpt('v=TLSRPTv1; rua=mailto:tls@example.test,https://r.example.test/v1'), { ok: true, rua: ['mailto:tls@example.test', 'https://r.example.test/v1'], warnings: [] });
    assert.match((parseTlsRpt('v=TLSRPTv1;') as { error: string }).error, /"rua" is missing/);
    assert.match((parseTlsRpt('v=TLSRPTv1; rua=http://x.test/') as { error: string }).error, /not a mailto: or https:/);
    assert.match((parseTlsRpt('v=TLSRPTv1; rua=tls@example.test') as { error: string }).error, /not a mailto: or https:/);
  });
});

describe('DKIM keys', () => {
  it('matches RSA (SPKI and PKCS#1 forms) and Ed25519, and refuses another key', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const pem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const spki = rsa.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    const pkcs1 = rsa.publicKey.export({ type: 'pkcs1', format: 'der' }).toString('base64');
    const r1 = parseDkimKey(`v=DKIM1; k=rsa; p=${spki}`);
    assert.ok(r1.ok);
    assert.equal(dkimKeyMatches(r1.record, pem), true);
    const r2 = parseDkimKey(`v=DKIM1; p=${pkcs1}`);
    assert.ok(r2.ok);
    assert.equal(dkimKeyMatches(r2.record, pem), true);
    const other = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    assert.equal(dkimKeyMatches(r1.record, other), false);
    const ed = generateKeyPairSync('ed25519');
    const edPem = ed.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const r3 = parseDkimKey(`v=DKIM1; k=ed25519; p=${expectedDkimP(edPem).p}`);
    assert.ok(r3.ok);
    assert.equal(dkimKeyMatches(r3.record, edPem), true);
    assert.equal(dkimKeyMatches(r3.record, pem), false);
  });

  it('names syntax errors', () => {
    assert.match((parseDkimKey('k=rsa; v=DKIM1; p=AAAA') as { error: string }).error, /"v" must be the first/);
    assert.match((parseDkimKey('v=DKIM1; k=rsa') as { error: string }).error, /"p" is missing/);
    assert.match((parseDkimKey('v=DKIM1; p=@@@') as { error: string }).error, /not base64/);
    const t = parseDkimKey('v=DKIM1; t=y; p=');
    assert.ok(t.ok && t.record.p === '' && t.warnings.length === 1);
  });
});

describe('certificates', async () => {
  const pems = await generate([{ name: 'commonName', value: 'mx.example.test' }], {
    keyType: 'ec', curve: 'P-256', algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'mx.example.test' }, { type: 2, value: '*.example.net' }] }],
  });
  const der = new X509Certificate(pems.cert).raw;

  it('expiry thresholds', () => {
    const day = 86_400_000;
    const from = new Date(0);
    const to = new Date(100 * day);
    assert.equal(expiryOf(from, to, 50 * day).severity, 'ok');
    assert.equal(expiryOf(from, to, 80 * day).severity, 'warning');
    assert.equal(expiryOf(from, to, 100 * day).severity, 'critical');
    assert.equal(expiryOf(new Date(10 * day), to, 5 * day).severity, 'critical');
  });

  it('names: DNS-ID, wildcard one label only', () => {
    assert.equal(certCoversHost(der, 'mx.example.test'), true);
    assert.equal(certCoversHost(der, 'a.example.net'), true);
    assert.equal(certCoversHost(der, 'a.b.example.net'), false);
    assert.equal(certCoversHost(der, 'other.example.test'), false);
  });

  it('TLSA: 3 1 1, 3 0 1, 3 1 2 match; wrong hash and PKIX usages do not', () => {
    const spki = Buffer.from(new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' }));
    const h = (alg: string, b: Buffer): Uint8Array => new Uint8Array(createHash(alg).update(b).digest());
    assert.equal(tlsaVerdict([{ certUsage: 3, selector: 1, match: 1, data: h('sha256', spki) }], [der]).matchedIndex, 0);
    assert.equal(tlsaVerdict([{ certUsage: 3, selector: 0, match: 1, data: h('sha256', der) }], [der]).matchedIndex, 0);
    assert.equal(tlsaVerdict([{ certUsage: 3, selector: 1, match: 2, data: h('sha512', spki) }], [der]).matchedIndex, 0);
    assert.equal(tlsaVerdict([{ certUsage: 3, selector: 0, match: 0, data: new Uint8Array(der) }], [der]).matchedIndex, 0);
    const wrong = tlsaVerdict([{ certUsage: 3, selector: 1, match: 1, data: h('sha256', Buffer.from('x')) }], [der]);
    assert.equal(wrong.matchedIndex, -1);
    assert.equal(wrong.usable, 1);
    assert.match(wrong.suggested, /^3 1 1 [0-9a-f]{64}$/);
    const pkix = tlsaVerdict([{ certUsage: 1, selector: 1, match: 1, data: h('sha256', spki) }], [der]);
    assert.equal(pkix.usable, 0);
    assert.match(pkix.unusable[0]!, /PKIX-EE/);
  });
});
