/**
 * The primary of `relayguard serve` with `workers` > 1: forks the SMTP workers with node:cluster (the listening
 * sockets are bound here, and every worker accepts from them; src/cli/worker-role.ts says what a worker is), and
 * supervises them.
 *
 *   - Start: worker 0 first (it creates the shared database, the certificate and runs the ORDB), then the others;
 *     the pid file, systemd READY=1 and the 'workers ready' event come once all of them serve. A worker that fails
 *     while the relay starts stops the whole start (exit code 2): a configuration or port problem is not retried.
 *   - A worker that dies later (crash, kill -9) is logged as an error (ERR_WORKER_EXIT, its exit code or signal)
 *     and restarted on its own queue shard after a backoff (0.5 s doubling to 30 s, reset after 60 s of service);
 *     the restart's queue recovery finds every message it had accepted.
 *   - SIGHUP: passed to every worker, each re-reads the configuration and reloads in place (src/relay/assemble.ts);
 *     a changed `workers` count needs a restart (warned).
 *   - SIGTERM/SIGINT: passed to every worker, each drains (limits.shutdownGrace) and exits; the primary exits after
 *     the last one (SIGKILL to a worker still there after the grace time plus 15 s). No worker outlives the primary:
 *     a worker whose primary dies (even by SIGKILL) loses its IPC channel and exits at once (node:cluster).
 *   - The primary keeps the identity it was started with: it reads no client byte and opens no database, and as
 *     root it can restart a worker that must read a root-only key or bind a privileged port again (Postfix master).
 */
import cluster, { type Worker } from 'node:cluster';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import { chownTree, type Identity } from './privileges.ts';
import { relayClusterMetrics } from './cluster-metrics.ts';
import { SHARDS_DIR, existingShards } from './queue-shards.ts';
import { READY_MESSAGE, WORKER_COUNT_ENV, WORKER_INDEX_ENV, workerCount } from './worker-role.ts';

export interface PrimaryOptions {
  readonly config: Config;
  readonly count: number;
  readonly logger: Logger;
  /** Started as root with `user`: the data directory and the shard directory are handed to it before the workers start. */
  readonly identity: Identity | null;
  /** Re-reads the configuration for SIGHUP (to warn about a changed worker count); throws when unreadable. */
  readonly reloadConfig: () => Config;
  /** Called once every worker serves (pid file, systemd READY=1). */
  readonly onReady: () => void;
  /** Called when stopping begins (systemd STOPPING=1). */
  readonly onStopping: () => void;
}

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const HEALTHY_AFTER_MS = 60_000;

interface Slot {
  readonly index: number;
  worker: Worker | null;
  startedAt: number;
  ready: boolean;
  failures: number;
  timer: NodeJS.Timeout | null;
  /** A SIGHUP came while this worker was starting (before its handlers): passed on once it is ready. */
  reloadPending: boolean;
}

