/**
 * One SMTP worker of `relayguard serve` with `workers` > 1 (src/cli/serve-primary.ts forks them with node:cluster):
 * who this process is, and what of the configuration and the assembly differs from a single-process relay.
 *
 *   - Listeners: the same as the primary's; node:cluster binds them once in the primary and hands connections
 *     to the workers.
 *   - Queue: the worker's own shard (src/cli/queue-shards.ts): worker 0 uses dataDir itself (today's layout), worker
 *     N dataDir/shards/N, each with its own receiver lock, recovery and queue runner. A worker that crashes is
 *     restarted on the same shard, and its recovery finds every message that got a 250.
 *   - Shared: dataDir/relayguard.db (users, domains, aliases, ORDB listings; SQLite WAL serves several processes),
 *     the TLS certificate and DKIM keys in dataDir.
 *   - The ORDB (DNS zone server and its test scheduler) and the web service (dashboard, API, /metrics) run in worker 0 only.
 *   - Privileges: the primary stays root (it only holds sockets and supervises, like Postfix's master); each worker
 *     is forked as root, binds (through the primary), reads its keys, then drops to `user`/`group` before it reads
 *     a client byte, exactly as a single process does.
 */
import cluster from 'node:cluster';
import { lchownSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import type { AssembleOptions } from '../relay/index.ts';
import { chownTree } from './privileges.ts';
import { SHARDS_DIR, existingShards, shardDir, type Shard } from './queue-shards.ts';

export const WORKER_INDEX_ENV = 'RELAYGUARD_WORKER_INDEX';
export const WORKER_COUNT_ENV = 'RELAYGUARD_WORKER_COUNT';

/** The IPC message a worker sends once it serves (listening, privileges dropped, connections released). */
export const READY_MESSAGE = 'relayguard:worker-ready';

export interface WorkerRole {
  /** 0 .. count-1; also the queue shard. */
  readonly index: number;
  readonly count: number;
}

/** The number of workers `workers` asks for on this machine. */
export function workerCount(setting: Config['workers']): number {
  return setting === 'auto' ? Math.max(1, availableParallelism()) : setting;
}

/** This process's role when the serve primary forked it; null in a single-process relay (or any other command). */
export function currentWorkerRole(): WorkerRole | null {
  if (!cluster.isWorker) return null;
  const index = Number(process.env[WORKER_INDEX_ENV]);
  const count = Number(process.env[WORKER_COUNT_ENV]);
  if (!Number.isInteger(index) || !Number.isInteger(count) || index < 0 || index >= count) {
    throw new Error(`a cluster worker without a valid ${WORKER_INDEX_ENV}/${WORKER_COUNT_ENV} (${process.env[WORKER_INDEX_ENV]}/${process.env[WORKER_COUNT_ENV]})`);
  }
  return { index, count };
}

/**
 * The configuration a worker runs: the ORDB and the web service only in worker 0 (one web listener per machine;
 * worker 0 sees every shard through queue-shards.ts). (Applied at start and at every reload.)
 */
export function workerConfig(config: Config, role: WorkerRole): Config {
  if (role.index === 0 || (!config.dnsbl.enabled && !config.web.enabled && !config.audit.enabled)) return config;
  return { ...config, dnsbl: { ...config.dnsbl, enabled: false }, web: { ...config.web, enabled: false }, audit: { ...config.audit, enabled: false } };
}

/**
 * What a worker's assembled receive path gets beyond a single process's. THE place where cluster-wide state enters
 * a worker: its queue shard, and the shared AUTH failure counters (dataDir/counters.db for every worker of this
 * machine, PostgreSQL's with store.postgres), so an attacker who spreads guesses over the workers meets one
 * throttle. Per-IP connection limits stay per worker (HAProxy's stick table is the cluster-wide one, docs/cluster.md).
 */
export function workerAssembleOptions(role: WorkerRole, config: Config, held: boolean): Omit<AssembleOptions, 'logger'> {
  return {
    held,
    queueDir: shardDir(config.dataDir, role.index),
    // One AUTH failure throttle for every worker (dataDir/counters.db; PostgreSQL's with store.postgres).
    machineCounters: true,
  };
}

/** Tells the primary this worker serves. */
export function announceReady(): void {
  process.send?.({ type: READY_MESSAGE, pid: process.pid });
}

/**
 * Hands what this worker uses to uid:gid: its own shard (worker 0: dataDir without the other shards) and the shared
 * files directly in dataDir (relayguard.db and its WAL, certificates). Never another worker's shard, whose files
 * come and go while it serves.
 */
export function chownWorkerFiles(config: Config, role: WorkerRole, uid: number, gid: number): void {
  const dataDir = config.dataDir;
  const own = (p: string): void => {
    try {
      const st = lstatSync(p);
      if (st.uid !== uid || st.gid !== gid) lchownSync(p, uid, gid);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  };
  own(dataDir);
  for (const name of readdirSync(dataDir)) {
    const p = join(dataDir, name);
    if (name === SHARDS_DIR) { own(p); continue; }
    // Shard 0's queue (spool/) and the shared keys (tls/, dkim/) are whole trees; worker 0 walks them.
    if (lstatSync(p).isDirectory()) { if (role.index === 0 || name === 'tls' || name === 'dkim') chownTree(p, uid, gid); continue; }
    own(p);
  }
  if (role.index > 0) chownTree(shardDir(dataDir, role.index), uid, gid);
  for (const s of adoptedShards(dataDir, role)) chownTree(s.dir, uid, gid);
}

/** Shards without a worker (index >= count) that this worker delivers: those whose index modulo count is its own. */
export function adoptedShards(dataDir: string, role: WorkerRole): Shard[] {
  return existingShards(dataDir).filter((s) => s.index >= role.count && s.index % role.count === role.index);
}

/** Creates this worker's shard directory (0700). */
export function ensureShardDir(config: Config, role: WorkerRole): void {
  if (role.index > 0) mkdirSync(shardDir(config.dataDir, role.index), { recursive: true, mode: 0o700 });
}
