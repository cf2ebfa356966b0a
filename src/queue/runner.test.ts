import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ManualClock } from '../core/clock.ts';
import { MemoryLogger } from '../core/log.ts';
import { newQueueId } from '../core/queue-id.ts';
import type { Reply } from '../core/reply.ts';
import type { Bouncer, DelayedRecipient, Deliverer, DeliveryJob, FailedRecipient, QueuedMessageView, RecipientOutcome } from './deliverer.ts';
import { IndexDb } from './index-db.ts';
import type { MessageRecord } from './index-db.ts';
import { backoffDelay, DEFAULT_RETRY_POLICY, QueueRunner } from './runner.ts';
import type { QueueRunnerOptions } from './runner.ts';
import { QueueStore } from './store.ts';
import type { IncomingEnvelope } from './store.ts';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = 1_700_000_000_000;

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-runner-'));
  dirs.push(d);
  return d;
}

function envelope(over: Partial<IncomingEnvelope> = {}): IncomingEnvelope {
  return {
    sender: 'alice@example.org',
    recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE', ORCPT: 'rfc822;bob@example.net' } }],
    clientIp: '192.0.2.10',
    helo: 'client.example.org',
    user: null,
    listener: 'mx',
    mailParams: { BODY: '8BITMIME' },
    ...over,
  };
}

function rcpts(...addresses: string[]): IncomingEnvelope['recipients'] {
  return addresses.map((address) => ({ address }));
}

