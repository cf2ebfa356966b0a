import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../config/load.ts';
import { configCheck } from './config-check.ts';
import { renderAuditText } from './report.ts';
import { runAudit } from './run.ts';

const lint = (input: Record<string, unknown>) =>
  configCheck(parseConfig({ hostname: 'mx.example.org', ...input }, { baseDir: '/srv' }), { statMode: () => 0o700 });

test('config check: lint errors are critical, warnings warnings, a clean lint one ok', async () => {
  const run = async (input: Record<string, unknown>) => (await lint(input).run({ signal: new AbortController().signal, now: Date.now })).map((f) => [f.check, f.severity, f.subject]);
  assert.deepEqual(await run({}), [['config.clean', 'ok', 'embedded defaults']]);
  assert.deepEqual(await run({ trustedNetworks: ['0.0.0.0/0'], hostname: 'vm' }), [
    ['config.trusted-network-public', 'critical', 'trustedNetworks[0]'],
    ['config.hostname-not-fqdn', 'warning', 'hostname'],
  ]);
});

test('text report: a line per finding, the verdict, the changes; colour only when asked; control characters neutralised', async () => {
  const first = await runAudit({ node: 'n1', checks: [lint({})] });
  const evil = { name: 'blocklist', run: async () => [{ check: 'blocklist.listed', subject: '192.0.2.1 in z', severity: 'critical' as const, summary: 'listed: \x1b[2Jgone\r\nfake line' }] };
  const second = await runAudit({ node: 'n1', checks: [lint({ trustedNetworks: ['0.0.0.0/0'] }), evil], previous: first });
  const plain = renderAuditText(second, { hostname: 'mx.example.org' });
  assert.match(plain, /^relayguard audit of mx\.example\.org \(node n1\) at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, \d+\.\d s: PROBLEMS FOUND \(exit 1\)$/m);
  assert.match(plain, /^ {2}CRITICAL {4}trustedNetworks\[0\]: 0\.0\.0\.0\/0 covers every address on the Internet/m);
  assert.match(plain, /listed: \?\[2Jgone\?\?fake line/);
  assert.ok(!plain.includes('\x1b'));
  assert.match(plain, /^Changes since the audit of .*:$/m);
  assert.match(plain, /^ {2}new {6}config\.trusted-network-public trustedNetworks\[0\]: new -> CRITICAL/m);
  assert.match(plain, /^ {2}resolved config\.clean embedded defaults: ok -> gone$/m);
  const colour = renderAuditText(second, { colour: true });
  assert.match(colour, /\x1b\[1;31mCRITICAL {3}\x1b\[0m/);
  assert.match(renderAuditText(first), /No earlier audit of this node/);
});
