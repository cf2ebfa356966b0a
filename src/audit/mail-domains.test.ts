import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { checkMailDomains, type MailDomainsInput } from './mail-domains.ts';
import { mailDomainsInputFromConfig } from './mail-domains-config.ts';
import type { HttpsFetchResult } from './https-fetch.ts';
import type { Finding } from './finding.ts';
import { memoryResolver, type MemoryZoneEntry } from '../testing/audit-resolver.ts';
import { defaultConfig } from '../config/schema.ts';

const IP = '192.0.2.25';
const POLICY = 'version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmax_age: 604800\r\n';

function goodZone(): Record<string, MemoryZoneEntry> {
  return {
    'example.test': { MX: [{ exchange: 'mail.example.test', priority: 10 }], TXT: [`v=spf1 ip4:${IP} -all`] },
    'mail.example.test': { A: [IP] },
    '25.2.0.192.in-addr.arpa': { PTR: ['mail.example.test'] },
    '_dmarc.example.test': { TXT: ['v=DMARC1; p=reject; rua=mailto:d@example.test'] },
    '_mta-sts.example.test': { TXT: ['v=STSv1; id=1'] },
    '_smtp._tls.example.test': { TXT: ['v=TLSRPTv1; rua=mailto:t@example.test'] },
  };
}

function input(zone: Record<string, MemoryZoneEntry>, fetch: (url: string) => HttpsFetchResult = () => ({ kind: 'response', status: 200, contentType: 'text/plain', location: null, body: POLICY }), extra: Partial<MailDomainsInput> = {}): MailDomainsInput {
  return {
    domains: ['example.test'], sendingAddresses: [IP], heloName: 'mail.example.test', listeners: [], dkimKeys: [],
    resolver: memoryResolver(zone), httpsFetch: async (url) => fetch(url), timeoutMs: 1000, ...extra,
  };
}

const notOk = (fs: readonly Finding[], check?: string): string[] =>
  fs.filter((f) => f.severity !== 'ok' && (check === undefined || f.check === check)).map((f) => `${f.severity} ${f.check} ${f.summary}`);

