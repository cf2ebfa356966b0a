/**
 * The web service inside `relayguard serve` (src/web): composed here from the running relay's parts.
 *
 *   - Admin accounts, API tokens and the audit log: the admin store (store.postgres: PostgreSQL's, shared by every
 *     node; else dataDir/relayguard.db), managed with `relayguard admin ...`.
 *   - Queue: the relay's own queue (one process, or the shared PostgreSQL queue); with `workers` > 1 on SQLite,
 *     every shard of this machine as one queue (queue-shards.ts), as `relayguard queue` shows it.
 *   - /health checks: the queue store answers, the directory answers, the admin store answers, every configured SMTP
 *     listener is bound and the relay is not stopping (a draining node answers 503, so HAProxy sends new sessions
 *     elsewhere while it finishes its own).
 *   - Metrics: the RelayMetrics fed by the relay's log events (serve.ts), gauges read from the server and the queue.
 *   - Relay decisions: the 'relay decision' log events, tapped where the metrics are (serve.ts), go to a
 *     DecisionRecorder (policy/decisions.ts: batched, off the SMTP path) over the decision store (store.postgres:
 *     the shared table relay_decisions; else dataDir/decisions.db), kept per web.decisionRetention. The recorder
 *     lives while the web service runs; with `workers` > 1 on SQLite only worker 0's decisions are recorded.
 * With `workers` > 1 only worker 0 runs it (worker-role.ts), like the ORDB.
 */
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import { AdminAccounts } from '../policy/admin-accounts.ts';
import type { AdminTarget, ListFilter, MailQueue, QueueCounts } from '../queue/index.ts';
import type { ReceivePath } from '../relay/index.ts';
import { ensureCertificate, loadCertificate } from '../smtp/tls-cert.ts';
import { openAdminStore as openStore, openDecisionStore } from '../store/index.ts';
import { DecisionRecorder } from '../policy/decisions.ts';
import type { AdminStore } from '../policy/admin-accounts.ts';
import { startWeb, type QueueAccess, type RelayMetrics, type RunningWeb } from '../web/index.ts';
import { databasePath } from './paths.ts';
import { ShardedQueueAdmin, ShardedQueueReader, mergeCounts } from './queue-shards.ts';
import { workerCount } from './worker-role.ts';
import type { RunningOrdb } from './ordb-service.ts';
import { webModules } from './web-modules.ts';
import type { AuditService } from '../audit/index.ts';

/** Where serve.ts's log tap hands relay decisions: set while the web service runs. */
export interface DecisionTap {
  recorder: DecisionRecorder | null;
}

export interface RunningWebService {
  readonly web: RunningWeb;
  stop(): Promise<void>;
}

/** The admin store of a configuration: PostgreSQL's with store.postgres (every node's), else dataDir/relayguard.db. */
export function openAdminStore(config: Config, logger?: Logger): Promise<AdminStore> {
  return openStore({ sqliteFile: databasePath(config), postgres: config.store.postgres, ...(logger ? { logger } : {}) });
}

/** The running parts of serve that web modules (src/web/<name>.ts) are composed from, besides the receive path. */
export interface WebParts {
  /** The ORDB of this node when dnsbl.enabled (worker 0 only); a getter: a reload may restart it. */
  readonly ordb?: () => RunningOrdb | null;
  /** The self-audit service (a getter: a reload may restart it). */
  readonly audit?: () => AuditService | null;
}

