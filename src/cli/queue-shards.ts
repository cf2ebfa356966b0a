/**
 * Queue shards on one machine (`workers` > 1 with the embedded SQLite queue): where each worker's queue lives, and
 * the one queue the CLI shows over all of them.
 *
 * Layout: shard 0 is the data directory itself (dataDir/queue.db, dataDir/spool: the layout of a single-process
 * relay, so an existing install keeps its queue when it turns workers on, and goes back to 1 without losing
 * anything); shard N >= 1 is dataDir/shards/N/ (its own queue.db, receiver.lock and spool). The shared databases
 * (relayguard.db: users, domains, aliases, ORDB) stay in dataDir.
 *
 * The reader and admin below open every shard that has a queue and answer as one queue: list merges (oldest first,
 * each row labelled with its `shard`), show finds the shard holding an id, changes go to every shard and their
 * results are united (an id is missing only when no shard has it). Each shard is a MailQueue (the queue port); the
 * shared PostgreSQL queue (store.postgres) is one queue for every worker and node, shown as one unsharded queue
 * (rows without `shard`; they name their `node`).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AdminResult, AdminTarget, CountedState, ListFilter, MailQueue, NodeDetail, NodeSummary, QueueCounts, StateCount } from '../queue/index.ts';

/** The queue's counted states (queue/index-db.ts COUNTED_STATES), kept here so `relayguard queue` and `dnsbl` load no queue code at start-up. */
const COUNTED_STATES: readonly CountedState[] = ['queued', 'deferred', 'hold', 'corrupt'];

type QueueModule = typeof import('../queue/index.ts');

/** Sub-directory of dataDir holding the shards of workers 1..N-1. */
export const SHARDS_DIR = 'shards';

/** The queue directory of shard `index` (0: dataDir itself). */
export function shardDir(dataDir: string, index: number): string {
  if (!Number.isInteger(index) || index < 0) throw new RangeError(`Bad shard index ${index}`);
  return index === 0 ? resolve(dataDir) : join(resolve(dataDir), SHARDS_DIR, String(index));
}

export interface Shard {
  readonly index: number;
  readonly dir: string;
}

/** Every shard under dataDir that has a queue database, by index (shard 0 first). */
export function existingShards(dataDir: string): Shard[] {
  const out: Shard[] = [];
  if (existsSync(join(resolve(dataDir), 'queue.db'))) out.push({ index: 0, dir: shardDir(dataDir, 0) });
  const base = join(resolve(dataDir), SHARDS_DIR);
  let names: string[] = [];
  try { names = readdirSync(base); } catch { /* no shards */ }
  const indexes = names.filter((n) => /^[1-9][0-9]{0,3}$/.test(n)).map(Number).sort((a, b) => a - b);
  for (const index of indexes) {
    const dir = shardDir(dataDir, index);
    if (existsSync(join(dir, 'queue.db'))) out.push({ index, dir });
  }
  return out;
}

/** A queue list row with the shard that holds it. */
export type ShardedSummary = NodeSummary & { readonly shard?: number };
export type ShardedDetail = NodeDetail & { readonly shard?: number };

interface Opened {
  /** Null: the one shared queue (PostgreSQL), not a shard. */
  readonly shard: number | null;
  readonly store: MailQueue;
}

const label = <T extends object>(row: T, shard: number | null): T & { shard?: number } => (shard === null ? row : { ...row, shard });

/** Opens every SQLite shard of dataDir with `role`; closes what it opened if one fails. */
function openShards(q: QueueModule, dataDir: string, now: () => number, role: 'read' | 'admin', node: string): Opened[] {
  const opened: Opened[] = [];
  try {
    for (const s of existingShards(dataDir)) {
      const store = role === 'read'
        ? q.QueueStore.open({ dataDir: s.dir, readOnly: true, clock: { now } })
        : q.QueueStore.openAdmin({ dataDir: s.dir, clock: { now } });
      opened.push({ shard: s.index, store: new q.SqliteMailQueue(store, node) });
    }
  } catch (err) {
    void closeAll(opened);
    throw err;
  }
  return opened;
}

async function closeAll(opened: readonly Opened[]): Promise<void> {
  await Promise.all(opened.map((o) => Promise.resolve(o.store.close()).catch(() => undefined)));
}

