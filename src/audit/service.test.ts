import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.ts';
import { MemoryLogger } from '../core/log.ts';
import { MemoryAuditHistory, type AuditHistory } from './history.ts';
import { AuditService, auditErrorCode } from './service.ts';
import type { AuditCheck } from './run.ts';
import type { Finding } from './finding.ts';

const DAY = 86_400_000;

function scripted(results: Finding[][]): AuditCheck {
  let i = 0;
  return { name: 'blocklist', run: async () => results[Math.min(i++, results.length - 1)]! };
}
const listed: Finding = { check: 'blocklist.listed', subject: '192.0.2.1 in z', severity: 'critical', summary: 'listed' };
const clean: Finding = { check: 'blocklist.clean', subject: '192.0.2.1 in z', severity: 'ok', summary: 'clean' };

test('service: due at once without history, then every interval on the injected clock; one error event per finding turning bad', async () => {
  const clock = new ManualClock(10 * DAY);
  const logger = new MemoryLogger();
  const history = new MemoryAuditHistory();
  const reports: number[] = [];
  const check = scripted([[clean], [listed], [listed], [clean], [listed]]);
  const s = new AuditService({ node: 'n', checks: () => [check], history, intervalMs: DAY, timeoutMs: 1000, logger, clock, schedule: false, onReport: (r) => reports.push(r.exitCode) });
  assert.equal((await s.tick())?.exitCode, 0);
  assert.equal(await s.tick(), null, 'not due again yet');
  clock.advance(DAY - 1);
  assert.equal(await s.tick(), null);
  clock.advance(1);
  assert.equal((await s.tick())?.exitCode, 1);
  clock.advance(DAY);
  assert.equal((await s.tick())?.exitCode, 1);
  const errors = () => logger.records.filter((r) => r.level === 'error');
  assert.equal(errors().length, 1, 'still listed: announced once');
  assert.equal(errors()[0]!.fields['err_code'], 'ERR_AUDIT_BLOCKLIST_LISTED');
  clock.advance(DAY);
  await s.tick();
  assert.ok(logger.records.some((r) => r.msg === 'audit finding resolved'));
  clock.advance(DAY);
  await s.tick();
  assert.equal(errors().length, 2, 'listed again after a clean audit: a new event');
  assert.deepEqual(reports, [0, 1, 1, 0, 1]);
  assert.equal(history.reports.length, 5);
  assert.equal((await s.latest())?.startedAt, clock.now());
  await s.stop();
});

test('service: a restart continues from the stored history (no audit until the interval is over); runNow joins a running audit', async () => {
  const clock = new ManualClock(100 * DAY);
  const history = new MemoryAuditHistory();
  const logger = new MemoryLogger();
  let runs = 0;
  let release: () => void = () => {};
  const slow: AuditCheck = { name: 'relay', run: async () => { runs++; await new Promise<void>((r) => { release = r; }); return [clean]; } };
  const a = new AuditService({ node: 'n', checks: () => [slow], history, intervalMs: DAY, timeoutMs: 10_000, logger, clock, schedule: false });
  const p1 = a.runNow('api');
  const p2 = a.runNow('api');
  await new Promise((r) => setTimeout(r, 20));
  release();
  assert.equal(await p1, await p2);
  assert.equal(runs, 1);
  await a.stop();
  clock.advance(DAY / 2);
  const b = new AuditService({ node: 'n', checks: () => [slow], history, intervalMs: DAY, timeoutMs: 10_000, logger, clock, schedule: false });
  assert.equal(await b.tick(), null, 'the stored audit is half a day old');
  assert.equal(b.nextDue(), 101 * DAY);
  await b.stop();
});

test('service: a failing history store is logged, the audit still reports', async () => {
  const broken: AuditHistory = {
    save: async () => { throw new Error('disk full'); }, list: async () => { throw new Error('no db'); }, close: async () => {},
  };
  const logger = new MemoryLogger();
  const s = new AuditService({ node: 'n', checks: () => [scripted([[listed]])], history: broken, intervalMs: DAY, timeoutMs: 1000, logger, schedule: false });
  const r = await s.runNow('cli');
  assert.equal(r.exitCode, 1);
  assert.ok(logger.records.some((x) => x.fields['err_code'] === 'ERR_AUDIT_HISTORY' && x.msg === 'audit report not stored'));
  assert.ok(logger.records.some((x) => x.fields['err_code'] === 'ERR_AUDIT_BLOCKLIST_LISTED'));
  assert.equal(auditErrorCode('relay.open'), 'ERR_AUDIT_RELAY_OPEN');
  assert.equal(auditErrorCode('dns.mta-sts'), 'ERR_AUDIT_DNS_MTA_STS');
  await s.stop();
});
