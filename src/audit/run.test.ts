import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.ts';
import { auditExitCode, runAudit, worst, type AuditCheck } from './run.ts';
import type { Finding, Severity } from './finding.ts';

const f = (severity: Severity, check = 'x.y', subject = 's'): Finding => ({ check, subject, severity, summary: severity });
const fixed = (name: string, findings: Finding[]): AuditCheck => ({ name, run: async () => findings });

test('run: every check runs; a throwing check and a hanging one are unreachable, the others still report', async () => {
  let ignoredSignal = false;
  const hang: AuditCheck = { name: 'hang', timeoutMs: 100, run: () => new Promise(() => { ignoredSignal = true; }) };
  const polite: AuditCheck = {
    name: 'polite', timeoutMs: 100,
    run: ({ signal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
  };
  const started = Date.now();
  const report = await runAudit({
    node: 'n', checks: [fixed('a', [f('ok')]), { name: 'boom', run: async () => { throw new Error('no route to host'); } }, hang, polite, fixed('b', [f('warning')])],
  });
  assert.ok(ignoredSignal);
  assert.ok(Date.now() - started < 3000, 'a check that ignores its signal is cut off shortly after its budget');
  assert.deepEqual(report.checks.map((c) => c.check), ['a', 'boom', 'hang', 'polite', 'b']);
  const boom = report.checks[1]!.findings[0]!;
  assert.equal(boom.severity, 'unreachable');
  assert.equal(boom.check, 'boom.failed');
  assert.match(boom.summary, /no route to host/);
  for (const i of [2, 3]) {
    const t = report.checks[i]!.findings[0]!;
    assert.equal(t.severity, 'unreachable');
    assert.match(t.summary, /did not finish within/);
    assert.equal(t.detail!['timedOut'], true);
  }
  assert.equal(report.checks[4]!.findings[0]!.severity, 'warning');
  assert.equal(report.exitCode, 1);
  assert.equal(report.status, 'unreachable');
});

test('run: a check that returns no finding is a failure, not a clean result', async () => {
  const r = await runAudit({ node: 'n', checks: [fixed('empty', [])] });
  assert.equal(r.checks[0]!.findings[0]!.severity, 'unreachable');
  assert.equal(r.exitCode, 1);
});

test('exit codes: 0 clean, 1 critical/unreachable/broken, 2 warnings only', () => {
  const c = (...s: Severity[]) => [{ check: 'c', findings: s.map((x) => f(x)), durationMs: 0 }];
  assert.equal(auditExitCode(c('ok', 'ok')), 0);
  assert.equal(auditExitCode(c('ok', 'warning')), 2);
  assert.equal(auditExitCode(c('warning', 'critical')), 1);
  assert.equal(auditExitCode(c('unreachable')), 1);
  assert.equal(auditExitCode(c('broken', 'warning')), 1);
  assert.equal(worst([f('warning'), f('broken'), f('ok')]), 'broken');
  assert.equal(worst([f('unreachable'), f('critical')]), 'critical');
});

test('run: the clock gives startedAt; the previous report gives the trend', async () => {
  const clock = new ManualClock(1_000_000);
  const first = await runAudit({ node: 'n', clock, checks: [fixed('relay', [f('ok', 'relay.closed', 'mx')]), fixed('blocklist', [f('ok', 'blocklist.clean', '192.0.2.1 in z')])] });
  assert.equal(first.startedAt, 1_000_000);
  assert.equal(first.previousStartedAt, null);
  assert.deepEqual(first.changes, []);
  clock.advance(5000);
  const second = await runAudit({
    node: 'n', clock, previous: first,
    checks: [fixed('relay', [f('critical', 'relay.open', 'mx')]), fixed('blocklist', [f('critical', 'blocklist.listed', '192.0.2.1 in z'), f('ok', 'blocklist.clean', '192.0.2.2 in z')]), fixed('dns', [f('ok')])],
  });
  assert.equal(second.previousStartedAt, 1_000_000);
  assert.deepEqual(second.changes.map((c) => [c.kind, c.check, c.subject, c.from, c.to]), [
    ['changed', 'relay.open', 'mx', 'ok', 'critical'],
    ['changed', 'blocklist.listed', '192.0.2.1 in z', 'ok', 'critical'],
    ['new', 'blocklist.clean', '192.0.2.2 in z', null, 'ok'],
  ]);
});
