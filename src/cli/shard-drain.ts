/**
 * Queue shards left without a worker (`workers` lowered, src/cli/queue-shards.ts): each is adopted by the worker
 * whose index is its index modulo the worker count, which opens it as a receiving store (its lock, its recovery)
 * and runs a queue runner on it, with no intake, until it is stopped. So lowering `workers` never strands mail.
 */
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import { QueueStore, SqliteMailQueue } from '../queue/index.ts';
import type { RunningRelay } from './serve.ts';
import { startDelivery } from './serve.ts';
import { adoptedShards, type WorkerRole } from './worker-role.ts';

/** Opens and delivers the adopted shards (when delivery is on); stop() ends their runners and closes them. */
export async function startShardDrains(config: Config, role: WorkerRole, relay: RunningRelay, logger: Logger): Promise<{ stop(): Promise<void> }> {
  const running: { store: QueueStore; delivery: { stop(): Promise<void> } | null }[] = [];
  try {
    for (const s of adoptedShards(config.dataDir, role)) {
      const log = logger.child({ shard: s.index });
      const store = QueueStore.open({ dataDir: s.dir, logger: log });
      const entry: (typeof running)[number] = { store, delivery: null };
      running.push(entry);
      if (config.delivery.enabled) entry.delivery = await startDelivery(config, new SqliteMailQueue(store, config.node), relay.receive.locality, relay.receive.recipients, log);
      log.info('queue shard adopted', { dir: s.dir, messages: store.list().length, delivering: config.delivery.enabled });
    }
  } catch (err) {
    for (const r of running) { await r.delivery?.stop(); await r.store.close(); }
    throw err;
  }
  return {
    async stop() {
      for (const r of running) {
        await r.delivery?.stop();
        await r.store.close();
      }
    },
  };
}
