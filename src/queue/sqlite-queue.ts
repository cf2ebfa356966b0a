/**
 * The embedded queue (QueueStore: SQLite index, inline bodies, spool files, group commit with one WAL fdatasync per
 * batch) behind the asynchronous MailQueue port. Only a wrapper: every call runs the store's synchronous code at
 * once, so intake costs what it cost before (beginMessage and commit are the store's own). One node holds a
 * SQLite queue, so every message's node is this one.
 */
import { unlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { AttemptRecord, AttemptResult, DueEntry, ListFilter, MessageRecord, QueuedMessageDetail, QueueCounts } from './index-db.ts';
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

  async counts(): Promise<QueueCounts> {
    return this.store.counts();
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

/** Most handed-over records kept for the runner (beyond: forgotten, the runner's due() scan finds them). */
const HANDED_MAX = 4096;

/**
 * The runner's half of a receiving QueueStore, as the asynchronous RunnerBackend.
 *
 * Hand-over: after each group commit the store passes the batch's records (durable, visible to due() from that
 * moment); they are handed to the runner as due entries and kept here, so the first get() of each answers from
 * the record (every recipient pending, never attempted: what the index holds, since only the runner changes
 * recipients and it has not attempted the message yet) after one indexed read of the message's state (a hold or
 * delete by an administrator meanwhile is seen, as with a full read). The body is still read from the index (or
 * its spool file) when it is sent: what is stored is what goes out. A record is used once: the first get()
 * consumes it, later ones read the index.
 */
export function sqliteRunnerBackend(store: QueueStore): RunnerBackend {
  const port = attachRunner(store);
  const index = port.index;
  const handed = new Map<string, QueuedMessageDetail>();
  const forgetAll = (): void => handed.clear();
  const take = (queueId: string): QueuedMessageDetail | undefined => {
    const d = handed.get(queueId);
    if (d !== undefined) handed.delete(queueId);
    return d;
  };
  return {
    logger: port.logger,
    async due(now: number, after: DueEntry | null, limit: number) { return index.due(now, after, limit); },
    async nextDue() { return index.nextDue(); },
    async get(queueId: string) {
      const d = take(queueId);
      if (d !== undefined) {
        const state = index.stateOf(queueId);
        if (state === null) return null;
        if (state === 'queued') return d;
      }
      return index.get(queueId);
    },
    async refreshNextRun(queueId: string, fallback: number) { index.refreshNextRun(queueId, fallback); },
    async setNextRun(queueId: string, at: number) { index.setNextRun(queueId, at); },
    async recordAttempts(records: readonly AttemptRecord[]): Promise<(AttemptResult | null)[]> {
      // Attempts that finish their message ride on the next group commit (see RunnerPort.finishWithCommit); the
      // others are recorded now, in one transaction. So a mixed call is two transactions, each all or nothing.
      const riding = records.map((r) => r.finishes === true && r.corruptReason === null);
      const now = records.filter((_, i) => !riding[i]);
      const nowResults = now.length === 0 ? [] : now.length === 1
        ? [index.recordAttempt(now[0]!.queueId, now[0]!.updates, now[0]!.now, now[0]!.corruptReason)]
        : index.recordAttempts(now);
      if (now.length === records.length) return nowResults;
      const rode = await Promise.all(records.filter((_, i) => riding[i]).map((r) => port.finishWithCommit(r)));
      let a = 0;
      let b = 0;
      return records.map((_, i) => (riding[i] ? rode[b++] : nowResults[a++]) ?? null);
    },
    async markNotified(queueId: string, indexes: readonly number[], now: number) { index.markNotified(queueId, indexes, now); },
    async markDelayWarned(queueId: string, now: number) { index.markDelayWarned(queueId, now); },
    async removeFinished(queueId: string) { return index.removeFinished(queueId); },
    async removeBody(bodyPath: string) {
      if (bodyPath !== '') await unlink(port.bodyFile(bodyPath));
    },
    openBody(detail: QueuedMessageDetail, onFault: (err: Error) => void): Readable { return port.openBody(detail, onFault); },
    async release() {},
    onWork: (listener) => port.onWork((committed) => {
      if (committed === undefined) {
        listener();
        return;
      }
      if (handed.size + committed.length > HANDED_MAX) {
        // The runner is far behind: let its due() scan find them (and whatever was kept here).
        forgetAll();
        listener();
        return;
      }
      const entries: DueEntry[] = [];
      for (const r of committed) {
        handed.set(r.queueId, committedDetail(r));
        entries.push({ queueId: r.queueId, nextRunAt: r.receivedAt });
      }
      listener(entries);
    }),
    leaseStats: () => ({ leasesLost: 0, incarnations: 1 }),
    async detach() {
      forgetAll();
      port.detach();
    },
  };
}

/** A just-committed message as IndexDb.get() reads it back (see insertBatch): queued, every recipient pending. */
function committedDetail(r: MessageRecord): QueuedMessageDetail {
  return {
    queueId: r.queueId,
    receivedAt: r.receivedAt,
    sender: r.sender,
    size: r.size,
    bodyPath: r.bodyPath,
    bodyInline: r.bodyPath === '',
    messageId: r.messageId,
    clientIp: r.clientIp,
    helo: r.helo,
    authUser: r.authUser,
    listener: r.listener,
    mailParams: { ...r.mailParams },
    state: 'queued',
    stateReason: null,
    updatedAt: r.receivedAt,
    nextRunAt: r.receivedAt,
    delayWarnedAt: null,
    recipients: r.recipients.map((x, i) => ({
      index: i, address: x.address, params: { ...x.params }, state: 'pending', attempts: 0, nextAttemptAt: r.receivedAt,
      lastAttemptAt: null, lastReply: null, reply: null, dsnStatus: null, remoteMta: null, diagnostic: null, notifiedAt: null,
    })),
  };
}
