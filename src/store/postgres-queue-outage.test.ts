/**
 * The queue on PostgreSQL when the database fails: stopped -> every commit rejects with ERR_QUEUE_WRITE (the SMTP
 * reply 451 4.3.0, never a 250 or a 5xx) and quickly; started again -> intake and delivery work again without
 * reopening the store; a slow database (a lock held on the queue) makes intake wait, then succeed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { SmtpReplyError } from '../core/errors.ts';
import { MemoryLogger } from '../core/log.ts';
import { QueueRunner } from '../queue/index.ts';
import { ListBouncer, queueOne, ScriptedDeliverer } from '../queue/queue.case.ts';
import { startPostgres, type PostgresInstance } from '../testing/postgres.ts';
import { bringUp, stopRestarted, takeDown } from '../testing/postgres-outage.ts';
import { migrate } from './postgres-schema.ts';
import { PostgresMailQueue } from './postgres-queue.ts';

let pg: PostgresInstance;

before(async () => {
  pg = await startPostgres();
  const c = new Client(pg.url);
  await c.connect();
  await migrate(c);
  await c.end();
});

after(async () => {
  if (pg !== undefined) {
    await stopRestarted(pg);
    await pg.stop();
  }
});

test('postgres queue outage: stopped -> 451 4.3.0 (ERR_QUEUE_WRITE), restarted -> intake and delivery resume by themselves', async () => {
  const logger = new MemoryLogger();
  const q = await PostgresMailQueue.open(pg.url, { node: 'n1', poolSize: 4, connectTimeoutMs: 1000, leaseTimeMs: 3000, logger });
  const deliverer = new ScriptedDeliverer();
  const runner = new QueueRunner({ store: q, deliverer, bouncer: new ListBouncer(), pollIntervalMs: 50, errorPauseMs: 200, logger });
  try {
    runner.start();
    const first = await queueOne(q);
    await waitFor('the first message delivered', () => deliverer.jobs.some((j) => j.job.queueId === first));

    takeDown(pg);
    const started = Date.now();
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => queueOne(q, `Subject: down ${i}\r\n\r\nx\r\n`)));
    const took = Date.now() - started;
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      const e = (r as PromiseRejectedResult).reason as SmtpReplyError;
      assert.ok(e instanceof SmtpReplyError, String(e));
      assert.equal(e.code, 'ERR_QUEUE_WRITE');
      assert.equal(e.reply.code, 451);
      assert.equal(e.reply.enhanced, '4.3.0');
    }
    assert.ok(took < 5000, `the refusals came in ${took} ms`);
    assert.equal(q.stats().messagesCommitted, 1);

    await bringUp(pg);
    // No reopen, no restart of the store: the pool connects again.
    let ok: string | null = null;
    let failures = 0;
    const deadline = Date.now() + 10_000;
    while (ok === null && Date.now() < deadline) {
      try {
        ok = await queueOne(q, 'Subject: back\r\n\r\nx\r\n');
      } catch (err) {
        failures++;
        assert.equal((err as SmtpReplyError).code, 'ERR_QUEUE_WRITE');
        await sleep(100);
      }
    }
    assert.ok(ok !== null, 'intake works again');
    assert.equal(failures, 0, 'the pool dropped the connections the shutdown killed: the first commit after the restart succeeds');
    await waitFor('the runner to deliver again', () => deliverer.jobs.some((j) => j.job.queueId === ok), 15_000);
    await waitFor('the delivery recorded (queue empty)', async () => (await q.list()).length === 0).catch((err: unknown) => {
      throw new Error(`${String(err)}; log: ${JSON.stringify(logger.records.filter((r) => r.level !== 'debug').slice(-15))}`);
    });
  } finally {
    await runner.stop();
    await q.close();
  }
});

test('postgres queue: a slow database makes intake slower, not wrong', async () => {
  const q = await PostgresMailQueue.open(pg.url, { node: 'n1', poolSize: 4 });
  const locker = new Client(pg.url);
  await locker.connect();
  try {
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE queue_messages IN ACCESS EXCLUSIVE MODE');
    const started = Date.now();
    const pending = Promise.all(Array.from({ length: 20 }, (_, i) => queueOne(q, `Subject: slow ${i}\r\n\r\nx\r\n`)));
    let settled = false;
    void pending.then(() => { settled = true; }, () => { settled = true; });
    await sleep(800);
    assert.equal(settled, false, 'no commit resolves while the database cannot write');
    await locker.query('COMMIT');
    const ids = await pending;
    assert.ok(Date.now() - started >= 800);
    const listed = new Set((await q.list()).map((m) => m.queueId));
    for (const id of ids) assert.ok(listed.has(id));
  } finally {
    await locker.end();
    await q.close();
  }
});

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('postgres queue: admin commands and listings with the database down fail with ERR_STORE_UNAVAILABLE', async () => {
  const q = await PostgresMailQueue.open(pg.url, { node: 'cli', poolSize: 2, role: 'admin', connectTimeoutMs: 1000 });
  try {
    takeDown(pg);
    const unavailable = (e: unknown): boolean => (e as { code?: string }).code === 'ERR_STORE_UNAVAILABLE';
    await assert.rejects(q.list(), unavailable);
    await assert.rejects(q.get('01M8Y612Z5R54XT5G0AR'), unavailable);
    await assert.rejects(q.hold({ filter: {} }), unavailable);
    await assert.rejects(q.delete({ queueIds: ['01M8Y612Z5R54XT5G0AR'] }), unavailable);
  } finally {
    await bringUp(pg);
    await q.close();
  }
});
