/**
 * The contract of the MailQueue port (port.ts), as node:test tests registered against any implementation:
 * queue/sqlite-queue.test.ts (the embedded queue) and store/postgres-queue.test.ts (PostgreSQL) call
 * queueContract() with a harness. Both must give the same answers: intake, due work and delivery through the one
 * QueueRunner, attempts and backoff, hold/release/retry/flush/delete from a second (admin) queue object, list
 * filters, bounce bookkeeping, expiry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ManualClock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import type { Reply } from '../core/reply.ts';
import type { Bouncer, DelayedRecipient, Deliverer, DeliveryJob, FailedRecipient, QueuedMessageView, RecipientOutcome } from './deliverer.ts';
import type { MailQueue } from './port.ts';
import { QueueRunner } from './runner.ts';
import type { IncomingEnvelope } from './store.ts';

export interface QueueUnderTest {
  /** The receiving queue (intake and runner). */
  readonly queue: MailQueue;
  /** A second queue object on the same data, for admin commands (the CLI's). */
  admin(): Promise<MailQueue>;
  /** Closes everything and removes the data. */
  dispose(): Promise<void>;
}

export interface QueueHarness {
  readonly name: string;
  fresh(clock: ManualClock): Promise<QueueUnderTest>;
}

const T0 = 1_700_000_000_000;
const MIN = 60_000;
const DAY = 24 * 60 * MIN;
const R250: Reply = { code: 250, enhanced: '2.0.0', text: 'Ok' };
const R451: Reply = { code: 451, enhanced: '4.3.0', text: 'Try again later' };
const R550: Reply = { code: 550, enhanced: '5.1.1', text: 'No such user' };

export function envelope(over: Partial<IncomingEnvelope> = {}): IncomingEnvelope {
  return {
    sender: 'alice@example.org',
    recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE' } }],
    clientIp: '192.0.2.10',
    helo: 'client.example.org',
    user: null,
    listener: 'mx',
    mailParams: { BODY: '8BITMIME' },
    ...over,
  };
}

