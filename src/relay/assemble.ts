/**
 * The assembled receive path: ONE function builds what turns a Config into a listening relay (stores, locality,
 * recipient tables, relay policy, abuse checks in order, AUTH throttle, connection limits, the SMTP server), and
 * `relayguard serve`, the tests' harness and the benchmarks all call it. Field report 1 found the receive path
 * wired twice, with different choices, so every hostile-input suite tested a sibling of the shipped stack; there is
 * no second wiring any more.
 *
 * What callers may still choose (none of it changes a decision): the logger, a ready-made TLS certificate (tests
 * share one instead of generating one per relay), a DNS resolver for the DNSBL checks, the host's own addresses
 * (default: every interface address, the listeners' addresses and loopback), and a refresh interval.
 */
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import { createLocality, type Locality } from '../core/locality.ts';
import type { Config } from '../config/schema.ts';
import type { DnsblResolver } from '../dnsbl/index.ts';
import { AliasStore, parseAliasFile } from '../policy/aliases.ts';
import { AuthThrottle, ConnectionCounter } from '../policy/auth-throttle.ts';
import { LocalRecipients, type AliasTarget } from '../policy/recipients.ts';
import { NetworkList } from '../policy/networks.ts';
import { compileRelayRules } from '../policy/relay-rules.ts';
import { UserStore } from '../policy/users.ts';
import { QueueStore } from '../queue/index.ts';
import type { SessionHandler } from '../smtp/handler.ts';
import { SmtpServer, type BoundListener } from '../smtp/server.ts';
import { ensureCertificate, loadCertificate } from '../smtp/tls-cert.ts';
import { dnsblCheckFromConfig, trustedPredicate, type AbuseCheck, type DnsblCheck } from './abuse.ts';
import { createReceiveHandler } from './receive-handler.ts';

export interface AssembleOptions {
  readonly logger: Logger;
  /** A certificate to use instead of config.tls / the generated one. */
  readonly tlsMaterial?: { readonly cert: string; readonly key: string };
  /** DNS resolver for the DNSBL checks (default: config.dnsblResolver servers). */
  readonly dnsblResolver?: DnsblResolver;
  readonly clock?: Clock;
  /** This host's addresses (default: interfaces + listener addresses; loopback always counts). */
  readonly ownAddresses?: () => Iterable<string>;
  /** How often database domains, interface addresses and alias files are re-read. Default 5 s. */
  readonly refreshMs?: number;
}

export interface ReceivePath {
  readonly config: Config;
  readonly server: SmtpServer;
  readonly handler: SessionHandler;
  readonly queue: QueueStore;
  readonly users: UserStore;
  readonly aliases: AliasStore;
  readonly recipients: LocalRecipients;
  readonly locality: Locality;
  /** Local domains now (config plus database), canonical. */
  readonly localDomains: () => ReadonlySet<string>;
  /** The abuse checks in the order they run. */
  readonly abuseChecks: readonly AbuseCheck[];
  readonly dnsbl: DnsblCheck | null;
  /** Starts the abuse checks' background work, then the listeners. */
  listen(): Promise<BoundListener[]>;
  /** Stops the listeners (421 to sessions after graceMs), the checks and the stores. */
  close(options?: { graceMs?: number }): Promise<void>;
}

/** The path of the embedded database (users, domains, aliases, ORDB) under dataDir. */
export function databasePath(config: Config): string {
  return join(config.dataDir, 'relayguard.db');
}

/** All addresses of this host: interfaces and the listeners' own addresses (wildcards excluded). */
export function hostAddresses(config: Config): string[] {
  const out = new Set<string>(['127.0.0.1', '::1']);
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address);
  for (const l of config.listeners) if (l.address !== '0.0.0.0' && l.address !== '::') out.add(l.address);
  return [...out];
}

interface AliasFileState {
  readonly path: string;
  mtimeMs: number;
  size: number;
  entries: Map<string, AliasTarget[]>;
}