async function queueOne(store: QueueStore, body = 'Subject: hi\r\n\r\nHello\r\n', env: IncomingEnvelope = envelope()): Promise<string> {
  const msg = await store.beginMessage();
  await pipeline(Readable.from([Buffer.from(body)]), msg.body);
  await msg.commit(env);
  return msg.queueId;
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const R451: Reply = { code: 451, enhanced: '4.3.0', text: 'Try again later' };
const R550: Reply = { code: 550, enhanced: '5.1.1', text: 'No such user' };
const R250: Reply = { code: 250, enhanced: '2.0.0', text: 'Ok: queued as X' };

type Script = (job: DeliveryJob, signal: AbortSignal) => Promise<readonly RecipientOutcome[]> | readonly RecipientOutcome[];

/** A deliverer that reads the whole body (so body faults surface) and then answers as the script says. */
class FakeDeliverer implements Deliverer {
  script: Script;
  readonly jobs: { job: DeliveryJob; body: string | null; bodyError: Error | null }[] = [];
  readBody = true;
  constructor(script: Script = (job) => job.recipients.map((r) => ({ address: r.address, outcome: 'delivered', reply: R250 }))) {
    this.script = script;
  }
  async deliver(job: DeliveryJob, signal: AbortSignal): Promise<readonly RecipientOutcome[]> {
    const entry = { job, body: null as string | null, bodyError: null as Error | null };
    this.jobs.push(entry);
    if (this.readBody) {
      try {
        entry.body = (await readAll(job.openBody())).toString('utf8');
      } catch (err) {
        entry.bodyError = err as Error;
        // What a real client does: abandon the transaction, defer everyone.
        return job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', diagnostic: `body read failed: ${String(err)}` }));
      }
    }
    return this.script(job, signal);
  }
  deliveries(address: string): number {
    return this.jobs.filter((j) => j.job.recipients.some((r) => r.address === address)).length;
  }
}

class FakeBouncer implements Bouncer {
  readonly bounces: { message: QueuedMessageView; recipients: readonly FailedRecipient[] }[] = [];
  readonly delays: { message: QueuedMessageView; recipients: readonly DelayedRecipient[] }[] = [];
  fail = false;
  async bounce(message: QueuedMessageView, recipients: readonly FailedRecipient[]): Promise<void> {
    if (this.fail) throw new Error('bounce queue unavailable');
    this.bounces.push({ message, recipients });
  }
  async delayed(message: QueuedMessageView, recipients: readonly DelayedRecipient[]): Promise<void> {
    this.delays.push({ message, recipients });
  }
}

function setup(over: Partial<QueueRunnerOptions> & { dataDir?: string; inlineMaxBytes?: number } = {}) {
  const clock = (over.clock as ManualClock | undefined) ?? new ManualClock(T0);
  const logger = new MemoryLogger();
  const store = QueueStore.open({
    dataDir: over.dataDir ?? tempDataDir(), clock, logger,
    ...(over.inlineMaxBytes === undefined ? {} : { inlineMaxBytes: over.inlineMaxBytes }),
  });
  const deliverer = (over.deliverer as FakeDeliverer | undefined) ?? new FakeDeliverer();
  const bouncer = (over.bouncer as FakeBouncer | undefined) ?? new FakeBouncer();
  const runner = new QueueRunner({ ...over, store, deliverer, bouncer, clock, logger });
  const close = async (): Promise<void> => {
    await runner.stop();
    await store.close();
  };
  return { clock, logger, store, deliverer, bouncer, runner, close };
}

test('runner: delivered recipients leave the queue, body and records both', async () => {
  const t = setup();
  const body = 'Message-ID: <d@test>\r\nSubject: hi\r\n\r\nHello\r\n';
  const id = await queueOne(t.store, body, envelope({ recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE' } }, { address: 'carol@example.com' }] }));
  const summary = await t.runner.runOnce();
  assert.deepEqual(summary, { messages: 1, delivered: 2, deferred: 0, bounced: 0, expired: 0, corrupt: 0, finished: 1 });
  const [j] = t.deliverer.jobs;
  assert.ok(j);
  assert.equal(j.body, body);
  assert.equal(j.job.queueId, id);
  assert.equal(j.job.sender, 'alice@example.org');
  assert.equal(j.job.size, Buffer.byteLength(body));
  assert.equal(j.job.attempt, 1);
  assert.equal(j.job.messageId, '<d@test>');
  assert.deepEqual(j.job.mailParams, { BODY: '8BITMIME' });
  assert.deepEqual(j.job.recipients, [
    { address: 'bob@example.net', params: { NOTIFY: 'FAILURE' }, attempts: 0 },
    { address: 'carol@example.com', params: {}, attempts: 0 },
  ]);
  assert.deepEqual(t.store.list(), []);
  assert.deepEqual(readdirSync(join(t.store.dataDir, 'spool', 'msg')), []);
  assert.equal(t.bouncer.bounces.length, 0);
  assert.ok(t.logger.records.some((r) => r.msg === 'recipient delivered' && r.fields.rcpt === 'carol@example.com'));
  assert.deepEqual(await t.runner.runOnce(), { messages: 0, delivered: 0, deferred: 0, bounced: 0, expired: 0, corrupt: 0, finished: 0 });
  await t.close();
});

test('runner: backoff is 5 min doubling to 4 h, driven by the clock', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451, remoteMta: 'mx.example.net [192.0.2.7]' })));
  const t = setup({ deliverer });
  const id = await queueOne(t.store);
  const delays: number[] = [];
  for (let i = 0; i < 10; i++) {
    const s = await t.runner.runOnce();
    assert.equal(s.deferred, 1);
    const r = t.store.get(id)!.recipients[0]!;
    assert.equal(r.state, 'deferred');
    assert.equal(r.attempts, i + 1);
    assert.equal(r.lastReply, '451 4.3.0 Try again later');
    assert.equal(r.dsnStatus, '4.3.0');
    assert.equal(r.remoteMta, 'mx.example.net [192.0.2.7]');
    assert.deepEqual(r.reply, R451);
    delays.push((r.nextAttemptAt! - t.clock.now()) / MIN);
    // Not due a minute early.
    t.clock.set(r.nextAttemptAt! - MIN);
    assert.equal((await t.runner.runOnce()).messages, 0);
    t.clock.set(r.nextAttemptAt!);
  }
  assert.deepEqual(delays, [5, 10, 20, 40, 80, 160, 240, 240, 240, 240]);
  assert.equal(deliverer.jobs.at(-1)!.job.attempt, 10);
  assert.equal(t.store.list({ state: 'deferred' }).length, 1);
  await t.close();
});

test('runner: backoffDelay and jitter are configurable and deterministic with a fixed random source', () => {
  const p = { ...DEFAULT_RETRY_POLICY, minimalBackoffMs: 1000, maximalBackoffMs: 10_000 };
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, p)), [1000, 2000, 4000, 8000, 10_000, 10_000]);
  assert.equal(backoffDelay(1000, p), 10_000);
  assert.equal(backoffDelay(1, { ...p, jitter: 0.2 }, () => 0.5), 900);
  assert.equal(backoffDelay(5, { ...p, jitter: 0.2 }, () => 1), 8000);
  assert.throws(() => setup({ retry: { minimalBackoffMs: 10, maximalBackoffMs: 5 } }), RangeError);
});

test('runner: jitter shortens the recorded next attempt', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
  const t = setup({ deliverer, retry: { jitter: 0.5 }, random: () => 0.5 });
  const id = await queueOne(t.store);
  await t.runner.runOnce();
  assert.equal(t.store.get(id)!.recipients[0]!.nextAttemptAt! - T0, 3.75 * MIN);
  await t.close();
});

