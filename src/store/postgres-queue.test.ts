/**
 * The queue on PostgreSQL: the MailQueue contract (queue/queue.case.ts) on a private PostgreSQL 15, then what only
 * a shared queue must do: two nodes never deliver one message twice, a dead node's messages are taken over within
 * the lease time, a partitioned node coming back neither delivers again nor records.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { ManualClock } from '../core/clock.ts';
import { MemoryLogger } from '../core/log.ts';
import type { Reply } from '../core/reply.ts';
import type { Deliverer, DeliveryJob, RecipientOutcome } from '../queue/index.ts';
import { QueueRunner } from '../queue/index.ts';
import { envelope, ListBouncer, queueContract, queueOne } from '../queue/queue.case.ts';
import { startPostgres, type PostgresInstance } from '../testing/postgres.ts';
import { openQueue } from './index.ts';
import { PostgresMailQueue } from './postgres-queue.ts';
import { loadMigrations, migrate } from './postgres-schema.ts';

let pg: PostgresInstance;
let admin: Client;

before(async () => {
  pg = await startPostgres();
  admin = new Client(pg.url);
  await admin.connect();
  assert.deepEqual((await migrate(admin)).applied, loadMigrations().map((m) => m.name));
});

after(async () => {
  await admin?.end().catch(() => {});
  await pg?.stop();
});

async function wipe(): Promise<void> {
  await admin.query('TRUNCATE queue_messages, queue_recipients, queue_bodies, queue_nodes');
}

queueContract({
  name: 'postgres',
  async fresh(clock) {
    await wipe();
    const queue = await PostgresMailQueue.open(pg.url, { node: 'node-a', clock, poolSize: 4 });
    const others: PostgresMailQueue[] = [];
    return {
      queue,
      async admin() {
        const q = await PostgresMailQueue.open(pg.url, { node: 'cli', clock, poolSize: 2, role: 'admin' });
        others.push(q);
        return q;
      },
      async dispose() {
        await queue.close();
        for (const q of others) await q.close();
      },
    };
  },
});

const R250: Reply = { code: 250, enhanced: '2.0.0', text: 'Ok' };

/** Counts every delivery of every message across nodes; optionally slow, or blocked until released. */
class CountingDeliverer implements Deliverer {
  readonly counts: Map<string, number>;
  readonly node: string;
  delayMs = 0;
  gate: Promise<void> | null = null;
  started = 0;
  concurrentMax = 0;
  #active = 0;
  constructor(counts: Map<string, number>, node: string) {
    this.counts = counts;
    this.node = node;
  }
  async deliver(job: DeliveryJob): Promise<readonly RecipientOutcome[]> {
    this.started++;
    this.#active++;
    this.concurrentMax = Math.max(this.concurrentMax, this.#active);
    try {
      for await (const _ of job.openBody()) { /* read it all */ }
      const key = `${job.queueId}`;
      this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
      if (this.gate !== null) await this.gate;
      if (this.delayMs > 0) await sleep(this.delayMs);
      return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered', reply: R250 }));
    } finally {
      this.#active--;
    }
  }
}

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('postgres queue: openQueue picks PostgreSQL from the settings, and the node shows in list and show', async () => {
  await wipe();
  const q = await openQueue({ dataDir: '/nonexistent/never-opened', postgres: { url: pg.url, poolSize: 2, leaseTime: 5000 }, node: 'mx1' });
  try {
    assert.equal(q.backend, 'postgres');
    const id = await queueOne(q);
    const [s] = await q.list();
    assert.equal(s!.node, 'mx1');
    const d = (await q.get(id))!;
    assert.equal(d.receivedBy, 'mx1');
    assert.equal(d.deliveringNode, null);
  } finally {
    await q.close();
  }
});

test('postgres queue: two nodes over one database never deliver one message twice (500 messages, concurrency 20 each)', async () => {
  await wipe();
  const counts = new Map<string, number>();
  const a = await PostgresMailQueue.open(pg.url, { node: 'a', poolSize: 8, leaseTimeMs: 10_000 });
  const b = await PostgresMailQueue.open(pg.url, { node: 'b', poolSize: 8, leaseTimeMs: 10_000 });
  const da = new CountingDeliverer(counts, 'a');
  const db = new CountingDeliverer(counts, 'b');
  da.delayMs = 3;
  db.delayMs = 3;
  const ra = new QueueRunner({ store: a, deliverer: da, bouncer: new ListBouncer(), concurrency: 20, pollIntervalMs: 50 });
  const rb = new QueueRunner({ store: b, deliverer: db, bouncer: new ListBouncer(), concurrency: 20, pollIntervalMs: 50 });
  try {
    const ids: string[] = [];
    // Half received by each node, while both runners run.
    ra.start();
    rb.start();
    for (let i = 0; i < 25; i++) {
      ids.push(...await Promise.all(Array.from({ length: 20 }, (_, j) => queueOne((i + j) % 2 === 0 ? a : b, `Subject: ${i}-${j}\r\n\r\nx\r\n`,
        envelope({ recipients: [{ address: `r${i}-${j}@example.net` }] })))));
    }
    await waitFor('every message delivered', async () => (await admin.query('SELECT count(*)::int AS n FROM queue_messages')).rows[0].n === 0, 60_000);
    assert.equal(ids.length, 500);
    for (const id of ids) assert.equal(counts.get(id), 1, `message ${id} delivered ${counts.get(id) ?? 0} times`);
    assert.ok(da.started > 0 && db.started > 0, `both nodes delivered (a ${da.started}, b ${db.started})`);
    assert.equal(ra.stats().possibleDuplicates + rb.stats().possibleDuplicates, 0);
  } finally {
    await ra.stop();
    await rb.stop();
    await a.close();
    await b.close();
  }
});

test('postgres queue: a node whose heartbeat stops has its messages taken over within the lease time', async () => {
  await wipe();
  const lease = 1500;
  const counts = new Map<string, number>();
  const a = await PostgresMailQueue.open(pg.url, { node: 'dead', poolSize: 4, leaseTimeMs: lease });
  const b = await PostgresMailQueue.open(pg.url, { node: 'survivor', poolSize: 4, leaseTimeMs: lease });
  const da = new CountingDeliverer(counts, 'dead');
  let release!: () => void;
  da.gate = new Promise((r) => { release = r; });
  const db = new CountingDeliverer(counts, 'survivor');
  const ra = new QueueRunner({ store: a, deliverer: da, bouncer: new ListBouncer(), concurrency: 10, pollIntervalMs: 50 });
  const rb = new QueueRunner({ store: b, deliverer: db, bouncer: new ListBouncer(), concurrency: 10, pollIntervalMs: 50 });
  try {
    const ids = await Promise.all(Array.from({ length: 5 }, (_, i) => queueOne(a, `Subject: ${i}\r\n\r\nx\r\n`)));
    ra.start();
    await waitFor('node "dead" to claim all five', () => da.started === 5);
    const listed = await b.list();
    assert.deepEqual(listed.map((m) => m.node), ['dead', 'dead', 'dead', 'dead', 'dead'], 'list shows the delivering node');
    // kill -9: no more heartbeats, nothing given back.
    await a.abandon();
    const killedAt = Date.now();
    rb.start();
    await waitFor('the survivor to deliver all five', async () => (await b.list()).length === 0, 10_000);
    const took = Date.now() - killedAt;
    assert.ok(took <= lease + 1000, `taken over in ${took} ms (lease ${lease} ms)`);
    for (const id of ids) assert.equal(db.counts.get(id), 2, 'delivered by the dead node (unrecorded) and once by the survivor');
    assert.equal(db.started, 5);
    release();
  } finally {
    release?.();
    await ra.stop().catch(() => {});
    await rb.stop();
    await b.close();
  }
});

test('postgres queue: a partitioned node coming back (heartbeat expired, another node delivered) neither delivers again nor records', async () => {
  await wipe();
  const lease = 1500;
  const counts = new Map<string, number>();
  const logger = new MemoryLogger();
  const a = await PostgresMailQueue.open(pg.url, { node: 'partitioned', poolSize: 4, leaseTimeMs: lease, logger });
  const b = await PostgresMailQueue.open(pg.url, { node: 'other', poolSize: 4, leaseTimeMs: lease });
  const da = new CountingDeliverer(counts, 'partitioned');
  let release!: () => void;
  da.gate = new Promise((r) => { release = r; });
  const db = new CountingDeliverer(counts, 'other');
  const ra = new QueueRunner({ store: a, deliverer: da, bouncer: new ListBouncer(), concurrency: 10, pollIntervalMs: 50, logger });
  const rb = new QueueRunner({ store: b, deliverer: db, bouncer: new ListBouncer(), concurrency: 10, pollIntervalMs: 50 });
  try {
    const id = await queueOne(a, 'Subject: p\r\n\r\nx\r\n', envelope({ recipients: [{ address: 'x@example.net' }, { address: 'y@example.net' }] }));
    ra.start();
    await waitFor('node "partitioned" to start delivering', () => da.started === 1);
    const oldIncarnation = a.incarnation;
    // The partition: its heartbeat is seen as expired by everyone (as if it had not renewed it for a long time).
    await admin.query(`UPDATE queue_nodes SET heartbeat_at = now() - interval '1 hour' WHERE node = 'partitioned'`);
    rb.start();
    await waitFor('the other node to deliver and remove it', async () => (await b.get(id)) === null, 10_000);
    assert.equal(db.started, 1);
    // The partition heals: the old delivery finishes; its outcome must not be recorded, nothing is sent again.
    release();
    await waitFor('the partitioned node to drop its outcomes', () => ra.stats().possibleDuplicates === 2, 10_000);
    await sleep(lease);
    assert.equal(da.started, 1, 'the partitioned node did not deliver again');
    assert.equal(ra.stats().leasesLost, 1);
    assert.equal(ra.stats().delivered, 0, 'nothing recorded as delivered by the partitioned node');
    assert.ok(logger.records.some((e) => e.msg === 'delivery outcome not recorded; possible duplicate'));
    assert.ok(logger.records.some((e) => e.msg === 'queue node lease expired; starting a new incarnation'));
    await waitFor('a new incarnation', () => a.incarnation !== null && a.incarnation !== oldIncarnation, 5000);
    // And it still works afterwards: a new message is delivered exactly once by someone.
    const id2 = await queueOne(a);
    await waitFor('the new message delivered', async () => (await a.get(id2)) === null, 10_000);
    assert.equal(counts.get(id2), 1);
  } finally {
    release?.();
    await ra.stop();
    await rb.stop();
    await a.close();
    await b.close();
  }
});

test('postgres queue: admin commands from another process object see and change the shared queue', async () => {
  await wipe();
  const clock = new ManualClock(1_700_000_000_000);
  const q = await PostgresMailQueue.open(pg.url, { node: 'mx1', clock, poolSize: 2 });
  const cli = await openQueue({ dataDir: '/nonexistent', postgres: { url: pg.url, poolSize: 2 }, node: 'cli', role: 'admin', clock });
  try {
    const id = await queueOne(q);
    assert.deepEqual((await cli.hold({ filter: {} })).changed, [id]);
    assert.equal((await q.get(id))!.state, 'hold');
    assert.deepEqual((await cli.delete({ queueIds: [id] })).changed, [id]);
    assert.equal((await admin.query('SELECT count(*)::int AS n FROM queue_bodies')).rows[0].n, 0, 'the body goes with its record');
  } finally {
    await q.close();
    await cli.close();
  }
});

test('postgres queue: `relayguard queue list|show|hold|release|delete` from the CLI work on the shared queue, with the node', async () => {
  await wipe();
  const { Command } = await import('commander');
  const { registerQueueCommands } = await import('../cli/queue-commands.ts');
  const { loadConfig } = await import('../config/load.ts');
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-pg-cli-'));
  const config = join(dir, 'relayguard.yaml');
  writeFileSync(config, `dataDir: ./data\nnode: cli-node\nstore:\n  postgres:\n    url: ${pg.url}\n`);
  const cli = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
    const out: string[] = [];
    const err: string[] = [];
    let code = 0;
    const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s) };
    const program = new Command('relayguard').exitOverride();
    registerQueueCommands(program, io, (c) => { code = c; }, (opts) => loadConfig(opts.config ? { file: opts.config } : {}));
    await program.parseAsync(['queue', ...args], { from: 'user' });
    return { code, out: out.join('\n'), err: err.join('\n') };
  };
  const q = await PostgresMailQueue.open(pg.url, { node: 'mx7', poolSize: 2 });
  try {
    const id = await queueOne(q, 'Message-ID: <cli@test>\r\nSubject: cli\r\n\r\nx\r\n');
    const list = await cli(['list', '-c', config]);
    assert.equal(list.code, 0, list.err);
    assert.match(list.out, /State +Node +Sender/);
    assert.match(list.out, new RegExp(`${id} +\\d+ +\\S+ queued +mx7 +alice@example.org`));
    const json = JSON.parse((await cli(['list', '-c', config, '--json'])).out) as { queueId: string; node: string };
    assert.deepEqual([json.queueId, json.node], [id, 'mx7']);
    const show = await cli(['show', '-c', config, id]);
    assert.match(show.out, /Node: +received by mx7\n/);
    assert.match(show.out, /Subject: cli/);
    const showJson = JSON.parse((await cli(['show', '-c', config, '--json', id])).out) as { receivedBy: string; deliveringNode: null };
    assert.deepEqual([showJson.receivedBy, showJson.deliveringNode], ['mx7', null]);
    assert.match((await cli(['hold', '-c', config, id])).out, /1 message placed on hold/);
    assert.equal((await q.get(id))!.state, 'hold');
    assert.match((await cli(['release', '-c', config, '--all'])).out, /1 message released from hold/);
    assert.equal((await q.get(id))!.state, 'queued');
    assert.match((await cli(['delete', '-c', config, id])).out, /1 message deleted/);
    assert.equal(await q.get(id), null);
  } finally {
    await q.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('postgres queue: messages claimed by a pass that paused on an error are given back, not left leased', async () => {
  await wipe();
  const clock = new ManualClock(1_700_000_000_000);
  const q = await PostgresMailQueue.open(pg.url, { node: 'n', clock, poolSize: 2 });
  const counts = new Map<string, number>();
  const runner = new QueueRunner({ store: q, deliverer: new CountingDeliverer(counts, 'n'), bouncer: new ListBouncer(), clock, concurrency: 1, logger: new MemoryLogger() });
  try {
    const bad = await queueOne(q);
    clock.advance(1);
    await queueOne(q);
    clock.advance(1);
    await queueOne(q);
    // The first message cannot be read (a damaged row): its attempt fails and the runner pauses.
    await admin.query(`UPDATE queue_messages SET mail_params = 'not json' WHERE queue_id = $1`, [bad]);
    const sum = await runner.runOnce();
    assert.equal(sum.messages, 0);
    const leased = await admin.query('SELECT count(*)::int AS n FROM queue_messages WHERE lease_owner IS NOT NULL');
    assert.equal(leased.rows[0].n, 0, 'no lease outlives the pass');
  } finally {
    await runner.stop();
    await q.close();
  }
});
