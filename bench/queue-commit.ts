/**
 * Queue commit throughput: N small messages from C concurrent writers, with group commit and without it
 * (maxBatch 1), on the embedded SQLite queue, and with --postgres also on the PostgreSQL queue (a private
 * PostgreSQL 15 started in a temp dir, fsync and synchronous_commit on, stopped at the end).
 * Run: ./node_modules/.bin/node bench/queue-commit.ts [messages=1000] [writers=20] [--postgres]
 * Reports messages/s, database commits per message and, for PostgreSQL, round trips per message.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { QueueRunner, QueueStore, SqliteMailQueue, type DeliveryJob, type MailQueue } from '../src/queue/index.ts';
import { PostgresMailQueue } from '../src/store/postgres-queue.ts';
import { migrate } from '../src/store/postgres-schema.ts';
import { startPostgres } from '../src/testing/postgres.ts';

async function load(queue: MailQueue, messages: number, writers: number): Promise<number> {
  let next = 0;
  const started = performance.now();
  async function writer(): Promise<void> {
    while (next < messages) {
      const i = next++;
      const msg = await queue.beginMessage();
      msg.body.end(`Received: from bench\r\nMessage-ID: <${i}@bench>\r\nSubject: ${i}\r\n\r\n${'x'.repeat(2000)}\r\n`);
      await msg.commit({
        sender: 'bench@example.org',
        recipients: [{ address: 'a@example.net' }, { address: 'b@example.com' }],
        clientIp: '127.0.0.1',
        helo: 'bench',
        user: null,
        listener: 'mx',
      });
    }
  }
  await Promise.all(Array.from({ length: writers }, writer));
  return (performance.now() - started) / 1000;
}

function report(label: string, messages: number, writers: number, seconds: number, s: ReturnType<MailQueue['stats']> & { roundTrips?: number }): void {
  process.stdout.write(
    `${label.padEnd(34)} writers=${writers}  ${(messages / seconds).toFixed(0).padStart(6)} msg/s  ` +
      `db commits=${s.dbCommits} (${(s.dbCommits / messages).toFixed(3)}/msg)  largest batch=${s.largestBatch}` +
      (s.roundTrips === undefined ? '' : `  round trips=${s.roundTrips} (${(s.roundTrips / messages).toFixed(3)}/msg)`) + '\n',
  );
}

async function sqlite(messages: number, writers: number, maxBatch: number): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'relayguard-bench-'));
  const queue = new SqliteMailQueue(QueueStore.open({ dataDir, maxBatch }), 'bench');
  try {
    const seconds = await load(queue, messages, writers);
    report(`sqlite, ${maxBatch === 1 ? 'one commit per message' : 'group commit'}`, messages, writers, seconds, queue.stats());
  } finally {
    await queue.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const args = process.argv.slice(2);
const withPostgres = args.includes('--postgres');
const [messages, writers] = [Number(args.filter((a) => !a.startsWith('--'))[0] ?? 1000), Number(args.filter((a) => !a.startsWith('--'))[1] ?? 20)];
await sqlite(messages, writers, 1);
await sqlite(messages, writers, 512);
if (withPostgres) {
  const pg = await startPostgres();
  try {
    const c = new Client(pg.url);
    await c.connect();
    await migrate(c);
    for (const maxBatch of [1, 256]) {
      await c.query('TRUNCATE queue_messages, queue_recipients, queue_bodies');
      const queue = await PostgresMailQueue.open(pg.url, { node: 'bench', poolSize: 10, maxBatch });
      try {
        const seconds = await load(queue, messages, writers);
        report(`postgres, ${maxBatch === 1 ? 'one commit per message' : 'group commit'}`, messages, writers, seconds, queue.stats());
      } finally {
        await queue.close();
      }
    }
    const n = (await c.query('SELECT count(*)::int AS n FROM queue_messages')).rows[0].n;
    process.stdout.write(`postgres rows after the group-commit run: ${n} messages\n`);
    // The delivery side: one runner (concurrency 20) over those messages, a deliverer that accepts at once.
    const queue = await PostgresMailQueue.open(pg.url, { node: 'bench', poolSize: 10 });
    try {
      const deliverer = { async deliver(job: DeliveryJob) { for await (const _ of job.openBody()) { /* read */ } return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered' as const })); } };
      const runner = new QueueRunner({ store: queue, deliverer, bouncer: { async bounce() {}, async delayed() {} }, concurrency: 20 });
      const before = queue.stats().roundTrips;
      const started = performance.now();
      const sum = await runner.runOnce();
      const seconds = (performance.now() - started) / 1000;
      await runner.stop();
      const trips = queue.stats().roundTrips - before;
      process.stdout.write(`postgres runner, 1 node, concurrency 20   ${(sum.finished / seconds).toFixed(0).padStart(6)} msg/s delivered+removed  round trips=${trips} (${(trips / Math.max(1, sum.finished)).toFixed(1)}/msg)\n`);
    } finally {
      await queue.close();
    }
    await c.end();
  } finally {
    await pg.stop();
  }
}
