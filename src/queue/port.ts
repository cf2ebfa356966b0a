/**
 * The queue's asynchronous port: what the receive path, the queue runner, the CLI and the web see of the durable
 * mail queue, whatever holds it. Two implementations: SqliteMailQueue (sqlite-queue.ts: the embedded queue,
 * QueueStore, synchronous inside and only wrapped) and PostgresMailQueue (store/postgres-queue.ts: one queue
 * shared by every node, leases so that two nodes never deliver one message at once).
 *
 * RunnerBackend is the runner's half. Its rules, per message of a pass: due() hands out messages (on PostgreSQL it
 * claims them: this node holds a lease on each until release()); get() is asked again just before delivering and
 * answers null when the message is gone, or when this node no longer holds it (its lease was taken over); every
 * write after the delivery is fenced the same way: a recordAttempts() entry comes back null when the lease is lost,
 * and the runner drops those outcomes (counted as possible duplicates: at least once stays the rule).
 * The embedded queue hands the messages it just committed to its runner (onWork's `handed`), and its get() answers
 * a handed message's first call from the committed record after one state read; PostgreSQL does neither (its
 * runner must claim each message with a lease through due()).
 */
import type { Readable } from 'node:stream';
import type { Logger } from '../core/log.ts';
import type {
  AdminResult, AttemptRecord, AttemptResult, DueEntry, ListFilter, QueueCounts, QueuedMessageDetail, QueuedMessageSummary,
} from './index-db.ts';
import type { SpaceVerdict } from './space.ts';
import type { AdminTarget, IncomingMessage, QueueStats } from './store.ts';

/** A queue listing entry with the node that holds it (delivering it now, else the one that received it). */
export interface NodeSummary extends QueuedMessageSummary {
  /** The node delivering the message now, else the node that received it; null when unknown (SQLite: this node). */
  readonly node: string | null;
}

export interface NodeDetail extends QueuedMessageDetail {
  readonly node: string | null;
  /** The node that received the message (null: unknown). */
  readonly receivedBy: string | null;
  /** The node holding a delivery lease on it now, or null. */
  readonly deliveringNode: string | null;
}

/** A recordAttempts() entry: this node's lease on the message is gone, so its outcomes were not recorded. */
export const LEASE_LOST = 'lease-lost';

export interface MailQueue {
  readonly backend: 'sqlite' | 'postgres';
  /** This node's name (config `node`, default the host name). */
  readonly node: string;
  /**
   * Reserves a queue id for a message; the caller pipes the body into `body` and calls commit(), which resolves
   * only when the message is durable (then the SMTP layer says 250) and rejects with ERR_QUEUE_WRITE (451 4.3.0)
   * or ERR_QUEUE_NOSPACE (452 4.3.1).
   */
  beginMessage(): Promise<IncomingMessage>;
  /** The MAIL-time space check (synchronous: it runs on the SMTP hot path). */
  checkSpace(messageSize: number): SpaceVerdict;
  list(filter?: ListFilter): Promise<NodeSummary[]>;
  get(queueId: string): Promise<NodeDetail | null>;
  /**
   * Messages by state (queued, hold, corrupt; deferred: messages with at least one deferred recipient) and the
   * oldest message of each: one aggregate query, cheap enough for every metrics scrape (never a listing).
   */
  counts(): Promise<QueueCounts>;
  hold(target: AdminTarget): Promise<AdminResult>;
  release(target: AdminTarget): Promise<AdminResult>;
  retry(target: AdminTarget): Promise<AdminResult>;
  flush(): Promise<AdminResult>;
  delete(target: AdminTarget): Promise<AdminResult>;
  readHeaders(queueId: string, maxBytes?: number): Promise<{ headers: string; truncated: boolean } | null>;
  readBody(queueId: string): Promise<Buffer | null>;
  stats(): QueueStats;
  /** The runner's access (one runner per queue object); throws ERR_QUEUE_READONLY for a read-only or admin queue. */
  attachRunner(): RunnerBackend;
  close(): Promise<void>;
}

export interface RunnerBackend {
  readonly logger: Logger;
  /** Messages due at `now` after the keyset cursor; on PostgreSQL claims them (leases) for this node. */
  due(now: number, after: DueEntry | null, limit: number): Promise<DueEntry[]>;
  /** The earliest next run of a queued message, or null. */
  nextDue(): Promise<number | null>;
  /** The message as it is now, or null when it is gone or (PostgreSQL) this node no longer holds its lease. */
  get(queueId: string): Promise<QueuedMessageDetail | null>;
  refreshNextRun(queueId: string, fallback: number): Promise<void>;
  setNextRun(queueId: string, at: number): Promise<void>;
  /** All in one transaction; an entry is null when the message is gone, LEASE_LOST when this node no longer holds
   *  it (another node took it over, or this node's incarnation expired): its outcomes are dropped. */
  recordAttempts(records: readonly AttemptRecord[]): Promise<(AttemptResult | null | typeof LEASE_LOST)[]>;
  markNotified(queueId: string, indexes: readonly number[], now: number): Promise<void>;
  markDelayWarned(queueId: string, now: number): Promise<void>;
  /** Removes a finished message; returns its body path ('' for a body with the record) or null. */
  removeFinished(queueId: string): Promise<string | null>;
  /** Removes a spool body whose record is gone ('' or a database backend: nothing to do). */
  removeBody(bodyPath: string): Promise<void>;
  openBody(detail: QueuedMessageDetail, onFault: (err: Error) => void): Readable;
  /** The runner is done with the message for this pass (PostgreSQL: gives its lease back). Never rejects. */
  release(queueId: string): Promise<void>;
  /**
   * Called whenever work may have become due in this process. A backend may hand over messages it just committed
   * (`handed`: durable, due now, never attempted): the runner then starts them without a due() scan. Without
   * `handed` the runner scans. Returns the unsubscribe function.
   */
  onWork(listener: (handed?: readonly DueEntry[]) => void): () => void;
  /** Counts of the lease protocol (PostgreSQL), for the runner's stats. */
  leaseStats(): { readonly leasesLost: number; readonly incarnations: number };
  /** Gives up the runner slot (PostgreSQL: releases this node's remaining leases). */
  detach(): Promise<void>;
}
