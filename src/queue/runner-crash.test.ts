/**
 * At least once, seen from outside the process (hostile-inputs 2.2, "after the next hop's 250, before the local
 * entry is removed"): a child process runs the queue and is killed with SIGKILL right after its deliverer got the
 * remote 250 (or right after its bouncer queued a DSN). After a restart the work is done again: duplicates are
 * allowed, losses are not.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Bouncer, Deliverer, DeliveryJob, FailedRecipient } from './deliverer.ts';
import { QueueRunner } from './runner.ts';
import { QueueStore } from './store.ts';

const work = mkdtempSync(join(tmpdir(), 'relayguard-runner-crash-'));
after(() => rmSync(work, { recursive: true, force: true }));

const CHILD = join(work, 'child.mjs');
writeFileSync(CHILD, `
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
const [indexUrl, dataDir, logFile, mode] = process.argv.slice(2);
const { QueueStore, QueueRunner } = await import(indexUrl);
function note(line) {
  const fd = openSync(logFile, 'a');
  writeSync(fd, line + '\\n');
  fsyncSync(fd);
  closeSync(fd);
}
const store = QueueStore.open({ dataDir });
const runner = new QueueRunner({
  store,
  deliverer: {
    async deliver(job) {
      for await (const _ of job.openBody()) { /* the body went out */ }
      if (mode === 'after-remote-250') {
        note('DELIVERED ' + job.queueId + ' ' + job.recipients.map((r) => r.address).join(','));
        process.kill(process.pid, 'SIGKILL');
        await new Promise(() => {});
      }
      return job.recipients.map((r) => ({ address: r.address, outcome: 'bounced', reply: { code: 550, enhanced: '5.1.1', text: 'No such user' } }));
    },
  },
  bouncer: {
    async bounce(message, recipients) {
      note('BOUNCED ' + message.queueId + ' ' + recipients.map((r) => r.address).join(','));
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => {});
    },
    async delayed() {},
  },
});
await runner.runOnce();
note('NOT KILLED');
`);
const INDEX_URL = new URL('./index.ts', import.meta.url).href;

function runChild(dataDir: string, logFile: string, mode: string): Promise<NodeJS.Signals | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, INDEX_URL, dataDir, logFile, mode], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (_code, signal) => resolve(signal));
  });
}

async function queueOne(dataDir: string, recipients: string[]): Promise<string> {
  const store = QueueStore.open({ dataDir });
  const msg = await store.beginMessage();
  await pipeline(Readable.from([Buffer.from('Message-ID: <crash@test>\r\nSubject: crash\r\n\r\nbody\r\n')]), msg.body);
  await msg.commit({ sender: 'a@example.org', recipients: recipients.map((address) => ({ address })), clientIp: '192.0.2.1', helo: null, user: null, listener: 'mx' });
  await store.close();
  return msg.queueId;
}

class Recorder implements Deliverer, Bouncer {
  readonly delivered: string[] = [];
  readonly bounced: string[] = [];
  async deliver(job: DeliveryJob) {
    for await (const _ of job.openBody()) { /* consume */ }
    this.delivered.push(...job.recipients.map((r) => r.address));
    return job.recipients.map((r) => ({ address: r.address, outcome: 'delivered' as const }));
  }
  async bounce(_m: unknown, recipients: readonly FailedRecipient[]) {
    this.bounced.push(...recipients.map((r) => r.address));
  }
  async delayed() {}
}

test('crash: SIGKILL after the remote 250, before the record: delivered again after restart (at least once)', async () => {
  const dataDir = join(work, 'after-250');
  const logFile = join(work, 'after-250.log');
  const id = await queueOne(dataDir, ['bob@example.net', 'carol@example.net']);
  assert.equal(await runChild(dataDir, logFile, 'after-remote-250'), 'SIGKILL');
  assert.deepEqual(readFileSync(logFile, 'utf8').trim().split('\n'), [`DELIVERED ${id} bob@example.net,carol@example.net`]);

  const store = QueueStore.open({ dataDir });
  const detail = store.get(id);
  assert.deepEqual(detail?.recipients.map((r) => [r.state, r.attempts]), [['pending', 0], ['pending', 0]], 'nothing was recorded');
  const rec = new Recorder();
  const runner = new QueueRunner({ store, deliverer: rec, bouncer: rec });
  assert.equal((await runner.runOnce()).delivered, 2);
  assert.deepEqual(rec.delivered, ['bob@example.net', 'carol@example.net'], 'delivered again: one duplicate, no loss');
  assert.equal(store.get(id), null);
  assert.deepEqual(readdirSync(join(dataDir, 'spool', 'msg')), []);
  await runner.stop();
  await store.close();
});

test('crash: SIGKILL after the bounce was queued, before it was marked: bounced again after restart', async () => {
  const dataDir = join(work, 'in-bounce');
  const logFile = join(work, 'in-bounce.log');
  const id = await queueOne(dataDir, ['nobody@example.net']);
  assert.equal(await runChild(dataDir, logFile, 'in-bounce'), 'SIGKILL');
  assert.deepEqual(readFileSync(logFile, 'utf8').trim().split('\n'), [`BOUNCED ${id} nobody@example.net`]);

  const store = QueueStore.open({ dataDir });
  const r = store.get(id)?.recipients[0];
  assert.deepEqual([r?.state, r?.notifiedAt], ['bounced', null], 'the outcome was recorded, the report not yet');
  const rec = new Recorder();
  const runner = new QueueRunner({ store, deliverer: rec, bouncer: rec });
  const s = await runner.runOnce();
  assert.equal(s.messages, 0, 'not delivered again');
  assert.deepEqual(rec.bounced, ['nobody@example.net'], 'the bounce is sent again rather than lost');
  assert.equal(store.get(id), null);
  assert.equal(existsSync(join(dataDir, 'spool', 'msg', `${id}.eml`)), false);
  await runner.stop();
  await store.close();
});
