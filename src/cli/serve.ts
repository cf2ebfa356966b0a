/**
 * `relayguard serve`: the composition root of the running relay. Builds every part from the Config and starts
 * the listeners. The returned handle stops everything in order (listeners with 421, then the queue).
 */
import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { promises as dnsPromises } from 'node:dns';
import { finished } from 'node:stream/promises';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import { SmtpServer, type BoundListener } from '../smtp/server.ts';
import { ensureCertificate, loadCertificate } from '../smtp/tls-cert.ts';
import { QueueStore, QueueRunner } from '../queue/index.ts';
import { SmtpDeliverer, DsnBouncer, MailauthDkimSigner } from '../delivery/index.ts';
import { UserStore } from '../policy/users.ts';
import { AuthThrottle, ConnectionCounter } from '../policy/auth-throttle.ts';
import { NetworkList } from '../policy/networks.ts';
import { compileRelayRules } from '../policy/relay-rules.ts';
import { createReceiveHandler } from './receive-handler.ts';
import { dnsblGateFromConfig, startOrdb, type RunningOrdb } from './ordb-service.ts';

export interface RunningRelay {
  readonly listeners: readonly BoundListener[];
  readonly queue: QueueStore;
  /** The ORDB service (DNS zone, listings, test scheduler), when dnsbl.enabled. */
  readonly ordb: RunningOrdb | null;
  close(): Promise<void>;
}

/** The path of the embedded database (users, domains) under dataDir. */
export function databasePath(config: Config): string {
  return join(config.dataDir, 'relayguard.db');
}

/** All addresses of this host, so "[ip]" literals naming one of them count as local. */
function ownAddresses(config: Config): Set<string> {
  const out = new Set<string>(['127.0.0.1', '::1']);
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  for (const l of config.listeners) if (l.address !== '0.0.0.0' && l.address !== '::') out.add(l.address);
  return out;
}

export async function startRelay(config: Config, logger: Logger): Promise<RunningRelay> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o750 });
  const tlsMaterial = config.tls.cert && config.tls.key
    ? await loadCertificate(config.tls.cert, config.tls.key)
    : await ensureCertificate({ dir: config.dataDir, hostname: config.hostname, logger });
  const queue = QueueStore.open({ dataDir: config.dataDir, logger });
  const users = new UserStore(databasePath(config));
  const configured = new Set(config.localDomains);
  let localDomains: ReadonlySet<string> = new Set([...configured, ...users.listDomains()]);
  // Domains added with the CLI while the relay runs take effect within seconds, without a restart.
  const refresh = setInterval(() => {
    try { localDomains = new Set([...configured, ...users.listDomains()]); } catch { /* keep the last good set */ }
  }, 5000);
  refresh.unref();
  const trusted = new NetworkList(config.trustedNetworks);
  const proxies = new NetworkList(config.trustedProxies);
  // DNSBL checks of incoming clients (dnsblChecks): looked up at connect, decided at RCPT.
  const dnsblGate = dnsblGateFromConfig(config, logger);
  const receive = createReceiveHandler({
    hostname: config.hostname,
    queue,
    logger,
    isTrusted: (ip) => trusted.contains(ip),
    localDomains: () => localDomains,
    relayDomains: new Set(config.relayDomains),
    relayRules: compileRelayRules(config.relayRules),
    localAddresses: ownAddresses(config),
    authenticate: async (u, p) => ((await users.authenticate(u, p)) ? u : null),
    owns: (u, a) => users.owns(u, a),
    throttle: new AuthThrottle({ maxFailures: config.limits.authFailuresPerIp, windowMs: config.limits.authFailureWindow }),
    messageSizeLimit: config.limits.messageSize,
  });
  const handler = dnsblGate ? dnsblGate.wrap(receive) : receive;
  const l = config.limits;
  const server = new SmtpServer({
    hostname: config.hostname,
    listeners: config.listeners,
    handler,
    logger,
    limits: {
      messageSize: l.messageSize, recipients: l.recipients, errors: l.errors, idleTimeoutMs: l.idleTimeout, dataTimeoutMs: l.dataTimeout,
      sessionTimeoutMs: l.sessionTimeout, hopCount: l.hopCount, commandLineLength: l.commandLineLength,
      connections: l.connections, connectionsPerIp: l.connectionsPerIp, proxyTimeoutMs: l.proxyTimeout,
    },
    tls: { cert: tlsMaterial.cert, key: tlsMaterial.key, minVersion: config.tls.minVersion },
    isTrustedProxy: (ip) => proxies.contains(ip),
    lineEndings: config.smtp.bareLineEndings,
    authRequiresTls: config.smtp.requireTlsForAuth,
    greetDelayMs: config.smtp.greetDelay,
    connectionLimiter: new ConnectionCounter({ perIp: l.connectionsPerIp, total: l.connections }),
  });
  const outbound = config.delivery.enabled ? await startDelivery(config, queue, () => localDomains, logger) : null;
  let listeners: BoundListener[];
  let ordb: RunningOrdb | null = null;
  try {
    ordb = config.dnsbl.enabled ? await startOrdb(config, logger) : null;
    await dnsblGate?.start(); // after the ORDB: a relay may consult its own zone
    listeners = await server.listen();
  } catch (err) {
    dnsblGate?.stop();
    await ordb?.stop();
    await outbound?.stop();
    clearInterval(refresh);
    await server.close({ graceMs: 0 });
    await queue.close();
    users.close();
    throw err;
  }
  for (const b of listeners) logger.info('listening', { listener: b.name, role: b.role, tls: b.tls, address: b.address, port: b.port });
  let closing: Promise<void> | null = null;
  return {
    listeners,
    queue,
    ordb,
    close() {
      closing ??= (async () => {
        clearInterval(refresh);
        await server.close({ graceMs: 5000 });
        dnsblGate?.stop();
        await ordb?.stop();
        await outbound?.stop();
        await queue.close();
        users.close();
        logger.info('stopped', {});
      })();
      return closing;
    },
  };
}

/** The deliver path: queue runner, SMTP/Maildir deliverer and DSN bouncer, on the same store as the receiver. */
async function startDelivery(
  config: Config,
  queue: QueueStore,
  localDomains: () => ReadonlySet<string>,
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
      localDomains,
      localTransport: lt.kind === 'maildir' ? { kind: 'maildir', root: lt.root } : lt.kind === 'discard' ? { kind: 'discard' } : { kind: lt.kind, host: lt.host, port: lt.port },
      smartHost: d.smartHost,
    },
    resolver,
    mxPort: d.mxPort,
    self: config.listeners.filter((l) => l.role === 'mx').map((l) => ({ address: l.address, port: l.port })),
    allowPrivate: d.allowPrivateMx,
    allowLoopback: d.allowLoopbackMx,
    dkim: keys.length > 0 ? new MailauthDkimSigner({ keys, logger }) : null,
    logger,
  });
  const bouncer = new DsnBouncer({
    hostname: config.hostname,
    logger,
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
  logger.info('queue runner started', { local_transport: lt.kind, smart_host: d.smartHost ? `${d.smartHost.host}:${d.smartHost.port}` : null });
  return {
    async stop() {
      await runner.stop();
      await deliverer.close();
    },
  };
}
