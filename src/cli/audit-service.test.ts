import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { parseConfig } from '../config/load.ts';
import { auditChecks } from './audit-service.ts';

test('auditChecks: the DNS/TLS check of the mail domains ("dns") is part of the audit; a DNS server that never answers makes it unreachable, never clean', async () => {
  // A UDP socket that reads and never answers: every lookup times out.
  const silent = createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
  try {
    const server = `127.0.0.1:${silent.address().port}`;
    const config = parseConfig({ localDomains: ['example.test'], audit: { dnsServers: [server], dnsTimeout: '300ms', relay: { enabled: false }, blocklists: [] } });
    const checks = auditChecks(config);
    assert.deepEqual(checks.map((c) => c.name), ['config', 'blocklist', 'dns']);
    const dns = checks.find((c) => c.name === 'dns')!;
    const findings = await dns.run({ signal: AbortSignal.timeout(20_000) } as Parameters<typeof dns.run>[0]);
    assert.ok(findings.length > 0);
    assert.ok(findings.some((f) => f.check === 'dns.mx' && f.severity === 'unreachable'), JSON.stringify(findings.map((f) => [f.check, f.severity])));
    assert.ok(!findings.some((f) => f.check.startsWith('dns.') && f.severity === 'ok'), 'no DNS finding is clean without an answer');
    const off = auditChecks(parseConfig({ localDomains: ['example.test'], audit: { mailDomains: false, relay: { enabled: false }, blocklists: [] } }));
    assert.ok(!off.some((c) => c.name === 'dns'));
  } finally {
    silent.close();
  }
});