export async function assembleReceivePath(config: Config, options: AssembleOptions): Promise<ReceivePath> {
  const logger = options.logger;
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const tlsMaterial = options.tlsMaterial
    ?? (config.tls.cert && config.tls.key
      ? await loadCertificate(config.tls.cert, config.tls.key)
      : await ensureCertificate({ dir: config.dataDir, hostname: config.hostname, logger }));
  const queue = QueueStore.open({ dataDir: config.dataDir, logger });
  const users = new UserStore(databasePath(config));
  const aliases = new AliasStore(databasePath(config));

  const configured = new Set(config.localDomains);
  let localDomains: ReadonlySet<string> = new Set([...configured, ...users.listDomains()]);
  let own: string[] = options.ownAddresses ? [...options.ownAddresses()] : hostAddresses(config);
  const locality = createLocality({ domains: () => localDomains, ownAddresses: () => own });

  const files: AliasFileState[] = config.recipients.aliasFiles.map((path) => ({ path, mtimeMs: -1, size: -1, entries: new Map() }));
  const loadAliasFiles = (initial: boolean): void => {
    for (const f of files) {
      let st;
      try {
        st = statSync(f.path);
      } catch (err) {
        if (initial || f.mtimeMs !== -2) logger.error('alias file unreadable', { file: f.path, err_code: 'ERR_ALIAS_FILE', err: String(err) });
        f.mtimeMs = -2;
        f.entries = new Map();
        continue;
      }
      if (st.mtimeMs === f.mtimeMs && st.size === f.size) continue;
      f.mtimeMs = st.mtimeMs;
      f.size = st.size;
      const parsed = parseAliasFile(readFileSync(f.path, 'utf8'), {
        allowRemote: config.recipients.allowRemoteAliasTargets,
        isLocal: (d) => locality.isLocal(d),
      });
      for (const p of parsed.problems) logger.error('alias file entry ignored', { file: f.path, line: p.line, err_code: 'ERR_ALIAS_FILE', reason: p.message });
      f.entries = parsed.entries;
      logger.info('alias file loaded', { file: f.path, aliases: parsed.entries.size, problems: parsed.problems.length });
    }
  };
  loadAliasFiles(true);

  const lookupAlias = (key: string): AliasTarget[] | null => {
    const db = aliases.lookup(key);
    if (db !== null) return db;
    for (const f of files) {
      const e = f.entries.get(key);
      if (e) return e;
    }
    if (!key.startsWith('@') && files.length > 0) {
      // A bare "local" key of an alias file: that local part at every local domain.
      const local = key.slice(0, key.lastIndexOf('@'));
      for (const f of files) {
        const e = f.entries.get(local);
        if (e) return e;
      }
    }
    return null;
  };
  const recipients = new LocalRecipients(
    { aliases: lookupAlias, isMailbox: (a) => users.isMailbox(a) },
    {
      postmaster: config.recipients.postmaster,
      abuse: config.recipients.abuse,
      delimiter: config.recipients.delimiter,
      foldCase: config.recipients.foldCase,
      defaultDomain: () => config.localDomains[0] ?? [...localDomains][0] ?? null,
    },
    locality,
  );

  // Domains added with the CLI, interface addresses and alias files take effect within seconds, without a restart.
  const refresh = setInterval(() => {
    try { localDomains = new Set([...configured, ...users.listDomains()]); } catch { /* keep the last good set */ }
    if (!options.ownAddresses) own = hostAddresses(config);
    loadAliasFiles(false);
  }, options.refreshMs ?? 5000);
  refresh.unref();

  const isTrusted = trustedPredicate(config);
  const proxyList = new NetworkList(config.trustedProxies);
  const dnsbl = dnsblCheckFromConfig(config, logger, { ...(options.dnsblResolver ? { resolver: options.dnsblResolver } : {}), ...(options.clock ? { clock: options.clock } : {}) });
  const abuseChecks: AbuseCheck[] = dnsbl ? [dnsbl] : [];
  const l = config.limits;
  const handler = createReceiveHandler({
    hostname: config.hostname,
    queue,
    logger,
    isTrusted,
    locality,
    relayDomains: new Set(config.relayDomains),
    relayRules: compileRelayRules(config.relayRules),
    recipients,
    abuseChecks,
    authenticate: async (u, p) => ((await users.authenticate(u, p)) ? u : null),
    owns: (u, a) => users.owns(u, a),
    throttle: new AuthThrottle({ maxFailures: l.authFailuresPerIp, windowMs: l.authFailureWindow }),
    messageSizeLimit: l.messageSize,
  });
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
    isTrustedProxy: (ip) => proxyList.contains(ip),
    lineEndings: config.smtp.bareLineEndings,
    authRequiresTls: config.smtp.requireTlsForAuth,
    greetDelayMs: config.smtp.greetDelay,
    connectionLimiter: new ConnectionCounter({ perIp: l.connectionsPerIp, total: l.connections }),
  });

  let closing: Promise<void> | null = null;
  return {
    config, server, handler, queue, users, aliases, recipients, locality, abuseChecks, dnsbl,
    localDomains: () => localDomains,
    async listen() {
      for (const c of abuseChecks) await c.start?.();
      return server.listen();
    },
    close(o = {}) {
      closing ??= (async () => {
        clearInterval(refresh);
        await server.close({ graceMs: o.graceMs ?? 5000 });
        for (const c of abuseChecks) c.stop?.();
        await queue.close();
        aliases.close();
        users.close();
      })();
      return closing;
    },
  };
}