test('runner: a deferral at the end of the lifetime bounces with 4.4.7; the last attempt is at the lifetime', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
  const t = setup({ deliverer });
  const id = await queueOne(t.store);
  let attempts = 0;
  for (;;) {
    const s = await t.runner.runOnce();
    attempts += s.messages;
    const d = t.store.get(id);
    if (d === null) {
      assert.equal(s.expired, 1);
      assert.equal(s.bounced, 1);
      break;
    }
    assert.ok(d.recipients[0]!.nextAttemptAt! <= T0 + 5 * DAY, 'never scheduled past the lifetime');
    t.clock.set(d.recipients[0]!.nextAttemptAt!);
    assert.ok(attempts < 100);
  }
  assert.equal(t.clock.now(), T0 + 5 * DAY, 'the final attempt happened at the lifetime');
  // 5+10+20+40+80+160 min = 315 min, then every 240 min: 28 more before the lifetime, then the final one.
  assert.equal(attempts, 1 + 6 + 28 + 1);
  assert.equal(t.bouncer.bounces.length, 1);
  const [b] = t.bouncer.bounces[0]!.recipients;
  assert.equal(b?.address, 'bob@example.net');
  assert.equal(b?.status, '4.4.7');
  assert.deepEqual(b?.reply, R451);
  assert.match(b?.diagnostic ?? '', /delivery time expired after 36 attempts; last error: 451 4\.3\.0 Try again later/);
  assert.deepEqual(b?.params, { NOTIFY: 'FAILURE', ORCPT: 'rfc822;bob@example.net' });
  assert.equal(t.bouncer.bounces[0]!.message.queueId, id);
  assert.deepEqual(t.store.list(), []);
  await t.close();
});

test('runner: a shorter configured lifetime bounces sooner', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', diagnostic: 'connect to mx.example.net: Connection refused' })));
  const t = setup({ deliverer, retry: { lifetimeMs: 30 * MIN, minimalBackoffMs: 10 * MIN, maximalBackoffMs: 20 * MIN } });
  const id = await queueOne(t.store);
  const times: number[] = [];
  while (t.store.get(id) !== null) {
    times.push((t.clock.now() - T0) / MIN);
    await t.runner.runOnce();
    const d = t.store.get(id);
    if (d) t.clock.set(d.recipients[0]!.nextAttemptAt!);
  }
  assert.deepEqual(times, [0, 10, 30]);
  assert.equal(t.bouncer.bounces[0]!.recipients[0]!.status, '4.4.7');
  assert.match(t.bouncer.bounces[0]!.recipients[0]!.diagnostic!, /Connection refused/);
  await t.close();
});

test('runner: partial outcome: the bounced recipient is reported at once and alone, the deferred one is retried', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r): RecipientOutcome => {
    if (r.address.startsWith('ok')) return { address: r.address, outcome: 'delivered', reply: R250 };
    if (r.address.startsWith('no')) return { address: r.address, outcome: 'bounced', reply: R550, remoteMta: 'mx.example.net' };
    return job.attempt === 1 ? { address: r.address, outcome: 'deferred', reply: R451 } : { address: r.address, outcome: 'delivered', reply: R250 };
  }));
  const t = setup({ deliverer });
  const id = await queueOne(t.store, undefined, envelope({ recipients: rcpts('ok@example.net', 'later@example.net', 'no@example.net') }));
  assert.deepEqual(await t.runner.runOnce(), { messages: 1, delivered: 1, deferred: 1, bounced: 1, expired: 0, corrupt: 0, finished: 0 });
  assert.equal(t.bouncer.bounces.length, 1);
  assert.deepEqual(t.bouncer.bounces[0]!.recipients, [{
    address: 'no@example.net', params: {}, status: '5.1.1', reply: R550, remoteMta: 'mx.example.net', diagnostic: null,
    attempts: 1, lastAttemptAt: T0,
  }]);
  const d = t.store.get(id)!;
  assert.deepEqual(d.recipients.map((r) => [r.address, r.state]), [['ok@example.net', 'delivered'], ['later@example.net', 'deferred'], ['no@example.net', 'bounced']]);
  assert.equal(d.recipients[2]!.notifiedAt, T0);
  t.clock.advance(5 * MIN);
  assert.deepEqual(await t.runner.runOnce(), { messages: 1, delivered: 1, deferred: 0, bounced: 0, expired: 0, corrupt: 0, finished: 1 });
  assert.deepEqual(deliverer.jobs[1]!.job.recipients.map((r) => [r.address, r.attempts]), [['later@example.net', 1]], 'only the open recipient is retried');
  assert.equal(deliverer.jobs[1]!.job.attempt, 2);
  assert.equal(t.bouncer.bounces.length, 1, 'the bounce is not sent twice');
  assert.equal(t.store.get(id), null);
  await t.close();
});

