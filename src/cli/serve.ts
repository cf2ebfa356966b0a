/**
 * `relayguard serve`: the composition root of the running relay. Builds every part from the Config and starts
 * the listeners. The returned handle stops everything in order (listeners with 421, then the queue).
 */
import { readFile } from 'node:fs/promises';
import { promises as dnsPromises } from 'node:dns';
import { finished } from 'node:stream/promises';
import type { Config } from '../config/schema.ts';
import type { Locality } from '../core/locality.ts';
import type { Logger } from '../core/log.ts';
import type { BoundListener } from '../smtp/server.ts';
import { QueueRunner, type MailQueue } from '../queue/index.ts';
import { SmtpDeliverer, DsnBouncer, MailauthDkimSigner } from '../delivery/index.ts';
import type { RecipientResolver } from '../policy/recipients.ts';
import { assembleReceivePath, databasePath, type AssembleOptions, type ReceivePath, type ReloadSummary } from '../relay/index.ts';
import { RelayMetrics, observingLogger } from '../web/index.ts';
import { startOrdb, type RunningOrdb } from './ordb-service.ts';
import { startWebService, type DecisionTap, type RunningWebService } from './web-service.ts';
import { decisionFromEvent } from '../policy/decisions.ts';
import { errorCode } from '../core/errors.ts';
import { startAuditService, type AuditServiceDeps, type RunningAudit } from './audit-service.ts';
import { clusterWorkerMetrics } from './cluster-metrics.ts';
import { currentWorkerRole } from './worker-role.ts';

export { databasePath };

export interface RunningRelay {
  readonly listeners: readonly BoundListener[];
  readonly queue: MailQueue;
  /** The assembled receive path (stores, locality, recipient tables, abuse checks). */
  readonly receive: ReceivePath;
  /** The ORDB service (DNS zone, listings, test scheduler), when dnsbl.enabled. */
  readonly ordb: RunningOrdb | null;
  /** The web service (dashboard, API, /metrics, /health), when web.enabled. */
  readonly web: RunningWebService | null;
  /** The self-audit (periodic when audit.enabled; on demand from the API either way). */
  readonly audit: RunningAudit | null;
  /** This node's metrics (fed by the relay's log events whether or not the web service runs). */
  readonly metrics: RelayMetrics;
  /** The configuration running now. */
  readonly config: Config;
  /**
   * Applies a new configuration without dropping an SMTP session (SIGHUP): the receive path reconfigures in place;
   * the deliver path and the ORDB restart only when their own sections changed. Throws and keeps the running
   * configuration when the new one cannot be applied.
   */
  reload(next: Config): Promise<ReloadReport>;
  /** Stops accepting, lets transactions in progress finish (limits.shutdownGrace), then stops everything. */
  close(): Promise<void>;
}

