/**
 * Queue commit throughput: N small messages from C concurrent writers, with group commit and without it
 * (maxBatch 1). Run: ./node_modules/.bin/node bench/queue-commit.ts [messages=1000] [writers=20]
 * (belongs in bench/ once wired; kept here next to the code it measures).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QueueStore } from '../src/queue/index.ts';

async function run(messages: number, writers: number, maxBatch: number): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'relayguard-bench-'));
  const store = QueueStore.open({ dataDir, maxBatch });
  let next = 0;
  const started = performance.now();
  async function writer(): Promise<void> {
    while (next < messages) {
      const i = next++;
      const msg = await store.beginMessage();
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
  const seconds = (performance.now() - started) / 1000;
  const s = store.stats();
  await store.close();
  rmSync(dataDir, { recursive: true, force: true });
  process.stdout.write(
    `${maxBatch === 1 ? 'one commit per message' : 'group commit          '}  writers=${writers}  ` +
      `${(messages / seconds).toFixed(0)} msg/s  db commits=${s.dbCommits} (${(s.dbCommits / messages).toFixed(3)}/msg)  ` +
      `largest batch=${s.largestBatch}\n`,
  );
}

const messages = Number(process.argv[2] ?? 1000);
const writers = Number(process.argv[3] ?? 20);
await run(messages, writers, 1);
await run(messages, writers, 512);