test('runner: a message from <> is never bounced; its failures are logged and dropped', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'bounced', reply: R550 })));
  const t = setup({ deliverer, retry: { delayWarningMs: MIN } });
  const id = await queueOne(t.store, 'Subject: Undelivered Mail Returned to Sender\r\n\r\n.', envelope({ sender: '' }));
  const s = await t.runner.runOnce();
  assert.equal(s.bounced, 1);
  assert.equal(s.finished, 1);
  assert.equal(t.bouncer.bounces.length, 0);
  assert.equal(t.store.get(id), null);
  assert.ok(t.logger.records.some((r) => r.level === 'warn' && r.msg === 'bounce of a bounce discarded' && r.fields.queue_id === id));
  await t.close();
});

test('runner: a failing bouncer keeps the message until the bounce is queued', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'bounced', reply: R550 })));
  const t = setup({ deliverer });
  t.bouncer.fail = true;
  const id = await queueOne(t.store);
  await t.runner.runOnce();
  const d = t.store.get(id)!;
  assert.equal(d.recipients[0]!.notifiedAt, null);
  assert.equal(d.nextRunAt, T0 + 5 * MIN);
  assert.equal((await t.runner.runOnce()).finished, 0, 'not before the minimal backoff');
  t.bouncer.fail = false;
  t.clock.advance(5 * MIN);
  const s = await t.runner.runOnce();
  assert.equal(s.finished, 1);
  assert.equal(s.messages, 0, 'no new delivery attempt');
  assert.equal(deliverer.jobs.length, 1);
  assert.equal(t.bouncer.bounces.length, 1);
  assert.equal(t.store.get(id), null);
  await t.close();
});

test('runner: the delay warning goes out once, after the configured delay, never for <>', async () => {
  const deliverer = new FakeDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
  const t = setup({ deliverer, retry: { delayWarningMs: 4 * HOUR } });
  const id = await queueOne(t.store);
  const nullSender = await queueOne(t.store, undefined, envelope({ sender: '' }));
  const warnedAt: number[] = [];
  for (let i = 0; i < 10; i++) {
    await t.runner.runOnce();
    if (t.bouncer.delays.length > warnedAt.length) warnedAt.push(t.clock.now() - T0);
    t.clock.set(t.store.get(id)!.recipients[0]!.nextAttemptAt!);
  }
  // Attempts at 0, 5, 15, 35, 75, 155, 315 min...: the first at or after 240 min is at 315 min.
  assert.deepEqual(warnedAt, [315 * MIN]);
  const [w] = t.bouncer.delays;
  assert.equal(w?.message.queueId, id);
  assert.equal(w?.recipients[0]?.address, 'bob@example.net');
  assert.equal(w?.recipients[0]?.status, '4.3.0');
  assert.equal(w?.recipients[0]?.expiresAt, T0 + 5 * DAY);
  assert.equal(w?.recipients[0]?.nextAttemptAt, T0 + (315 + 240) * MIN);
  assert.equal(t.store.get(id)!.delayWarnedAt, T0 + 315 * MIN);
  assert.equal(t.store.get(nullSender)!.delayWarnedAt, null);
  await t.close();
});

test('runner: held messages are skipped until released', async () => {
  const t = setup();
  const id = await queueOne(t.store);
  assert.deepEqual(t.store.hold({ queueIds: [id] }).changed, [id]);
  assert.equal((await t.runner.runOnce()).messages, 0);
  assert.equal(t.deliverer.jobs.length, 0);
  assert.deepEqual(t.store.release({ queueIds: [id] }).changed, [id]);
  assert.equal((await t.runner.runOnce()).delivered, 1);
  await t.close();
});

test('runner: a message held after it was selected is not delivered (state read again before delivery)', async () => {
  const t = setup({ concurrency: 1 });
  const a = await queueOne(t.store);
  t.clock.advance(1);
  const b = await queueOne(t.store);
  t.deliverer.script = (job) => {
    if (job.queueId === a) t.store.hold({ queueIds: [b] });
    return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered' }));
  };
  const s = await t.runner.runOnce();
  assert.equal(s.messages, 1);
  assert.deepEqual(t.deliverer.jobs.map((j) => j.job.queueId), [a]);
  assert.equal(t.store.get(b)?.state, 'hold');
  await t.close();
});