export interface ReloadReport extends ReloadSummary {
  readonly deliveryRestarted: boolean;
  readonly ordbRestarted: boolean;
  readonly webRestarted: boolean;
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Parts of serve tests may replace (the audit's clock and history). */
export interface ServeServices {
  readonly audit?: Omit<AuditServiceDeps, 'metrics' | 'listeners'>;
}

export async function startRelay(config: Config, baseLogger: Logger, options: Omit<AssembleOptions, 'logger'> = {}, services: ServeServices = {}): Promise<RunningRelay> {
  let current = config;
  // Metrics come from the relay's own log events: every part gets the observing logger (web/metrics.ts).
  const metrics = new RelayMetrics(config.node);
  // The decision log is fed from the same tap: the web service sets the recorder while it runs (web-service.ts).
  const decisions: DecisionTap = { recorder: null };
  const logger = observingLogger(baseLogger, (msg, fields) => {
    metrics.observe(msg, fields);
    if (msg === 'relay decision' && decisions.recorder !== null) {
      const d = decisionFromEvent(fields, current.node, Date.now());
      if (d !== null) decisions.recorder.record(d);
    }
  });
  const receive = await assembleReceivePath(config, { ...options, logger });
  metrics.setConnectionSource(() => receive.server.connectionCount);
  // With workers, /metrics (served by worker 0) is the sum over every worker (cluster-metrics.ts).
  if (currentWorkerRole() !== null) clusterWorkerMetrics(metrics);
  const queue = receive.queue;
  let outbound: { stop(): Promise<void> } | null = null;
  let listeners: BoundListener[];
  let ordb: RunningOrdb | null = null;
  let web: RunningWebService | null = null;
  let audit: RunningAudit | null = null;
  let closing: Promise<void> | null = null;
  let draining = false;
  const startWebFor = (c: Config): Promise<RunningWebService | null> => (c.web.enabled ? startWebService(c, receive, metrics, logger, () => draining, decisions, { ordb: () => ordb, audit: () => audit?.service ?? null }) : Promise.resolve(null));
  // The audit tests the listeners as bound (port 0 in tests) and reads the running configuration at each run.
  // Worker 0 only (workerConfig turns audit and web off for the others); on demand through the web service even when
  // the schedule is off.
  const startAuditFor = (c: Config): Promise<RunningAudit | null> => {
    if (!c.audit.enabled && !c.web.enabled) return Promise.resolve(null);
    const proxied = new Set(c.listeners.filter((l) => l.proxyProtocol).map((l) => l.name));
    // A history that cannot be opened costs the audit, never the relay.
    return startAuditService(c, logger, {
      ...services.audit, metrics,
      listeners: () => receive.server.listeners.map((l) => ({ listener: l.name, role: l.role, tls: l.tls, address: l.address, port: l.port, proxyProtocol: proxied.has(l.name) })),
    }).catch((err: unknown) => {
      logger.error('audit unavailable', { err_code: errorCode(err) === 'ERR_INTERNAL' ? 'ERR_AUDIT_HISTORY' : errorCode(err), err: (err as Error).message });
      return null;
    });
  };
  try {
    outbound = config.delivery.enabled ? await startDelivery(config, queue, receive.locality, receive.recipients, logger) : null;
    ordb = config.dnsbl.enabled ? await startOrdb(config, logger) : null;
    listeners = await receive.listen(); // abuse checks start first: a relay may consult its own zone
    web = await startWebFor(config); // after the relay: /health says ok only when the listeners are up
    audit = await startAuditFor(config); // after the listeners: its relay check connects to them
  } catch (err) {
    await audit?.stop();
    await web?.stop();
    await ordb?.stop();
    await outbound?.stop();
    await receive.close({ graceMs: 0 });
    throw err;
  }
  for (const b of listeners) logger.info('listening', { listener: b.name, role: b.role, tls: b.tls, address: b.address, port: b.port });
  let reloading: Promise<ReloadReport> | null = null;
  return {
    get listeners() { return receive.server.listeners; },
    queue,
    receive,
    get ordb() { return ordb; },
    get web() { return web; },
    get audit() { return audit; },
    metrics,
    get config() { return current; },
    reload(next) {
      const run = async (): Promise<ReloadReport> => {
        if (closing) throw new Error('stopping');
        const summary = await receive.reload(next);
        const prev = current;
        current = next;
        const deliveryChanged = !same([next.delivery, next.hostname, next.listeners], [prev.delivery, prev.hostname, prev.listeners]);
        if (deliveryChanged) {
          await outbound?.stop();
          outbound = null;
          outbound = next.delivery.enabled ? await startDelivery(next, queue, receive.locality, receive.recipients, logger) : null;
        }
        const ordbChanged = !same([next.dnsbl, next.hostname], [prev.dnsbl, prev.hostname]);
        if (ordbChanged) {
          await ordb?.stop();
          ordb = null;
          ordb = next.dnsbl.enabled ? await startOrdb(next, logger) : null;
        }
        const webChanged = !same([next.web, next.tls, next.node, next.workers], [prev.web, prev.tls, prev.node, prev.workers]);
        if (webChanged) {
          await web?.stop();
          web = null;
          web = await startWebFor(next);
        }
        if (!same(next, prev)) {
          // The checks read the configuration they were built with: a new one gets a new audit service.
          await audit?.stop();
          audit = null;
          audit = await startAuditFor(next);
        }
        return { ...summary, deliveryRestarted: deliveryChanged, ordbRestarted: ordbChanged, webRestarted: webChanged };
      };
      // One reload at a time; a second SIGHUP waits for the first.
      const p: Promise<ReloadReport> = (reloading ?? Promise.resolve()).catch(() => undefined).then(run);
      reloading = p;
      return p;
    },
    close() {
      closing ??= (async () => {
        await reloading?.catch(() => undefined);
        // /health answers 503 from now on (a balancer takes the node out) while sessions drain; then the web stops.
        draining = true;
        await audit?.stop(); // its tester would talk to listeners that are closing
        await receive.server.close({ drainMs: current.limits.shutdownGrace, graceMs: 5000 });
        await web?.stop();
        await ordb?.stop();
        await outbound?.stop();
        await receive.close();
        logger.info('stopped', {});
      })();
      return closing;
    },
  };
}

/** The deliver path: queue runner, SMTP/Maildir deliverer and DSN bouncer, on the same store as the receiver. */
export async function startDelivery(
  config: Config,
  queue: MailQueue,
  locality: Locality,
  recipients: RecipientResolver,
  logger: Logger,
): Promise<{ stop(): Promise<void> }> {
  const d = config.delivery;
  const resolver = new dnsPromises.Resolver({ timeout: 5000, tries: 2 });
  if (d.dnsServers.length > 0) resolver.setServers([...d.dnsServers]);
  const keys = await Promise.all(d.dkim.map(async (k) => ({ domain: k.domain, selector: k.selector, privateKey: await readFile(k.keyFile, 'utf8') })));
  const lt = d.localTransport;
  const deliverer = new SmtpDeliverer({
    hostname: config.hostname,
    routing: {
      localDomains: [],
      locality,
      localTransport: lt.kind === 'maildir' ? { kind: 'maildir', root: lt.root } : lt.kind === 'discard' ? { kind: 'discard' } : { kind: lt.kind, host: lt.host, port: lt.port },
      smartHost: d.smartHost,
    },
    resolver,
    mxPort: d.mxPort,
    self: config.listeners.filter((l) => l.role === 'mx').map((l) => ({ address: l.address, port: l.port })),
    allowPrivate: d.allowPrivateMx,
    allowLoopback: d.allowLoopbackMx,
    dkim: keys.length > 0 ? new MailauthDkimSigner({ keys, logger }) : null,
    isLocalRecipient: (a) => recipients.isKnown(a),
    logger,
  });
  const bouncer = new DsnBouncer({
    hostname: config.hostname,
    logger,
    rateLimit: { perRecipient: d.bounces.perRecipient, perDomain: d.bounces.perDomain, windowMs: d.bounces.window },
    enqueue: async (env, content) => {
      const m = await queue.beginMessage();
      m.body.end(content);
      await finished(m.body);
      await m.commit({ ...env, clientIp: '127.0.0.1', helo: null, user: null, listener: 'bounce' });
    },
  });
  const runner = new QueueRunner({
    store: queue,
    deliverer,
    bouncer,
    logger,
    retry: { minimalBackoffMs: d.retry.minimalBackoff, maximalBackoffMs: d.retry.maximalBackoff, lifetimeMs: d.retry.lifetime },
  });
  runner.start();
  logger.info('queue runner started', { backend: queue.backend, node: queue.node, local_transport: lt.kind, smart_host: d.smartHost ? `${d.smartHost.host}:${d.smartHost.port}` : null });
  return {
    async stop() {
      await runner.stop();
      await deliverer.close();
    },
  };
}
