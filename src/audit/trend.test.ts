import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareReports, mergeHistory } from './trend.ts';
import type { CheckResult, Finding, Severity } from './finding.ts';

const f = (check: string, subject: string, severity: Severity): Finding => ({ check, subject, severity, summary: `${check} ${subject}` });
const r = (check: string, ...findings: Finding[]): CheckResult => ({ check, findings, durationMs: 1 });

test('trend: new, resolved and changed findings; checks the previous audit did not run are not news', () => {
  const prev = { checks: [r('config', f('config.trusted-network-public', 'trustedNetworks[1]', 'critical'), f('config.postmaster-unset', 'recipients.postmaster', 'warning'))] };
  const cur = [
    r('config', f('config.postmaster-unset', 'recipients.postmaster', 'warning'), f('config.hostname-not-fqdn', 'hostname', 'warning')),
    r('relay', f('relay.open', 'listener mx', 'critical')),
  ];
  assert.deepEqual(compareReports(prev, cur).map((c) => [c.kind, c.check, c.from, c.to]), [
    ['new', 'config.hostname-not-fqdn', null, 'warning'],
    ['resolved', 'config.trusted-network-public', 'critical', null],
  ]);
  assert.deepEqual(compareReports(null, cur), []);
});

test('trend: a subject whose finding changed its id within a check is one change', () => {
  const prev = { checks: [r('blocklist', f('blocklist.clean', '192.0.2.1 in z', 'ok'), f('blocklist.zone-unreachable', 'y', 'unreachable'))] };
  const cur = [r('blocklist', f('blocklist.listed', '192.0.2.1 in z', 'critical'), f('blocklist.zone-unreachable', 'y', 'unreachable'))];
  assert.deepEqual(compareReports(prev, cur).map((c) => [c.kind, c.check, c.subject, c.from, c.to]), [['changed', 'blocklist.listed', '192.0.2.1 in z', 'ok', 'critical']]);
});

test('trend: mergeHistory takes each check from the newest report that ran it', () => {
  const newest = { startedAt: 3, checks: [r('relay', f('relay.closed', 'mx', 'ok'))] };
  const older = { startedAt: 2, checks: [r('relay', f('relay.open', 'mx', 'critical')), r('config', f('config.clean', 'x', 'ok'))] };
  const m = mergeHistory([newest, older])!;
  assert.equal(m.startedAt, 3);
  assert.deepEqual(m.checks.map((c) => [c.check, c.findings[0]!.check]), [['relay', 'relay.closed'], ['config', 'config.clean']]);
  assert.equal(mergeHistory([]), null);
});