test('runner: corrupt messages are never delivered: found at recovery, or while reading the body', async () => {
  const dataDir = tempDataDir();
  const clock = new ManualClock(T0);
  const first = QueueStore.open({ dataDir, clock, inlineMaxBytes: 0 });
  const truncated = await queueOne(first, 'Subject: t\r\n\r\n' + 'x'.repeat(1000));
  await first.close();
  truncateSync(join(dataDir, 'spool', 'msg', `${truncated}.eml`), 100);

  const t = setup({ dataDir, clock, inlineMaxBytes: 0 });
  assert.deepEqual(t.store.recovery?.badBodies, [truncated]);
  assert.equal(t.store.get(truncated)?.state, 'corrupt');
  assert.match(t.store.get(truncated)?.stateReason ?? '', /100 bytes, 1014 were queued/);

  // Damaged after recovery: the runner finds out while the deliverer reads the body.
  const shrunk = await queueOne(t.store, 'Subject: s\r\n\r\n' + 'y'.repeat(200_000));
  const vanished = await queueOne(t.store);
  const grown = await queueOne(t.store, 'Subject: g\r\n\r\nshort\r\n');
  truncateSync(join(dataDir, 'spool', 'msg', `${shrunk}.eml`), 70_000);
  unlinkSync(join(dataDir, 'spool', 'msg', `${vanished}.eml`));
  writeFileSync(join(dataDir, 'spool', 'msg', `${grown}.eml`), 'Subject: g\r\n\r\nshort\r\nand more appended\r\n');
  const s = await t.runner.runOnce();
  assert.equal(s.corrupt, 3);
  assert.equal(s.delivered, 0);
  for (const id of [shrunk, vanished, grown]) {
    const d = t.store.get(id)!;
    assert.equal(d.state, 'corrupt', id);
    assert.match(d.stateReason ?? '', /body unreadable during delivery/);
    const job = t.deliverer.jobs.find((j) => j.job.queueId === id)!;
    assert.equal(job.body, null, 'the body stream errored instead of ending');
    assert.ok(job.bodyError);
  }
  assert.ok(!t.deliverer.jobs.some((j) => j.job.queueId === truncated));
  assert.equal(t.logger.records.filter((r) => r.level === 'error' && r.msg === 'queued message body is corrupt; set aside').length, 3);
  assert.equal((await t.runner.runOnce()).messages, 0, 'set aside: not tried again');
  await t.close();
});

test('runner: inline bodies: delivered from the index; one missing or of the wrong size is set aside as corrupt', async () => {
  const { DatabaseSync } = await import('node:sqlite');
  const t = setup();
  const good = await queueOne(t.store, 'Subject: good\r\n\r\nfine\r\n');
  const vanished = await queueOne(t.store);
  const shrunk = await queueOne(t.store, 'Subject: s\r\n\r\n' + 'y'.repeat(2000));
  const grown = await queueOne(t.store, 'Subject: g\r\n\r\nshort\r\n');
  for (const id of [good, vanished, shrunk, grown]) assert.equal(t.store.get(id)?.bodyInline, true);
  // Damage them behind the store's back, through another connection.
  const db = new DatabaseSync(join(t.store.dataDir, 'queue.db'));
  db.prepare('DELETE FROM bodies WHERE queue_id = ?').run(vanished);
  db.prepare('UPDATE bodies SET data = ? WHERE queue_id = ?').run(Buffer.from('Subject: s\r\n\r\nyyy'), shrunk);
  db.prepare('UPDATE bodies SET data = ? WHERE queue_id = ?').run(Buffer.from('Subject: g\r\n\r\nshort\r\nand more appended\r\n'), grown);
  db.close();
  const s = await t.runner.runOnce();
  assert.equal(s.delivered, 1);
  assert.equal(s.corrupt, 3);
  assert.equal(t.deliverer.jobs.find((j) => j.job.queueId === good)?.body, 'Subject: good\r\n\r\nfine\r\n');
  assert.equal(t.store.get(good), null, 'delivered and removed');
  for (const id of [vanished, shrunk, grown]) {
    const d = t.store.get(id)!;
    assert.equal(d.state, 'corrupt', id);
    assert.match(d.stateReason ?? '', /body unreadable during delivery: Inline body/);
    const job = t.deliverer.jobs.find((j) => j.job.queueId === id)!;
    assert.equal(job.body, null, 'the body stream errored instead of ending');
    assert.ok(job.bodyError);
  }
  await t.close();
});