describe('checkMailDomains (in-memory DNS)', () => {
  it('a correct domain gives only ok findings, one per check', async () => {
    const r = await checkMailDomains(input(goodZone()));
    assert.equal(r.check, 'mail-domains');
    assert.deepEqual(notOk(r.findings), []);
    for (const c of ['dns.mx', 'dns.spf', 'dns.dmarc', 'dns.mta-sts', 'dns.tls-rpt', 'dns.fcrdns']) assert.ok(r.findings.some((f) => f.check === c && f.severity === 'ok'), c);
    assert.ok(r.durationMs >= 0);
  });

  it('a DNS timeout is unreachable in every check it touches, SERVFAIL is broken', async () => {
    const z = goodZone();
    z['_dmarc.example.test'] = { mode: 'TIMEOUT' };
    z['_mta-sts.example.test'] = { mode: 'SERVFAIL' };
    z['example.test'] = { ...z['example.test'], mode: 'TIMEOUT' };
    const r = await checkMailDomains(input(z));
    const sev = (check: string): string[] => r.findings.filter((f) => f.check === check).map((f) => f.severity);
    assert.deepEqual(sev('dns.mx'), ['unreachable']);
    assert.ok(sev('dns.spf').length > 0 && sev('dns.spf').every((s) => s === 'unreachable'), JSON.stringify(r.findings));
    assert.deepEqual(sev('dns.dmarc'), ['unreachable']);
    assert.deepEqual(sev('dns.mta-sts'), ['broken']);
  });

  it('an MX host whose address lookup times out is unreachable, not "points elsewhere"', async () => {
    const z = goodZone();
    z['mail.example.test'] = { mode: 'TIMEOUT' };
    const mx = (await checkMailDomains(input(z))).findings.filter((f) => f.check === 'dns.mx');
    assert.deepEqual(mx.map((f) => f.severity), ['unreachable'], JSON.stringify(mx));
  });

  it('MTA-STS fetch outcomes', async () => {
    const cases: Array<[HttpsFetchResult, string, RegExp]> = [
      [{ kind: 'unreachable', error: 'ECONNREFUSED' }, 'unreachable', /could not be fetched/],
      [{ kind: 'tls', error: 'CERT_HAS_EXPIRED' }, 'critical', /fails TLS verification/],
      [{ kind: 'response', status: 404, contentType: 'text/html', location: null, body: '' }, 'critical', /HTTP 404/],
      [{ kind: 'response', status: 302, contentType: 'text/html', location: 'https://x.test/', body: '' }, 'critical', /redirect/],
      [{ kind: 'response', status: 200, contentType: 'text/html', location: null, body: POLICY }, 'warning', /not text\/plain/],
      [{ kind: 'response', status: 200, contentType: 'text/plain', location: null, body: POLICY.replace('enforce', 'testing') }, 'warning', /testing/],
      [{ kind: 'response', status: 200, contentType: 'text/plain', location: null, body: POLICY.replace('mail.example.test', '*.other.test') }, 'critical', /match no "mx" pattern/],
      [{ kind: 'response', status: 200, contentType: 'text/plain', location: null, body: POLICY.replace('mail.example.test', '*.example.test') }, 'ok', /enforce/],
      [{ kind: 'broken', error: 'body larger than 65536 bytes' }, 'broken', /larger/],
    ];
    for (const [res, severity, re] of cases) {
      const r = await checkMailDomains(input(goodZone(), () => res));
      const sts = r.findings.filter((f) => f.check === 'dns.mta-sts');
      assert.ok(sts.some((f) => f.severity === severity && re.test(f.summary)), `${JSON.stringify(res)} -> ${JSON.stringify(sts)}`);
    }
  });

  it('SPF: missing is critical, or a warning when the domain signs with DKIM; +all is critical', async () => {
    const z = goodZone();
    z['example.test'] = { MX: z['example.test']!.MX! };
    assert.match(notOk((await checkMailDomains(input(z))).findings, 'dns.spf')[0]!, /^critical .*no SPF record/);
    const key = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const withDkim = await checkMailDomains(input(z, undefined, { dkimKeys: [{ domain: 'example.test', selector: 's', privateKeyPem: key }] }));
    assert.match(notOk(withDkim.findings, 'dns.spf')[0]!, /^warning .*no SPF record/);
    assert.match(notOk(withDkim.findings, 'dns.dkim')[0]!, /^critical .*no DKIM key record at s\._domainkey\.example\.test/);
    const plus = goodZone();
    plus['example.test'] = { ...plus['example.test'], TXT: [`v=spf1 ip4:${IP} +all`] };
    assert.ok(notOk((await checkMailDomains(input(plus))).findings, 'dns.spf').some((l) => /^critical .*"\+all"/.test(l)));
  });

  it('MX: null MX, IP literal, none, elsewhere', async () => {
    const mx = async (entry: MemoryZoneEntry): Promise<string[]> => {
      const z = goodZone();
      z['example.test'] = { ...z['example.test'], ...entry };
      return notOk((await checkMailDomains(input(z))).findings, 'dns.mx');
    };
    assert.match((await mx({ MX: [{ exchange: '', priority: 0 }] }))[0]!, /null MX/);
    assert.ok((await mx({ MX: [{ exchange: '192.0.2.25', priority: 10 }] })).some((l) => /is an IP address/.test(l)));
    assert.match((await mx({ MX: [] }))[0]!, /has no MX record/);
    const z = goodZone();
    z['example.test'] = { ...z['example.test'], MX: [{ exchange: 'mail.example.test', priority: 10 }, { exchange: 'backup.example.net', priority: 20 }] };
    z['backup.example.net'] = { A: ['198.51.100.1'] };
    assert.match(notOk((await checkMailDomains(input(z))).findings, 'dns.mx')[0]!, /^warning .*backup\.example\.net/);
  });

  it('DMARC of a subdomain falls back to the organizational domain (sp)', async () => {
    const z = goodZone();
    z['sub.example.test'] = { ...z['example.test'] };
    z['_dmarc.example.test'] = { TXT: ['v=DMARC1; p=reject; sp=none; rua=mailto:d@example.test'] };
    const r = await checkMailDomains(input(z, undefined, { domains: ['sub.example.test'] }));
    const d = r.findings.filter((f) => f.check === 'dns.dmarc');
    assert.ok(d.some((f) => f.severity === 'warning' && /p=none/.test(f.summary) && (f.detail as { inherited: boolean }).inherited), JSON.stringify(d));
  });

  it('DMARC: unrelated TXT at _dmarc, a record at the domain itself, report destinations that cannot receive mail', async () => {
    const z = goodZone();
    z['_dmarc.example.test'] = { TXT: ['v=DMARC1; p=reject; rua=mailto:d@example.test,mailto:r@nomail.example.test', 'google-site-verification=abc'] };
    z['nomail.example.test'] = { TXT: ['x'] };
    z['example.test'] = { ...z['example.test'], TXT: [...z['example.test']!.TXT!, 'v=DMARC1; p=none'] };
    const d = notOk((await checkMailDomains(input(z))).findings, 'dns.dmarc');
    assert.ok(d.some((l) => /^warning dns\.dmarc unrelated TXT record\(s\) at _dmarc\.example\.test: "google-site-verification=abc"/.test(l)), d.join('\n'));
    assert.ok(d.some((l) => /^warning dns\.dmarc a DMARC record at example\.test itself has no effect/.test(l)), d.join('\n'));
    assert.ok(d.some((l) => /^warning dns\.dmarc DMARC report destination nomail\.example\.test has no MX and no address/.test(l)), d.join('\n'));
    assert.equal(d.length, 3, d.join('\n'));
  });

  it('DKIM: matching, revoked, malformed', async () => {
    const pair = generateKeyPairSync('ed25519');
    const pem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const p = pair.publicKey.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');
    const run = async (txt: string): Promise<Finding[]> => {
      const z = goodZone();
      z['s._domainkey.example.test'] = { TXT: [txt] };
      return (await checkMailDomains(input(z, undefined, { dkimKeys: [{ domain: 'example.test', selector: 's', privateKeyPem: pem }] }))).findings.filter((f) => f.check === 'dns.dkim');
    };
    assert.equal((await run(`v=DKIM1; k=ed25519; p=${p}`))[0]!.severity, 'ok');
    assert.match((await run('v=DKIM1; k=ed25519; p='))[0]!.summary, /revoked/);
    assert.match((await run('k=ed25519; v=DKIM1; p=abc'))[0]!.summary, /syntax error.*"v" must be the first/);
  });

  it('FCrDNS: confirmed name different from HELO is a warning', async () => {
    const z = goodZone();
    z['25.2.0.192.in-addr.arpa'] = { PTR: ['host25.isp.test'] };
    z['host25.isp.test'] = { A: [IP] };
    assert.match(notOk((await checkMailDomains(input(z))).findings, 'dns.fcrdns')[0]!, /^warning .*host25\.isp\.test, not the HELO name mail\.example\.test/);
  });

  it('input from the configuration', () => {
    const c = defaultConfig();
    const cfg = { ...c, localDomains: ['example.test'], listeners: [{ name: 'mx', role: 'mx' as const, address: '0.0.0.0', port: 25, tls: 'starttls' as const, proxyProtocol: false }] };
    const i = mailDomainsInputFromConfig(cfg, { sendingAddresses: [IP], dkimPrivateKeys: new Map() });
    assert.deepEqual(i.domains, ['example.test']);
    assert.equal(i.heloName, c.hostname);
    assert.deepEqual(i.listeners, [{ name: 'mx', role: 'mx', address: '127.0.0.1', port: 25, tls: 'starttls', publicPort: 25 }]);
    assert.deepEqual(i.serverAddresses, [IP]);
  });
});
