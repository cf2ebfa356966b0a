import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queueContract } from './queue.case.ts';
import { SqliteMailQueue } from './sqlite-queue.ts';
import { QueueStore } from './store.ts';

queueContract({
  name: 'sqlite',
  async fresh(clock) {
    const dataDir = mkdtempSync(join(tmpdir(), 'relayguard-queue-contract-'));
    const queue = new SqliteMailQueue(QueueStore.open({ dataDir, clock }), 'node-a');
    return {
      queue,
      async admin() {
        return new SqliteMailQueue(QueueStore.openAdmin({ dataDir, clock }), 'node-a');
      },
      async dispose() {
        await queue.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
});