test('runner: at least once: a deliverer that fails after the remote 250 leaves the recipient open, so it is delivered again', async () => {
  let remoteAccepted = 0;
  const deliverer = new FakeDeliverer((job) => {
    remoteAccepted++;
    if (remoteAccepted === 1) throw new Error('connection lost after the final 250');
    return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered', reply: R250 }));
  });
  const t = setup({ deliverer });
  const id = await queueOne(t.store);
  const s1 = await t.runner.runOnce();
  assert.equal(s1.deferred, 1);
  const r = t.store.get(id)!.recipients[0]!;
  assert.equal(r.state, 'deferred');
  assert.match(r.lastReply ?? '', /delivery failed: connection lost/);
  t.clock.set(r.nextAttemptAt!);
  assert.equal((await t.runner.runOnce()).delivered, 1);
  assert.equal(remoteAccepted, 2, 'delivered twice: a duplicate, never a loss');
  assert.equal(t.store.get(id), null);
  await t.close();
});

test('runner: missing, unknown and invalid outcomes defer; a message deleted during delivery drops its outcomes', async () => {
  const t = setup();
  const id = await queueOne(t.store, undefined, envelope({ recipients: rcpts('a@example.net', 'b@example.net', 'a@example.net') }));
  t.deliverer.script = () => [
    { address: 'a@example.net', outcome: 'delivered' },
    { address: 'stranger@example.net', outcome: 'delivered' },
    { address: 'b@example.net', outcome: 'maybe' as never },
  ];
  const s = await t.runner.runOnce();
  assert.deepEqual([s.delivered, s.deferred], [1, 2]);
  const d = t.store.get(id)!;
  assert.deepEqual(d.recipients.map((r) => r.state), ['delivered', 'deferred', 'deferred']);
  assert.match(d.recipients[1]!.diagnostic!, /unknown outcome "maybe"/);
  assert.equal(d.recipients[2]!.diagnostic, 'no outcome reported by the deliverer');
  assert.ok(t.logger.records.some((r) => r.msg === 'deliverer reported an unknown recipient' && r.fields.rcpt === 'stranger@example.net'));

  t.clock.advance(5 * MIN);
  t.deliverer.script = (job) => {
    t.store.delete({ queueIds: [job.queueId] });
    return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered' }));
  };
  assert.equal((await t.runner.runOnce()).messages, 1);
  assert.equal(t.store.get(id), null);
  assert.ok(t.logger.records.some((r) => r.msg === 'message deleted during delivery; outcomes dropped'));
  await t.close();
});

test('runner: stop() aborts deliveries in flight and records nothing for them', async () => {
  const t = setup();
  const id = await queueOne(t.store);
  let started!: () => void;
  const isStarted = new Promise<void>((r) => { started = r; });
  t.deliverer.script = (_job, signal) => new Promise((_resolve, reject) => {
    started();
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  t.runner.start();
  await isStarted;
  await t.runner.stop();
  const r = t.store.get(id)!.recipients[0]!;
  assert.deepEqual([r.state, r.attempts], ['pending', 0]);
  assert.equal(t.runner.stats().state, 'stopped');
  await t.store.close();
});

test('runner: a job outliving jobTimeoutMs is aborted with a TimeoutError; a finished job leaves no timer behind', async () => {
  const t = setup({ jobTimeoutMs: 50 });
  const id = await queueOne(t.store);
  // A finished job's timer is cleared: its signal never fires later. (AbortSignal.any with AbortSignal.timeout
  // kept every job's timeout signal and timer alive for the whole job timeout, an hour by default: issue 9, LK.)
  let finished: AbortSignal | null = null;
  t.deliverer.script = (job, signal) => {
    finished = signal;
    return job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 }));
  };
  assert.equal((await t.runner.runOnce()).deferred, 1);
  await sleep(150);
  assert.equal((finished as AbortSignal | null)?.aborted, false, 'the signal of a finished job fired after the job ended');

  t.clock.set(t.store.get(id)!.recipients[0]!.nextAttemptAt!);
  let reason: unknown = null;
  t.deliverer.script = (_job, signal) => new Promise((_resolve, reject) => {
    signal.addEventListener('abort', () => { reason = signal.reason; reject(signal.reason); }, { once: true });
  });
  assert.equal((await t.runner.runOnce()).deferred, 1);
  assert.ok(reason instanceof DOMException && reason.name === 'TimeoutError', `abort reason ${String(reason)}`);
  assert.equal(t.store.get(id)!.recipients[0]!.state, 'deferred');
  await t.close();
});