export async function startWebService(
  config: Config,
  receive: ReceivePath,
  metrics: RelayMetrics,
  logger: Logger,
  isStopping: () => boolean,
  tap: DecisionTap = { recorder: null },
  parts: WebParts = {},
): Promise<RunningWebService> {
  const w = config.web;
  const tls = w.tls
    ? (config.tls.cert && config.tls.key ? await loadCertificate(config.tls.cert, config.tls.key) : await ensureCertificate({ dir: config.dataDir, hostname: config.hostname, logger }))
    : null;
  const store = await openAdminStore(config, logger);
  let recorder: DecisionRecorder;
  try {
    recorder = new DecisionRecorder({
      store: await openDecisionStore({ dataDir: config.dataDir, postgres: config.store.postgres, logger }),
      logger: logger.child({ component: 'decisions' }),
      retention: { maxAgeMs: w.decisionRetention.maxAge, maxRows: w.decisionRetention.maxRows },
    });
  } catch (err) {
    await store.close();
    throw err;
  }
  const queue = workerCount(config.workers) > 1 && config.store.postgres === null ? shardedAccess(config) : receive.queue;
  metrics.setSources({
    connections: () => receive.server.connectionCount,
    queueCounts: () => queueCounts(queue),
    ordbDns: () => parts.ordb?.()?.server.stats ?? null,
  });
  let web: RunningWeb;
  try {
    const modules = await webModules(config, { receive, logger, ordb: parts.ordb ?? (() => null), decisions: recorder.store, audit: parts.audit ?? (() => null) });
    web = await startWeb({
      modules,
      node: config.node,
      logger: logger.child({ component: 'web' }),
      metrics,
      admins: new AdminAccounts(store),
      queue,
      decisions: recorder.store,
      checks: {
        queue: async () => { await receive.queue.list({ limit: 1 }); },
        directory: async () => { await receive.directory.version(); },
        admins: () => store.ping(),
        listeners: () => {
          if (isStopping()) throw new Error('stopping');
          const bound = receive.server.listeners.length;
          if (bound < config.listeners.length) throw new Error(`${bound} of ${config.listeners.length} SMTP listeners bound`);
        },
      },
      admin: { address: w.address, port: w.port },
      public: w.public,
      tls: tls === null ? null : { cert: tls.cert, key: tls.key },
      sessionLifetimeMs: w.sessionLifetime,
      loginFailuresPerIp: w.loginFailuresPerIp,
      loginFailureWindowMs: w.loginFailureWindow,
    });
  } catch (err) {
    metrics.setSources(null);
    await recorder.close();
    await store.close();
    throw err;
  }
  tap.recorder = recorder;
  const scheme = tls ? 'https' : 'http';
  logger.info('web listening', { surface: 'admin', address: web.admin.address, port: web.admin.port, url: `${scheme}://${hostPort(web.admin)}/` });
  if (web.public) logger.info('web listening', { surface: 'public', address: web.public.address, port: web.public.port, url: `${scheme}://${hostPort(web.public)}/` });
  return {
    web,
    async stop() {
      await web.close();
      metrics.setSources(null);
      if (tap.recorder === recorder) tap.recorder = null;
      await recorder.close(); // writes what is buffered
      await store.close();
    },
  };
}

const hostPort = (a: { address: string; port: number }): string => (a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);

/** Message counts by state and the oldest of each (the queue port's counts(): one aggregate query), cached for 2 s so
 *  that the two queue gauges of one scrape, and scrapes close together, share one query. */
const countCache = new WeakMap<QueueAccess, { at: number; counts: Promise<QueueCounts> }>();
function queueCounts(queue: QueueAccess): Promise<QueueCounts> {
  const c = countCache.get(queue);
  if (c && Date.now() - c.at < 2000) return c.counts;
  const counts = queue.counts();
  countCache.set(queue, { at: Date.now(), counts });
  counts.catch(() => countCache.delete(queue));
  return counts;
}

/** Every SQLite shard of this machine as one queue, opened per call (what `relayguard queue` does). */
function shardedAccess(config: Config): QueueAccess {
  const q = (): Promise<typeof import('../queue/index.ts')> => import('../queue/index.ts');
  const read = async <T>(fn: (r: ShardedQueueReader) => Promise<T>, empty: T): Promise<T> => {
    const r = ShardedQueueReader.open(await q(), config.dataDir, Date.now, config.node);
    if (r === null) return empty;
    try { return await fn(r); } finally { await r.close(); }
  };
  const change = async (fn: (a: ShardedQueueAdmin) => ReturnType<MailQueue['flush']>): ReturnType<MailQueue['flush']> => {
    const a = ShardedQueueAdmin.open(await q(), config.dataDir, Date.now, config.node);
    if (a === null) return { changed: [], unchanged: [], missing: [] };
    try { return await fn(a); } finally { await a.close(); }
  };
  const act = (action: 'hold' | 'release' | 'retry' | 'delete') => async (target: AdminTarget) => {
    const r = await change((a) => a.change(action, target));
    return 'queueIds' in target && r.changed.length === 0 && r.unchanged.length === 0 ? { ...r, missing: [...target.queueIds] } : r;
  };
  return {
    list: (filter: ListFilter) => read((r) => r.list(filter), []),
    counts: async () => read((r) => r.counts(), mergeCounts([])),
    get: (id: string) => read((r) => r.get(id), null),
    hold: act('hold'),
    release: act('release'),
    retry: act('retry'),
    delete: act('delete'),
    flush: () => change((a) => a.flush()),
  };
}