/** Runs the primary until the workers have stopped; resolves to the process exit code. */
export async function runPrimary(o: PrimaryOptions): Promise<number> {
  const { config, count, logger } = o;
  mkdirSync(join(config.dataDir, SHARDS_DIR), { recursive: true, mode: 0o700 });
  if (o.identity !== null) chownTree(config.dataDir, o.identity.uid, o.identity.gid);
  for (const s of existingShards(config.dataDir)) {
    if (s.index >= count) {
      // Left by a run with more workers: delivered (not fed) by worker index % count (shard-drain.ts).
      logger.warn('queue shard without a worker', {
        err_code: 'WARN_SHARD_ORPHANED', shard: s.index, dir: s.dir, workers: count, delivered_by: s.index % count,
      });
    }
  }
  // The primary holds the listening sockets and every worker accepts from them (SCHED_NONE): the primary stays
  // idle. Node's default round robin (the primary accepts and passes each connection over IPC) cost ~9 % of the
  // relay's CPU in the primary and about 1.6 times the CPU per message with a new connection per message
  // (bench:cluster); NODE_CLUSTER_SCHED_POLICY=rr still selects it.
  if (process.env['NODE_CLUSTER_SCHED_POLICY'] === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ silent: false });

  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({ index, worker: null, startedAt: 0, ready: false, failures: 0, timer: null, reloadPending: false }));
  let phase: 'starting' | 'running' | 'stopping' = 'starting';
  let startFailure: number | null = null;
  let resolveDone: (code: number) => void = () => {};
  const done = new Promise<number>((r) => { resolveDone = r; });
  let resolveFirst: () => void = () => {};
  const firstReady = new Promise<void>((r) => { resolveFirst = r; });

  const live = (): Worker[] => slots.flatMap((s) => (s.worker ? [s.worker] : []));
  const checkStopped = (): void => {
    if (phase === 'stopping' && live().length === 0) resolveDone(startFailure ?? 0);
  };

  const fork = (slot: Slot, restart: boolean): void => {
    slot.timer = null;
    slot.ready = false;
    slot.reloadPending = false; // a new process reads the configuration file as it starts
    slot.startedAt = Date.now();
    const w = cluster.fork({ [WORKER_INDEX_ENV]: String(slot.index), [WORKER_COUNT_ENV]: String(count) });
    slot.worker = w;
    const pid = w.process.pid;
    logger.info('worker started', { worker: slot.index, pid, restart });
    w.on('message', (m: unknown) => {
      if ((m as { type?: unknown } | null)?.type !== READY_MESSAGE) return;
      slot.ready = true;
      logger.info('worker ready', { worker: slot.index, pid });
      if (slot.reloadPending) {
        slot.reloadPending = false;
        signalWorker(w, 'SIGHUP');
      }
      if (slot.index === 0) resolveFirst();
      if (phase === 'starting' && slots.every((s) => s.ready)) {
        phase = 'running';
        logger.info('workers ready', { workers: count, pids: slots.map((s) => s.worker?.process.pid) });
        o.onReady();
      }
    });
    w.on('exit', (code, signal) => {
      slot.worker = null;
      if (phase === 'stopping') {
        logger.info('worker stopped', { worker: slot.index, pid, exit_code: code, signal });
        checkStopped();
        return;
      }
      if (phase === 'starting' && !slot.ready) {
        // A worker that cannot start (configuration, port in use, permissions) fails the start: its error is on stderr.
        logger.error('worker failed to start', { worker: slot.index, pid, exit_code: code, signal, err_code: 'ERR_WORKER_START' });
        startFailure = code !== null && code !== 0 ? code : 2;
        if (slot.index === 0) resolveFirst();
        stop('worker failed to start');
        return;
      }
      const lived = Date.now() - slot.startedAt;
      slot.failures = lived >= HEALTHY_AFTER_MS ? 1 : slot.failures + 1;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (slot.failures - 1));
      logger.error('worker exited', {
        worker: slot.index, pid, exit_code: code, signal, err_code: 'ERR_WORKER_EXIT', lived_ms: lived, restart_in_ms: delay,
      });
      slot.timer = setTimeout(() => fork(slot, true), delay);
    });
  };

  let stopSignal: string | null = null;
  const stop = (signal: string): void => {
    if (phase === 'stopping') return;
    phase = 'stopping';
    stopSignal = signal;
    resolveFirst(); // a stop while worker 0 starts: the others are never forked
    o.onStopping();
    logger.info('stopping', { signal, grace_ms: config.limits.shutdownGrace, workers: live().length });
    for (const s of slots) {
      if (s.timer) { clearTimeout(s.timer); s.timer = null; }
    }
    for (const w of live()) signalWorker(w, 'SIGTERM');
    const killAfter = config.limits.shutdownGrace + 5000 + 15_000;
    setTimeout(() => {
      for (const w of live()) {
        logger.error('worker did not stop in time; killing it', { pid: w.process.pid, err_code: 'ERR_WORKER_STOP' });
        signalWorker(w, 'SIGKILL');
      }
    }, killAfter).unref();
    checkStopped();
  };
  const reload = (): void => {
    if (phase === 'stopping') return;
    try {
      const next = o.reloadConfig();
      if (workerCount(next.workers) !== count) {
        logger.warn('workers changed; restart relayguard to apply it', { err_code: 'WARN_RELOAD_RESTART', running: count, configured: workerCount(next.workers) });
      }
    } catch { /* each worker reports the unreadable file itself */ }
    logger.info('reloading workers', { workers: live().length });
    // Only to workers that serve: SIGHUP's default action would kill one still loading (it gets it once ready).
    for (const s of slots) {
      if (s.worker === null) continue;
      if (s.ready) signalWorker(s.worker, 'SIGHUP');
      else s.reloadPending = true;
    }
  };
  const onTerm = (): void => stop('SIGTERM');
  const onInt = (): void => stop('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  process.on('SIGHUP', reload);
  // Launched by npm or npx: when that parent goes away, stop too (field report 1, H3).
  let watch: NodeJS.Timeout | null = null;
  if (process.env['npm_lifecycle_event'] !== undefined || process.env['npm_command'] !== undefined) {
    const parent = process.ppid;
    watch = setInterval(() => { if (process.ppid !== parent) stop('parent exited'); }, 500);
    watch.unref();
  }
  // Worker 0 serves /metrics as the sum over every worker: it asks here, this process collects (cluster-metrics.ts).
  const stopMetrics = relayClusterMetrics();
  try {
    // Worker 0 first: it creates the shared database and the certificate, and runs the ORDB.
    fork(slots[0]!, false);
    await firstReady;
    if (phase === 'starting') for (const s of slots.slice(1)) fork(s, false);
    const code = await done;
    logger.info('stopped', { signal: stopSignal });
    return code;
  } finally {
    stopMetrics();
    if (watch) clearInterval(watch);
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    process.off('SIGHUP', reload);
  }
}

function signalWorker(w: Worker, signal: NodeJS.Signals): void {
  try {
    if (w.process.pid !== undefined) process.kill(w.process.pid, signal);
  } catch { /* already gone */ }
}