test('runner: a commit kicks a started runner at once; kick() wakes it for changes made elsewhere', async () => {
  const t = setup({ pollIntervalMs: 3_600_000 });
  let delivered!: (id: string) => void;
  let next = new Promise<string>((r) => { delivered = r; });
  t.deliverer.script = (job) => {
    delivered(job.queueId);
    return job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 }));
  };
  t.runner.start();
  await sleep(20); // the runner is asleep now, for up to an hour
  const id = await queueOne(t.store);
  assert.equal(await Promise.race([next, sleep(2000).then(() => 'timeout')]), id);

  // A retry made by another process (an admin store) is not announced; kick() makes the runner look at once.
  next = new Promise<string>((r) => { delivered = r; });
  await sleep(20);
  t.clock.advance(MIN);
  const admin = QueueStore.openAdmin({ dataDir: t.store.dataDir, clock: t.clock });
  assert.deepEqual(admin.retry({ queueIds: [id] }).changed, [id]);
  await admin.close();
  assert.equal(await Promise.race([next, sleep(200).then(() => 'asleep')]), 'asleep');
  t.runner.kick();
  assert.equal(await Promise.race([next, sleep(2000).then(() => 'timeout')]), id);
  await t.close();
});

test('runner: a message committed behind the cursor during a long pass is picked up at its kick, not after the pass', async () => {
  // Arrival stamps are taken before the group commit, so a message can become visible with a stamp older than
  // the pass's cursor. The kick must restart the scan from the start of the due index.
  const t = setup({ pollIntervalMs: 3_600_000 });
  let releaseFirst!: () => void;
  const firstBlocked = new Promise<void>((r) => { releaseFirst = r; });
  const seen: string[] = [];
  let sawSecond!: (id: string) => void;
  const second = new Promise<string>((r) => { sawSecond = r; });
  t.deliverer.script = async (job) => {
    seen.push(job.queueId);
    if (seen.length === 1) await firstBlocked; else sawSecond(job.queueId);
    return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered', reply: R250 }));
  };
  t.clock.set(T0 + 1000);
  t.runner.start();
  const first = await queueOne(t.store);
  while (seen.length === 0) await sleep(5); // the pass's cursor is now at T0 + 1000
  t.clock.set(T0 + 500);
  const late = await queueOne(t.store); // stamped T0 + 500: behind the cursor
  const got = await Promise.race([second, sleep(3000).then(() => 'not picked up while the pass runs')]);
  releaseFirst();
  assert.equal(got, late);
  assert.deepEqual(seen, [first, late]);
  await t.close();
});

test('runner: a started runner polls for changes made by other processes', async () => {
  const t = setup({ pollIntervalMs: 50 });
  const id = await queueOne(t.store);
  t.store.hold({ queueIds: [id] });
  let delivered!: () => void;
  const done = new Promise<void>((r) => { delivered = r; });
  t.deliverer.script = (job) => {
    delivered();
    return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered' }));
  };
  t.runner.start();
  await sleep(100);
  const admin = QueueStore.openAdmin({ dataDir: t.store.dataDir, clock: t.clock });
  admin.release({ queueIds: [id] });
  await admin.close();
  assert.equal(await Promise.race([done.then(() => 'delivered'), sleep(2000).then(() => 'timeout')]), 'delivered');
  await t.close();
});

test('runner: one runner per store, only on a receiving store', async () => {
  const t = setup();
  assert.throws(() => new QueueRunner({ store: t.store, deliverer: t.deliverer, bouncer: t.bouncer }), { code: 'ERR_QUEUE_STATE' });
  const admin = QueueStore.openAdmin({ dataDir: t.store.dataDir });
  assert.throws(() => new QueueRunner({ store: admin, deliverer: t.deliverer, bouncer: t.bouncer }), { code: 'ERR_QUEUE_READONLY' });
  await admin.close();
  t.runner.start();
  await assert.rejects(t.runner.runOnce(), { code: 'ERR_QUEUE_STATE' });
  await t.runner.stop();
  // After stop() the slot is free again.
  const again = new QueueRunner({ store: t.store, deliverer: t.deliverer, bouncer: t.bouncer });
  await again.stop();
  await t.close();
});

test('runner: the active window stays bounded over 5,000 queued messages and a slow deliverer', async (t) => {
  const dataDir = tempDataDir();
  const clock = new ManualClock(T0);
  let started = performance.now();
  await bulkQueue(dataDir, 5000, clock);
  t.diagnostic(`5000 messages queued in ${Math.round(performance.now() - started)} ms`);
  let inFlight = 0;
  let maxSeen = 0;
  const deliverer = new FakeDeliverer(async (job) => {
    inFlight++;
    maxSeen = Math.max(maxSeen, inFlight);
    await sleep(1);
    inFlight--;
    return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered' }));
  });
  deliverer.readBody = false;
  started = performance.now();
  const s = setup({ dataDir, clock, deliverer, windowSize: 100, concurrency: 10 });
  t.diagnostic(`store opened (recovery) in ${Math.round(performance.now() - started)} ms`);
  started = performance.now();
  const summary = await s.runner.runOnce();
  t.diagnostic(`5000 messages delivered in ${Math.round(performance.now() - started)} ms`);
  assert.equal(summary.delivered, 5000);
  assert.equal(summary.finished, 5000);
  const stats = s.runner.stats();
  assert.ok(stats.maxWindow <= 100, `window reached ${stats.maxWindow}`);
  assert.ok(stats.maxWindow >= 50, `window used ${stats.maxWindow}`);
  assert.ok(stats.maxInFlight <= 10 && maxSeen <= 10, `in flight reached ${stats.maxInFlight}/${maxSeen}`);
  assert.equal(maxSeen, 10);
  assert.equal(new Set(deliverer.jobs.map((j) => j.job.queueId)).size, 5000, 'each message once');
  assert.deepEqual(s.store.list({ limit: 1 }), []);
  await s.close();
});

