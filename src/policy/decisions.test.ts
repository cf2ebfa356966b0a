import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LogFields, Logger } from '../core/log.ts';
import { DecisionRecorder, address, decisionFromEvent, type DecisionStore, type NewDecision } from './decisions.ts';

function capture(): { logger: Logger; lines: { level: string; msg: string; fields: LogFields | undefined }[] } {
  const lines: { level: string; msg: string; fields: LogFields | undefined }[] = [];
  const logger: Logger = {
    debug: (msg, fields) => { lines.push({ level: 'debug', msg, fields }); },
    info: (msg, fields) => { lines.push({ level: 'info', msg, fields }); },
    warn: (msg, fields) => { lines.push({ level: 'warn', msg, fields }); },
    error: (msg, fields) => { lines.push({ level: 'error', msg, fields }); },
    child: () => logger,
  };
  return { logger, lines };
}

const d = (i: number): NewDecision => ({
  at: i, node: 'n', sessionId: null, clientIp: '127.0.0.2', listener: 'mx', helo: null, user: null, mailFrom: 'a@b', rcpt: 'c@d',
  action: 'reject', rule: 'default-deny', reason: null, reply: '554 5.7.1 no',
});

test('decisionFromEvent: addresses lower-cased without brackets; events without a recipient are not decisions', () => {
  const r = decisionFromEvent({ client_ip: '192.0.2.1', rcpt: '<A@B.example>', action: 'relay', rule: 'trusted-network', mail_from: '<>', session_id: 7 }, 'n1', 5);
  assert.equal(r?.rcpt, 'a@b.example');
  assert.equal(r?.mailFrom, '');
  assert.equal(r?.sessionId, '7');
  assert.equal(r?.reply, null);
  assert.equal(decisionFromEvent({ client_ip: '192.0.2.1', action: 'reject' }, 'n1', 5), null);
  assert.equal(decisionFromEvent(undefined, 'n1', 5), null);
  assert.equal(address(' <X@Y> '), 'x@y');
});

test('recorder: a failing store drops the batch, counts it, logs ERR_DECISIONS_WRITE, never throws to the caller; later batches go through', async () => {
  const { logger, lines } = capture();
  let fail = true;
  const stored: NewDecision[] = [];
  const store: DecisionStore = {
    append: async (rows) => { if (fail) throw Object.assign(new Error('disk I/O error'), { code: 'ERR_SQLITE_ERROR' }); stored.push(...rows); },
    search: async () => [], prune: async () => 0, close: async () => {},
  };
  const rec = new DecisionRecorder({ store, logger, retention: { maxAgeMs: 1e9, maxRows: 1e9 }, flushMs: 10, batchRows: 3 });
  for (let i = 0; i < 5; i++) rec.record(d(i)); // returns synchronously even though the store fails
  await rec.flush();
  assert.equal(rec.dropped, 5);
  assert.equal(rec.written, 0);
  const errors = lines.filter((l) => l.msg === 'decisions dropped');
  assert.equal(errors.length, 2, 'one error per dropped batch (3 + 2)');
  assert.equal(errors[0]!.level, 'error');
  assert.equal(errors[0]!.fields?.['err_code'], 'ERR_DECISIONS_WRITE');
  assert.equal(errors[0]!.fields?.['cause_code'], 'ERR_SQLITE_ERROR');
  assert.deepEqual(errors.map((e) => e.fields?.['rows']), [3, 2]);
  fail = false;
  rec.record(d(9));
  await rec.close();
  assert.deepEqual(stored.map((r) => r.at), [9]);
  assert.equal(rec.written, 1);
});

test('recorder: past maxBuffered waiting rows (a store that hangs), new decisions are dropped and counted; memory stays bounded', async () => {
  const { logger, lines } = capture();
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  let appended = 0;
  const store: DecisionStore = {
    append: async (rows) => { await gate; appended += rows.length; },
    search: async () => [], prune: async () => 0, close: async () => {},
  };
  const rec = new DecisionRecorder({ store, logger, retention: { maxAgeMs: 1e9, maxRows: 1e9 }, flushMs: 1, batchRows: 10, maxBuffered: 50 });
  for (let i = 0; i < 10; i++) rec.record(d(i));
  await new Promise((r) => setTimeout(r, 20)); // the first batch of 10 is in flight, hung
  for (let i = 0; i < 100; i++) rec.record(d(100 + i));
  assert.equal(rec.dropped, 50);
  assert.equal(lines.filter((l) => l.msg === 'decisions dropped')[0]?.fields?.['reason'], 'buffer full');
  release();
  await rec.close();
  assert.equal(appended, 60);
  assert.equal(rec.written, 60);
});

test('recorder: retention runs after a write at most once per pruneEveryMs; a prune failure is logged, not thrown', async () => {
  const { logger, lines } = capture();
  const prunes: number[] = [];
  let now = 1_000_000;
  const store: DecisionStore = {
    append: async () => {}, search: async () => [], close: async () => {},
    prune: async (r, at) => { prunes.push(at); if (prunes.length === 2) throw new Error('locked'); return 4; },
  };
  const rec = new DecisionRecorder({ store, logger, retention: { maxAgeMs: 1e9, maxRows: 1e9 }, flushMs: 1, batchRows: 1, pruneEveryMs: 60_000, now: () => now });
  rec.record(d(1)); await rec.flush();
  rec.record(d(2)); await rec.flush();
  assert.deepEqual(prunes, [1_000_000]);
  now += 60_000;
  rec.record(d(3)); await rec.flush();
  assert.deepEqual(prunes, [1_000_000, 1_060_000]);
  assert.equal(lines.find((l) => l.msg === 'decisions prune failed')?.fields?.['err_code'], 'ERR_DECISIONS_PRUNE');
  assert.equal(lines.find((l) => l.msg === 'decisions pruned')?.fields?.['rows'], 4);
  await rec.close();
});