export async function queueOne(q: MailQueue, body = 'Subject: hi\r\n\r\nHello\r\n', env: IncomingEnvelope = envelope()): Promise<string> {
  const msg = await q.beginMessage();
  await pipeline(Readable.from([Buffer.from(body)]), msg.body);
  await msg.commit(env);
  return msg.queueId;
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

type Script = (job: DeliveryJob) => readonly RecipientOutcome[];

export class ScriptedDeliverer implements Deliverer {
  script: Script;
  readonly jobs: { job: DeliveryJob; body: string }[] = [];
  constructor(script: Script = (job) => job.recipients.map((r) => ({ address: r.address, outcome: 'delivered', reply: R250 }))) {
    this.script = script;
  }
  async deliver(job: DeliveryJob): Promise<readonly RecipientOutcome[]> {
    const body = (await readAll(job.openBody())).toString('utf8');
    this.jobs.push({ job, body });
    return this.script(job);
  }
}

export class ListBouncer implements Bouncer {
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

async function withQueue(h: QueueHarness, fn: (t: QueueUnderTest, clock: ManualClock) => Promise<void>): Promise<void> {
  const clock = new ManualClock(T0);
  const t = await h.fresh(clock);
  try {
    await fn(t, clock);
  } finally {
    await t.dispose();
  }
}

function runnerFor(q: MailQueue, clock: ManualClock, deliverer: Deliverer, bouncer: Bouncer = new ListBouncer(), delayWarningMs: number | null = null): QueueRunner {
  return new QueueRunner({ store: q, deliverer, bouncer, clock, retry: { delayWarningMs } });
}

export function queueContract(h: QueueHarness): void {
  const name = (s: string): string => `queue contract (${h.name}): ${s}`;

  test(name('a committed message is listed, shown and readable, with its node'), () => withQueue(h, async ({ queue }, clock) => {
    const body = 'Message-ID: <c1@test>\r\nSubject: hi\r\n\r\nHello\r\n';
    const id = await queueOne(queue, body, envelope({ recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE' } }, { address: 'carol@Example.COM' }] }));
    const list = await queue.list();
    assert.equal(list.length, 1);
    const s = list[0]!;
    assert.equal(s.queueId, id);
    assert.equal(s.receivedAt, clock.now());
    assert.equal(s.sender, 'alice@example.org');
    assert.equal(s.size, Buffer.byteLength(body));
    assert.equal(s.messageId, '<c1@test>');
    assert.equal(s.state, 'queued');
    assert.deepEqual(s.recipients, ['bob@example.net', 'carol@Example.COM']);
    assert.equal(s.recipientsOpen, 2);
    assert.equal(s.node, queue.node);
    const d = (await queue.get(id))!;
    assert.equal(d.clientIp, '192.0.2.10');
    assert.equal(d.helo, 'client.example.org');
    assert.deepEqual(d.mailParams, { BODY: '8BITMIME' });
    assert.deepEqual(d.recipients.map((r) => [r.index, r.address, r.state, r.attempts]), [[0, 'bob@example.net', 'pending', 0], [1, 'carol@Example.COM', 'pending', 0]]);
    assert.deepEqual(d.recipients[0]!.params, { NOTIFY: 'FAILURE' });
    assert.equal(d.receivedBy, queue.node);
    assert.equal((await queue.readBody(id))!.toString('utf8'), body);
    assert.deepEqual(await queue.readHeaders(id), { headers: 'Message-ID: <c1@test>\r\nSubject: hi\r\n', truncated: false });
    assert.equal(await queue.get('NOSUCHMESSAGE1'), null);
    assert.equal(await queue.readBody('NOSUCHMESSAGE1'), null);
    assert.equal(queue.stats().messagesCommitted, 1);
  }));

  test(name('a commit without recipients is refused (ERR_QUEUE_STATE) and leaves nothing'), () => withQueue(h, async ({ queue }) => {
    const msg = await queue.beginMessage();
    await pipeline(Readable.from([Buffer.from('x\r\n')]), msg.body);
    await assert.rejects(msg.commit(envelope({ recipients: [] })), (e: unknown) => e instanceof RelayguardError && e.code === 'ERR_QUEUE_STATE');
    assert.deepEqual(await queue.list(), []);
  }));

  test(name('concurrent commits all land (group commit), each exactly once'), () => withQueue(h, async ({ queue }) => {
    const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => queueOne(queue, `Subject: ${i}\r\n\r\nbody ${i}\r\n`)));
    const listed = (await queue.list()).map((m) => m.queueId).sort();
    assert.deepEqual(listed, [...ids].sort());
    for (const [i, id] of ids.entries()) assert.equal((await queue.readBody(id))!.toString(), `Subject: ${i}\r\n\r\nbody ${i}\r\n`);
    assert.ok(queue.stats().batches < 40, `batches: ${queue.stats().batches}`);
  }));

  test(name('keyset paging: pages after the last one seen list every message once, in order, ties by queue id'), () => withQueue(h, async ({ queue }, clock) => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await queueOne(queue, `Subject: same ms ${i}\r\n\r\nx\r\n`)); // same received_at
    clock.advance(5);
    for (let i = 0; i < 4; i++) { ids.push(await queueOne(queue, `Subject: later ${i}\r\n\r\nx\r\n`)); clock.advance(1); }
    const all = (await queue.list()).map((m) => m.queueId);
    assert.deepEqual([...all].sort(), [...ids].sort());
    const seen: string[] = [];
    let after: { receivedAt: number; queueId: string } | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const page = await queue.list({ limit: 2, ...(after ? { after } : {}) });
      if (page.length === 0) break;
      seen.push(...page.map((m) => m.queueId));
      const last = page.at(-1)!;
      after = { receivedAt: last.receivedAt, queueId: last.queueId };
    }
    assert.deepEqual(seen, all, 'the pages are the full listing, in its order, each message once');
    assert.deepEqual((await queue.list({ state: 'queued', after: { receivedAt: 0, queueId: '' } })).map((m) => m.queueId), all);
  }));

  test(name('the runner delivers due messages and removes them'), () => withQueue(h, async ({ queue }, clock) => {
    const d = new ScriptedDeliverer();
    const runner = runnerFor(queue, clock, d);
    try {
      const id = await queueOne(queue, 'Subject: x\r\n\r\nHello\r\n', envelope({ recipients: [{ address: 'a@x.test' }, { address: 'b@y.test' }] }));
      const sum = await runner.runOnce();
      assert.deepEqual(sum, { messages: 1, delivered: 2, deferred: 0, bounced: 0, expired: 0, corrupt: 0, finished: 1 });
      assert.equal(d.jobs.length, 1);
      assert.equal(d.jobs[0]!.job.queueId, id);
      assert.equal(d.jobs[0]!.body, 'Subject: x\r\n\r\nHello\r\n');
      assert.deepEqual(d.jobs[0]!.job.recipients.map((r) => r.address), ['a@x.test', 'b@y.test']);
      assert.equal(await queue.get(id), null);
      assert.deepEqual(await runner.runOnce(), { messages: 0, delivered: 0, deferred: 0, bounced: 0, expired: 0, corrupt: 0, finished: 0 });
    } finally {
      await runner.stop();
    }
  }));

  test(name('a deferral waits its backoff (5 min, then 10), then goes again'), () => withQueue(h, async ({ queue }, clock) => {
    const d = new ScriptedDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
    const runner = runnerFor(queue, clock, d);
    try {
      const id = await queueOne(queue);
      assert.equal((await runner.runOnce()).deferred, 1);
      let r = (await queue.get(id))!.recipients[0]!;
      assert.equal(r.state, 'deferred');
      assert.equal(r.attempts, 1);
      assert.equal(r.nextAttemptAt, T0 + 5 * MIN);
      assert.equal(r.lastReply, '451 4.3.0 Try again later');
      assert.deepEqual((await queue.list())[0]!.deferred, [{ reason: '451 4.3.0 Try again later', remoteMta: null, recipients: ['bob@example.net'] }]);
      assert.equal((await runner.runOnce()).messages, 0, 'not due yet');
      clock.advance(5 * MIN);
      assert.equal((await runner.runOnce()).deferred, 1);
      r = (await queue.get(id))!.recipients[0]!;
      assert.equal(r.attempts, 2);
      assert.equal(r.nextAttemptAt, clock.now() + 10 * MIN);
      assert.equal(d.jobs.length, 2);
      assert.equal(d.jobs[1]!.job.attempt, 2);
    } finally {
      await runner.stop();
    }
  }));

  test(name('hold, release, retry, flush and delete from an admin queue'), () => withQueue(h, async (t, clock) => {
    const { queue } = t;
    const admin = await t.admin();
    const d = new ScriptedDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
    const runner = runnerFor(queue, clock, d);
    try {
      const a = await queueOne(queue);
      clock.advance(1);
      const b = await queueOne(queue, 'Subject: b\r\n\r\nb\r\n', envelope({ sender: 'bob@other.test', recipients: [{ address: 'x@dom.test' }] }));
      const held = await admin.hold({ queueIds: [a, 'NOSUCHMESSAGE1'] });
      assert.deepEqual(held, { changed: [a], unchanged: [], missing: ['NOSUCHMESSAGE1'] });
      assert.deepEqual((await admin.hold({ queueIds: [a] })).unchanged, [{ queueId: a, state: 'hold', reason: 'already on hold' }]);
      assert.equal((await queue.get(a))!.state, 'hold');
      assert.deepEqual((await queue.list({ state: 'hold' })).map((m) => m.queueId), [a]);
      await runner.runOnce();
      assert.deepEqual(d.jobs.map((j) => j.job.queueId), [b], 'a held message is not delivered');
      assert.deepEqual((await admin.release({ queueIds: [a, b] })).unchanged, [{ queueId: b, state: 'queued', reason: 'not on hold' }]);
      await runner.runOnce();
      assert.deepEqual(d.jobs.map((j) => j.job.queueId), [b, a]);
      // Both deferred 5 minutes: retry makes one due now; flush makes every waiting one due.
      assert.deepEqual((await admin.retry({ queueIds: [a] })).changed, [a]);
      await runner.runOnce();
      assert.deepEqual(d.jobs.map((j) => j.job.queueId), [b, a, a]);
      assert.deepEqual((await admin.flush()).changed.sort(), [a, b].sort());
      await runner.runOnce();
      assert.equal(d.jobs.length, 5);
      // Filters select; delete takes any state.
      assert.deepEqual((await queue.list({ sender: 'bob@other.test' })).map((m) => m.queueId), [b]);
      assert.deepEqual((await queue.list({ recipientDomain: 'DOM.test' })).map((m) => m.queueId), [b]);
      assert.deepEqual((await queue.list({ state: 'deferred' })).map((m) => m.queueId), [a, b]);
      assert.deepEqual((await queue.list({ limit: 1 })).map((m) => m.queueId), [a]);
      clock.advance(MIN - 1);
      assert.deepEqual((await queue.list({ olderThanMs: MIN })).map((m) => m.queueId), [a]);
      assert.deepEqual(await admin.delete({ filter: { sender: 'bob@other.test' } }), { changed: [b], unchanged: [], missing: [] });
      assert.deepEqual((await admin.delete({ queueIds: [a, b] })), { changed: [a], unchanged: [], missing: [b] });
      assert.deepEqual(await queue.list(), []);
    } finally {
      await runner.stop();
      await admin.close();
    }
  }));

  test(name('counts: messages by state and the oldest of each, from the receiving and the admin queue'), () => withQueue(h, async (t, clock) => {
    const { queue } = t;
    const admin = await t.admin();
    const d = new ScriptedDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
    const runner = runnerFor(queue, clock, d);
    const brief = (c: Awaited<ReturnType<MailQueue['counts']>>): Record<string, [number, number | null, number | null]> =>
      Object.fromEntries(Object.entries(c).map(([k, v]) => [k, [v.messages, v.oldestReceivedAt, v.oldestAgeMs]]));
    try {
      const empty = { queued: [0, null, null], deferred: [0, null, null], hold: [0, null, null], corrupt: [0, null, null] };
      assert.deepEqual(brief(await queue.counts()), empty);
      const a = await queueOne(queue);
      clock.advance(MIN);
      await queueOne(queue, undefined, envelope({ recipients: [{ address: 'x@b.test' }, { address: 'y@b.test' }] }));
      clock.advance(MIN);
      await queueOne(queue);
      clock.advance(MIN);
      assert.deepEqual(brief(await queue.counts()), { ...empty, queued: [3, T0, 3 * MIN] });
      await admin.hold({ queueIds: [a] });
      assert.deepEqual(brief(await admin.counts()), { ...empty, queued: [2, T0 + MIN, 2 * MIN], hold: [1, T0, 3 * MIN] });
      // The two queued ones are deferred (one with two deferred recipients: still one message).
      assert.equal((await runner.runOnce()).deferred, 3);
      clock.advance(MIN);
      const c = await queue.counts();
      assert.deepEqual(brief(c), { ...empty, queued: [2, T0 + MIN, 3 * MIN], deferred: [2, T0 + MIN, 3 * MIN], hold: [1, T0, 4 * MIN] });
      assert.deepEqual(brief(await admin.counts()), brief(c));
    } finally {
      await runner.stop();
      await admin.close();
    }
  }));

  test(name('bounces: reported once, then the message leaves; a failing bouncer keeps it for the minimal backoff'), () => withQueue(h, async ({ queue }, clock) => {
    const d = new ScriptedDeliverer((job) => job.recipients.map((r) => (r.address.startsWith('bad')
      ? { address: r.address, outcome: 'bounced', reply: R550 }
      : { address: r.address, outcome: 'delivered', reply: R250 })));
    const bouncer = new ListBouncer();
    bouncer.fail = true;
    const runner = runnerFor(queue, clock, d, bouncer);
    try {
      const id = await queueOne(queue, undefined, envelope({ recipients: [{ address: 'bad@x.test' }, { address: 'good@x.test' }] }));
      const s1 = await runner.runOnce();
      assert.equal(s1.bounced, 1);
      assert.equal(s1.delivered, 1);
      const m = (await queue.get(id))!;
      assert.deepEqual(m.recipients.map((r) => [r.state, r.dsnStatus, r.notifiedAt]), [['bounced', '5.1.1', null], ['delivered', '2.0.0', null]]);
      assert.equal(m.nextRunAt, clock.now() + 5 * MIN);
      bouncer.fail = false;
      assert.equal((await runner.runOnce()).messages, 0);
      clock.advance(5 * MIN);
      const s2 = await runner.runOnce();
      assert.equal(s2.finished, 1);
      assert.equal(bouncer.bounces.length, 1);
      assert.deepEqual(bouncer.bounces[0]!.recipients.map((r) => [r.address, r.status]), [['bad@x.test', '5.1.1']]);
      assert.equal(await queue.get(id), null);
      assert.equal(d.jobs.length, 1, 'delivered once; only the bounce was retried');
    } finally {
      await runner.stop();
    }
  }));

  test(name('a deferral past the lifetime becomes a 4.4.7 bounce; a bounce of <> is never bounced'), () => withQueue(h, async ({ queue }, clock) => {
    const d = new ScriptedDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
    const bouncer = new ListBouncer();
    const runner = runnerFor(queue, clock, d, bouncer);
    try {
      const id = await queueOne(queue);
      const nul = await queueOne(queue, undefined, envelope({ sender: '' }));
      await runner.runOnce();
      clock.advance(5 * DAY);
      const s = await runner.runOnce();
      assert.equal(s.expired, 2);
      assert.equal(s.finished, 2);
      assert.equal(bouncer.bounces.length, 1);
      assert.equal(bouncer.bounces[0]!.message.queueId, id);
      assert.equal(bouncer.bounces[0]!.recipients[0]!.status, '4.4.7');
      assert.equal(await queue.get(id), null);
      assert.equal(await queue.get(nul), null);
    } finally {
      await runner.stop();
    }
  }));

  test(name('delay warning once per message'), () => withQueue(h, async ({ queue }, clock) => {
    const d = new ScriptedDeliverer((job) => job.recipients.map((r) => ({ address: r.address, outcome: 'deferred', reply: R451 })));
    const bouncer = new ListBouncer();
    const runner = runnerFor(queue, clock, d, bouncer, 4 * MIN);
    try {
      const id = await queueOne(queue);
      await runner.runOnce();
      assert.equal(bouncer.delays.length, 0);
      clock.advance(5 * MIN);
      await runner.runOnce();
      assert.equal(bouncer.delays.length, 1);
      assert.notEqual((await queue.get(id))!.delayWarnedAt, null);
      clock.advance(10 * MIN);
      await runner.runOnce();
      assert.equal(bouncer.delays.length, 1);
    } finally {
      await runner.stop();
    }
  }));

  test(name('one runner per queue object; an admin queue has none'), () => withQueue(h, async (t, clock) => {
    const runner = runnerFor(t.queue, clock, new ScriptedDeliverer());
    const admin = await t.admin();
    try {
      assert.throws(() => runnerFor(t.queue, clock, new ScriptedDeliverer()), (e: unknown) => (e as RelayguardError).code === 'ERR_QUEUE_STATE');
      assert.throws(() => runnerFor(admin, clock, new ScriptedDeliverer()), (e: unknown) => (e as RelayguardError).code === 'ERR_QUEUE_READONLY');
      await assert.rejects(admin.beginMessage(), (e: unknown) => (e as RelayguardError).code === 'ERR_QUEUE_READONLY');
    } finally {
      await runner.stop();
      await admin.close();
    }
  }));
}