/** Queues n one-recipient messages quickly: bodies written without fsync and one index transaction. */
async function bulkQueue(dataDir: string, n: number, clock: ManualClock): Promise<string[]> {
  await QueueStore.open({ dataDir, clock }).close();
  const index = new IndexDb(join(dataDir, 'queue.db'));
  const records: MessageRecord[] = [];
  const body = 'Subject: bulk\r\n\r\nx\r\n';
  for (let i = 0; i < n; i++) {
    const queueId = newQueueId(clock.now());
    writeFileSync(join(dataDir, 'spool', 'msg', `${queueId}.eml`), body);
    records.push({
      queueId, receivedAt: clock.now(), sender: 'bulk@example.org', size: body.length, bodyPath: `spool/msg/${queueId}.eml`,
      messageId: null, clientIp: '192.0.2.1', helo: null, authUser: null, listener: 'mx', mailParams: {},
      recipients: [{ address: `r${i}@example.net`, params: {} }],
    });
  }
  index.insertBatch(records);
  index.close();
  return records.map((r) => r.queueId);
}

test('index: a version 1 queue index is migrated in place', async () => {
  const { DatabaseSync } = await import('node:sqlite');
  const dataDir = tempDataDir();
  const clock = new ManualClock(T0);
  const first = QueueStore.open({ dataDir, clock, inlineMaxBytes: 0 });
  const id = await queueOne(first);
  await first.close();
  // Make it look like a version 1 index: drop the new columns, table and index.
  const db = new DatabaseSync(join(dataDir, 'queue.db'));
  db.exec(`DROP INDEX messages_run; DROP TABLE bodies;
    ALTER TABLE messages DROP COLUMN next_run_at; ALTER TABLE messages DROP COLUMN delay_warned_at;
    ALTER TABLE recipients DROP COLUMN reply; ALTER TABLE recipients DROP COLUMN dsn_status;
    ALTER TABLE recipients DROP COLUMN remote_mta; ALTER TABLE recipients DROP COLUMN diagnostic;
    ALTER TABLE recipients DROP COLUMN notified_at; PRAGMA user_version = 1;`);
  db.close();
  const reader = QueueStore.open({ dataDir, readOnly: true });
  assert.equal(reader.get(id)?.nextRunAt, null, 'a read-only store reads a version 1 index');
  await reader.close();
  const t = setup({ dataDir, clock });
  assert.equal(t.store.get(id)?.nextRunAt, T0);
  assert.equal(t.store.get(id)?.bodyInline, false);
  const inline = await queueOne(t.store);
  assert.equal(t.store.get(inline)?.bodyInline, true, 'the migrated index takes inline bodies');
  assert.equal((await t.runner.runOnce()).delivered, 2);
  assert.equal(existsSync(join(dataDir, 'spool', 'msg', `${id}.eml`)), false);
  await t.close();
});

test('index: due() hides messages whose WAL sync is still under way, and pages past them', async () => {
  const dataDir = tempDataDir();
  const clock = new ManualClock(T0);
  const ids = await bulkQueue(dataDir, 6, clock);
  const index = new IndexDb(join(dataDir, 'queue.db'));
  try {
    const all = index.due(T0, null, 10).map((e) => e.queueId);
    assert.equal(all.length, 6);
    index.unsynced([all[0]!, all[1]!, all[3]!]);
    const page1 = index.due(T0, null, 2);
    assert.deepEqual(page1.map((e) => e.queueId), [all[2], all[4]], 'a full page of visible entries, hidden ones skipped');
    assert.deepEqual(index.due(T0, page1[1]!, 2).map((e) => e.queueId), [all[5]], 'fewer than asked: exhausted');
    index.synced([all[0]!, all[1]!, all[3]!]);
    assert.deepEqual(index.due(T0, null, 10).map((e) => e.queueId), all);
    assert.deepEqual(new Set(all), new Set(ids));
  } finally {
    index.close();
  }
});
