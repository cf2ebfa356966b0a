/**
 * The embedded queue (QueueStore: SQLite index, inline bodies, spool files, group commit with one WAL fdatasync per
 * batch) behind the asynchronous MailQueue port. Only a wrapper: every call runs the store's synchronous code at
 * once, so intake costs what it cost before (beginMessage and commit are the store's own). One node holds a
 * SQLite queue, so every message's node is this one.
 */
import { unlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { AttemptRecord, AttemptResult, DueEntry, ListFilter, QueuedMessageDetail } from './index-db.ts';
import type { MailQueue, NodeDetail, NodeSummary, RunnerBackend } from './port.ts';
import type { SpaceVerdict } from './space.ts';
import { attachRunner, type AdminTarget, type IncomingMessage, type QueueStats, type QueueStore } from './store.ts';

export class SqliteMailQueue implements MailQueue {
  readonly backend = 'sqlite';
  readonly node: string;
  /** The wrapped store (tests and tools that want the synchronous API). */
  readonly store: QueueStore;

  constructor(store: QueueStore, node: string) {
    this.store = store;
    this.node = node;
  }

  beginMessage(): Promise<IncomingMessage> {
    return this.store.beginMessage();
  }

  checkSpace(messageSize: number): SpaceVerdict {
    return this.store.checkSpace(messageSize);
  }

  async list(filter: ListFilter = {}): Promise<NodeSummary[]> {
    return this.store.list(filter).map((s) => ({ ...s, node: this.node }));
  }

  async get(queueId: string): Promise<NodeDetail | null> {
    const d = this.store.get(queueId);
    return d === null ? null : { ...d, node: this.node, receivedBy: this.node, deliveringNode: null };
  }

  async hold(target: AdminTarget) { return this.store.hold(target); }
  async release(target: AdminTarget) { return this.store.release(target); }
  async retry(target: AdminTarget) { return this.store.retry(target); }
  async flush() { return this.store.flush(); }
  async delete(target: AdminTarget) { return this.store.delete(target); }

  async readHeaders(queueId: string, maxBytes?: number) {
    return this.store.readHeaders(queueId, maxBytes);
  }

  async readBody(queueId: string): Promise<Buffer | null> {
    return this.store.readBody(queueId);
  }

  stats(): QueueStats {
    return this.store.stats();
  }

  attachRunner(): RunnerBackend {
    return sqliteRunnerBackend(this.store);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

/** The runner's half of a receiving QueueStore, as the asynchronous RunnerBackend. */
export function sqliteRunnerBackend(store: QueueStore): RunnerBackend {
  const port = attachRunner(store);
  const index = port.index;
  return {
    logger: port.logger,
    async due(now: number, after: DueEntry | null, limit: number) { return index.due(now, after, limit); },
    async nextDue() { return index.nextDue(); },
    async get(queueId: string) { return index.get(queueId); },
    async refreshNextRun(queueId: string, fallback: number) { index.refreshNextRun(queueId, fallback); },
    async setNextRun(queueId: string, at: number) { index.setNextRun(queueId, at); },
    async recordAttempts(records: readonly AttemptRecord[]): Promise<(AttemptResult | null)[]> {
      if (records.length === 1) {
        const r = records[0]!;
        return [index.recordAttempt(r.queueId, r.updates, r.now, r.corruptReason)];
      }
      return index.recordAttempts(records);
    },
    async markNotified(queueId: string, indexes: readonly number[], now: number) { index.markNotified(queueId, indexes, now); },
    async markDelayWarned(queueId: string, now: number) { index.markDelayWarned(queueId, now); },
    async removeFinished(queueId: string) { return index.removeFinished(queueId); },
    async removeBody(bodyPath: string) {
      if (bodyPath !== '') await unlink(port.bodyFile(bodyPath));
    },
    openBody(detail: QueuedMessageDetail, onFault: (err: Error) => void): Readable { return port.openBody(detail, onFault); },
    async release() {},
    onWork: (listener) => port.onWork(listener),
    leaseStats: () => ({ leasesLost: 0, incarnations: 1 }),
    async detach() { port.detach(); },
  };
}