/** Read access to every shard as one queue (queue list, queue show). */
export class ShardedQueueReader {
  readonly #opened: readonly Opened[];
  private constructor(opened: readonly Opened[]) { this.#opened = opened; }

  /** Null when no shard has a queue yet. `node`: the name rows carry (config `node`). */
  static open(q: QueueModule, dataDir: string, now: () => number, node = 'local'): ShardedQueueReader | null {
    const opened = openShards(q, dataDir, now, 'read', node);
    return opened.length === 0 ? null : new ShardedQueueReader(opened);
  }

  /** The one shared queue (PostgreSQL) as a reader. */
  static shared(queue: MailQueue): ShardedQueueReader {
    return new ShardedQueueReader([{ shard: null, store: queue }]);
  }

  get backend(): MailQueue['backend'] { return this.#opened[0]!.store.backend; }

  get shardCount(): number { return this.#opened.length; }

  /** Every shard's rows, merged oldest first; the limit applies to the merged list. */
  async list(filter: ListFilter = {}): Promise<ShardedSummary[]> {
    const parts = await Promise.all(this.#opened.map(async (o) => (await o.store.list(filter)).map((r) => label(r, o.shard))));
    const rows = parts.flat().sort((a, b) => a.receivedAt - b.receivedAt || (a.queueId < b.queueId ? -1 : a.queueId > b.queueId ? 1 : 0));
    return filter.limit !== undefined ? rows.slice(0, filter.limit) : rows;
  }

  /** Every shard's counts added up; the oldest is the oldest of any shard. */
  async counts(): Promise<QueueCounts> {
    return mergeCounts(await Promise.all(this.#opened.map((o) => o.store.counts())));
  }

  /** The message and its shard, or null when no shard holds it. */
  async get(queueId: string): Promise<ShardedDetail | null> {
    for (const o of this.#opened) {
      const d = await o.store.get(queueId);
      if (d) return label(d, o.shard);
    }
    return null;
  }

  async readHeaders(queueId: string): ReturnType<MailQueue['readHeaders']> {
    for (const o of this.#opened) {
      if (await o.store.get(queueId)) return o.store.readHeaders(queueId);
    }
    return null;
  }

  close(): Promise<void> { return closeAll(this.#opened); }
}

type ChangeAction = 'hold' | 'release' | 'retry' | 'delete';

/** Changes on every shard as on one queue (queue flush, hold, release, retry, delete). */
export class ShardedQueueAdmin {
  readonly #opened: readonly Opened[];
  private constructor(opened: readonly Opened[]) { this.#opened = opened; }

  /** Null when no shard has a queue yet. */
  static open(q: QueueModule, dataDir: string, now: () => number, node = 'local'): ShardedQueueAdmin | null {
    const opened = openShards(q, dataDir, now, 'admin', node);
    return opened.length === 0 ? null : new ShardedQueueAdmin(opened);
  }

  /** The one shared queue (PostgreSQL) for changes. */
  static shared(queue: MailQueue): ShardedQueueAdmin {
    return new ShardedQueueAdmin([{ shard: null, store: queue }]);
  }

  async flush(): Promise<AdminResult> {
    return unite(await Promise.all(this.#opened.map(async (o) => o.store.flush())), null);
  }

  async change(action: ChangeAction, target: AdminTarget): Promise<AdminResult> {
    const results = await Promise.all(this.#opened.map(async (o) => o.store[action](target)));
    return unite(results, 'queueIds' in target ? target.queueIds : null);
  }

  close(): Promise<void> { return closeAll(this.#opened); }
}

/** One result from each shard's: changed and unchanged united; missing = the asked ids that no shard found. */
function unite(results: readonly AdminResult[], asked: readonly string[] | null): AdminResult {
  const changed = results.flatMap((r) => r.changed);
  const unchanged = results.flatMap((r) => r.unchanged);
  if (asked === null) return { changed, unchanged, missing: [] };
  const found = new Set([...changed, ...unchanged.map((u) => u.queueId)]);
  return { changed, unchanged, missing: asked.filter((id) => !found.has(id)) };
}

/** Counts of several queues as one: messages added up, the oldest of all. */
export function mergeCounts(parts: readonly QueueCounts[]): QueueCounts {
  const out = {} as Record<CountedState, StateCount>;
  for (const state of COUNTED_STATES) {
    let messages = 0;
    let oldest: StateCount | null = null;
    for (const p of parts) {
      const c = p[state];
      messages += c.messages;
      if (c.oldestReceivedAt !== null && (oldest === null || c.oldestReceivedAt < oldest.oldestReceivedAt!)) oldest = c;
    }
    out[state] = { messages, oldestReceivedAt: oldest?.oldestReceivedAt ?? null, oldestAgeMs: oldest?.oldestAgeMs ?? null };
  }
  return out;
}
