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
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { createLocality, type Locality } from '../core/locality.ts';
import type { Config } from '../config/schema.ts';
import type { DnsblResolver } from '../dnsbl/index.ts';
import { parseAliasFile } from '../policy/aliases.ts';
import { AuthThrottle, ConnectionCounter } from '../policy/auth-throttle.ts';
import type { CounterStore } from '../policy/counters.ts';
import { UserAccounts, type DirectoryStore } from '../policy/directory.ts';
import { SharedAuthThrottle, type AuthGate } from '../policy/shared-auth-throttle.ts';
import { LocalRecipients, type AliasTarget, type RecipientResolver } from '../policy/recipients.ts';
import { NetworkList } from '../policy/networks.ts';
import { compileRelayRules } from '../policy/relay-rules.ts';
import type { MailQueue } from '../queue/index.ts';
import type { SessionHandler } from '../smtp/handler.ts';
import { SmtpServer, type BoundListener, type SmtpServerOptions } from '../smtp/server.ts';
import { ensureCertificate, loadCertificate } from '../smtp/tls-cert.ts';
import { openCounterStore, openDirectoryStore, openQueue, openSqliteCounters } from '../store/index.ts';
import { dnsblCheckFromConfig, trustedPredicate, type AbuseCheck, type DnsblCheck } from './abuse.ts';
import { openDirectoryView, type DirectoryView } from './directory-view.ts';
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
  /** Accept connections but read nothing from them until release() (privileges are dropped in between). */
  readonly held?: boolean;
  /**
   * Where AUTH failures are counted, shared with other processes: e.g. openSqliteCounters(dataDir) for serve's
   * worker processes on one machine. Default: PostgreSQL's when store.postgres is set, else this process's memory.
   * A store given here is not closed by close() (its owner closes it).
   */
  readonly counters?: CounterStore;
  /**
   * Without store.postgres: count AUTH failures in dataDir/counters.db, shared by every process of this machine that
   * sets it (serve's workers), instead of in this process's memory. Opened and closed by the receive path.
   */
  readonly machineCounters?: boolean;
  /** Where the queue lives (a worker's shard, src/cli/queue-shards.ts). Default: dataDir. */
  readonly queueDir?: string;
}

export interface ReloadSummary {
  readonly listeners: readonly BoundListener[];
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly string[];
  readonly certificateReloaded: boolean;
}

export interface ReceivePath {
  /** The configuration running now (a reload replaces it). */
  readonly config: Config;
  readonly server: SmtpServer;
  readonly handler: SessionHandler;
  /** The durable queue the configuration names (store.postgres: the shared PostgreSQL queue; else SQLite in dataDir). */
  readonly queue: MailQueue;
  /**
   * Users, database domains and aliases (SQLite or PostgreSQL, as the config says); writes through it show in the
   * recipient tables at once.
   */
  readonly directory: DirectoryStore;
  /** Passwords over the directory (AUTH, user add). */
  readonly accounts: UserAccounts;
  /** The AUTH failure throttle now (this process's, or shared). */
  readonly throttle: AuthGate;
  readonly recipients: RecipientResolver;
  readonly locality: Locality;
  /** Local domains now (config plus database), canonical. */
  readonly localDomains: () => ReadonlySet<string>;
  /** The abuse checks in the order they run (now). */
  readonly abuseChecks: readonly AbuseCheck[];
  readonly dnsbl: DnsblCheck | null;
  /** Starts the abuse checks' background work, then the listeners. */
  listen(): Promise<BoundListener[]>;
  /** Lets connections held since listen() proceed (with AssembleOptions.held). */
  release(): void;
  /**
   * Applies a new configuration without dropping a session (SIGHUP): listeners, certificate, domains, recipients,
   * relay rules, trusted networks, limits and abuse checks. Throws (and keeps the running configuration) when the
   * new one cannot be applied; a changed dataDir or store needs a restart (ERR_RELOAD_RESTART).
   */
  reload(next: Config): Promise<ReloadSummary>;
  /** Stops the listeners (sessions may finish their transaction for drainMs, then 421 and graceMs), the checks and the stores. */
  close(options?: { graceMs?: number; drainMs?: number }): Promise<void>;
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

export async function assembleReceivePath(initial: Config, options: AssembleOptions): Promise<ReceivePath> {
  const logger = options.logger;
  let config = initial;
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const loadTls = async (c: Config): Promise<{ cert: string; key: string }> => options.tlsMaterial
    ?? (c.tls.cert && c.tls.key
      ? await loadCertificate(c.tls.cert, c.tls.key)
      : await ensureCertificate({ dir: c.dataDir, hostname: c.hostname, logger }));
  let tlsMaterial = await loadTls(config);
  const rawDirectory = await openDirectoryStore({
    sqliteFile: databasePath(config),
    postgres: config.store.postgres,
    logger,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  // Counters: given by the caller (worker processes), PostgreSQL's with store.postgres, else in memory.
  let sharedCounters: CounterStore | null = options.counters ?? null;
  const ownsCounters = options.counters === undefined && (config.store.postgres !== null || options.machineCounters === true);
  let view: DirectoryView;
  try {
    if (ownsCounters) {
      sharedCounters = config.store.postgres !== null
        ? await openCounterStore({ postgres: config.store.postgres, logger })
        : openSqliteCounters(config.dataDir);
    }
    view = await openDirectoryView(rawDirectory, { logger, refreshMs: options.refreshMs ?? 5000 });
  } catch (err) {
    await rawDirectory.close().catch(() => {});
    if (ownsCounters) await sharedCounters?.close().catch(() => {});
    throw err;
  }
  const directory = view.store;
  const accounts = new UserAccounts(directory);
  let queue: MailQueue;
  try {
    queue = await openQueue({ dataDir: options.queueDir ?? config.dataDir, postgres: config.store.postgres, node: config.node, logger });
  } catch (err) {
    view.stop();
    await rawDirectory.close().catch(() => {});
    if (ownsCounters) await sharedCounters?.close().catch(() => {});
    throw err;
  }

  let configured = new Set(config.localDomains);
  // Local domains now: the config's plus the directory's (recomputed when either changes; view.domains() also
  // makes an embedded store's copy current).
  let domainsFrom: [ReadonlySet<string>, ReadonlySet<string>] | null = null;
  let merged: ReadonlySet<string> = configured;
  const localDomainsNow = (): ReadonlySet<string> => {
    const db = view.domains();
    if (domainsFrom === null || domainsFrom[0] !== configured || domainsFrom[1] !== db) {
      merged = new Set([...configured, ...db]);
      domainsFrom = [configured, db];
    }
    return merged;
  };
  let own: string[] = options.ownAddresses ? [...options.ownAddresses()] : hostAddresses(config);
  const locality = createLocality({ domains: localDomainsNow, ownAddresses: () => own });

  let files: AliasFileState[] = [];
  const setAliasFiles = (paths: readonly string[]): void => {
    files = paths.map((path) => ({ path, mtimeMs: -1, size: -1, entries: new Map() }));
  };
  const loadAliasFiles = (initialLoad: boolean): void => {
    for (const f of files) {
      let st;
      try {
        st = statSync(f.path);
      } catch (err) {
        if (initialLoad || f.mtimeMs !== -2) logger.error('alias file unreadable', { file: f.path, err_code: 'ERR_ALIAS_FILE', err: String(err) });
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
  setAliasFiles(config.recipients.aliasFiles);
  loadAliasFiles(true);

  // The database aliases, mailboxes and domains as an in-memory copy (directory-view.ts): the recipient path looks
  // several keys up per RCPT. A change made through this process shows at once; one made by the CLI or another
  // node within seconds (at once on PostgreSQL, LISTEN/NOTIFY).
  const lookupAlias = (key: string): readonly AliasTarget[] | null => {
    const db = view.lookupAlias(key);
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
  const recipientsFor = (c: Config): LocalRecipients => new LocalRecipients(
    { aliases: lookupAlias, isMailbox: (a) => view.isMailbox(a) },
    {
      postmaster: c.recipients.postmaster,
      abuse: c.recipients.abuse,
      delimiter: c.recipients.delimiter,
      foldCase: c.recipients.foldCase,
      defaultDomain: () => c.localDomains[0] ?? [...localDomainsNow()][0] ?? null,
    },
    locality,
  );
  let recipients = recipientsFor(config);
  // One object for the deliver path, which outlives reloads: it always asks the current tables.
  const currentRecipients: RecipientResolver = {
    resolve: (r) => recipients.resolve(r),
    resolveAddress: (l, d) => recipients.resolveAddress(l, d),
    isKnown: (a) => recipients.isKnown(a),
  };

  // Domains added with the CLI, interface addresses and alias files take effect within seconds, without a restart.
  const refresh = setInterval(() => {
    if (!options.ownAddresses) own = hostAddresses(config);
    loadAliasFiles(false);
  }, options.refreshMs ?? 5000);
  refresh.unref();
  // Shared counters: forget clients whose failures all left the window (the in-memory throttle sweeps itself).
  // Every process sweeps; the DELETE is idempotent and uses the index on the newest event.
  const sweep = setInterval(() => {
    sharedCounters?.sweep((options.clock ?? SYSTEM_CLOCK).now() - config.limits.authFailureWindow).catch(() => { /* the next sweep */ });
  }, 60_000);
  sweep.unref();

  interface Parts {
    readonly handler: SessionHandler;
    readonly dnsbl: DnsblCheck | null;
    readonly abuseChecks: AbuseCheck[];
    readonly throttle: AuthGate;
    readonly limiter: ConnectionCounter;
    readonly serverOptions: SmtpServerOptions;
  }
  const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  /** The policy parts for a config; `prev` parts are kept where their settings did not change (their state too). */
  const build = (c: Config, prev: Parts | null): Parts => {
    const isTrusted = trustedPredicate(c);
    const proxyList = new NetworkList(c.trustedProxies);
    const dnsblSame = prev !== null && sameJson([c.dnsblChecks, c.dnsblThreshold, c.dnsblResolver, c.trustedNetworks], [config.dnsblChecks, config.dnsblThreshold, config.dnsblResolver, config.trustedNetworks]);
    const dnsbl = dnsblSame ? prev.dnsbl : dnsblCheckFromConfig(c, logger, { ...(options.dnsblResolver ? { resolver: options.dnsblResolver } : {}), ...(options.clock ? { clock: options.clock } : {}) });
    const abuseChecks: AbuseCheck[] = dnsbl ? [dnsbl] : [];
    const l = c.limits;
    const throttle = prev !== null && l.authFailuresPerIp === config.limits.authFailuresPerIp && l.authFailureWindow === config.limits.authFailureWindow
      ? prev.throttle
      : sharedCounters !== null
        ? new SharedAuthThrottle({ store: sharedCounters, maxFailures: l.authFailuresPerIp, windowMs: l.authFailureWindow, ...(options.clock ? { clock: options.clock } : {}) })
        : new AuthThrottle({ maxFailures: l.authFailuresPerIp, windowMs: l.authFailureWindow });
    const limiter = prev !== null && l.connectionsPerIp === config.limits.connectionsPerIp && l.connections === config.limits.connections
      ? prev.limiter
      : new ConnectionCounter({ perIp: l.connectionsPerIp, total: l.connections });
    const handler = createReceiveHandler({
      hostname: c.hostname,
      queue,
      logger,
      isTrusted,
      locality,
      relayDomains: new Set(c.relayDomains),
      relayRules: compileRelayRules(c.relayRules),
      recipients,
      abuseChecks,
      authenticate: async (u, p) => ((await accounts.authenticate(u, p)) ? u : null),
      owns: (u, a) => directory.owns(u, a),
      throttle,
      messageSizeLimit: l.messageSize,
    });
    const serverOptions: SmtpServerOptions = {
      hostname: c.hostname,
      listeners: c.listeners,
      handler,
      logger,
      limits: {
        messageSize: l.messageSize, recipients: l.recipients, errors: l.errors, idleTimeoutMs: l.idleTimeout, dataTimeoutMs: l.dataTimeout,
        sessionTimeoutMs: l.sessionTimeout, hopCount: l.hopCount, commandLineLength: l.commandLineLength,
        connections: l.connections, connectionsPerIp: l.connectionsPerIp, proxyTimeoutMs: l.proxyTimeout,
      },
      tls: { cert: tlsMaterial.cert, key: tlsMaterial.key, minVersion: c.tls.minVersion },
      isTrustedProxy: (ip) => proxyList.contains(ip),
      lineEndings: c.smtp.bareLineEndings,
      authRequiresTls: c.smtp.requireTlsForAuth,
      greetDelayMs: c.smtp.greetDelay,
      connectionLimiter: limiter,
      held: options.held ?? false,
    };
    return { handler, dnsbl, abuseChecks, throttle, limiter, serverOptions };
  };

  let parts = build(config, null);
  const server = new SmtpServer(parts.serverOptions);
  let started = false;
  let closing: Promise<void> | null = null;
  return {
    get config() { return config; },
    server,
    get handler() { return parts.handler; },
    queue, directory, accounts,
    get throttle() { return parts.throttle; },
    recipients: currentRecipients,
    locality,
    get abuseChecks() { return parts.abuseChecks; },
    get dnsbl() { return parts.dnsbl; },
    localDomains: localDomainsNow,
    async listen() {
      for (const c of parts.abuseChecks) await c.start?.();
      started = true;
      return server.listen();
    },
    release() {
      server.release();
    },
    async reload(next) {
      if (next.dataDir !== config.dataDir) {
        throw new RelayguardError('ERR_RELOAD_RESTART', `dataDir changed (${config.dataDir} -> ${next.dataDir}): restart relayguard to apply it`);
      }
      if (!sameJson(next.store, config.store)) {
        throw new RelayguardError('ERR_RELOAD_RESTART', 'store changed: restart relayguard to apply it');
      }
      const oldTls = tlsMaterial;
      const newTls = await loadTls(next);
      const certificateReloaded = newTls.cert !== oldTls.cert || newTls.key !== oldTls.key;
      tlsMaterial = newTls;
      const oldConfig = config;
      const oldRecipients = recipients;
      let nextParts: Parts;
      try {
        recipients = recipientsFor(next);
        nextParts = build(next, parts);
        if (started) for (const c of nextParts.abuseChecks) if (!parts.abuseChecks.includes(c)) await c.start?.();
        const r = await server.reconfigure(nextParts.serverOptions);
        for (const c of parts.abuseChecks) if (!nextParts.abuseChecks.includes(c)) c.stop?.();
        parts = nextParts;
        config = next;
        configured = new Set(next.localDomains);
        if (!options.ownAddresses) own = hostAddresses(next);
        if (!sameJson(next.recipients, oldConfig.recipients)) {
          setAliasFiles(next.recipients.aliasFiles);
          loadAliasFiles(true);
        }
        return { listeners: r.listeners, added: r.added, removed: r.removed, changed: r.changed, certificateReloaded };
      } catch (err) {
        tlsMaterial = oldTls;
        recipients = oldRecipients;
        throw err;
      }
    },
    close(o = {}) {
      closing ??= (async () => {
        clearInterval(refresh);
        clearInterval(sweep);
        await server.close({ graceMs: o.graceMs ?? 5000, ...(o.drainMs !== undefined ? { drainMs: o.drainMs } : {}) });
        for (const c of parts.abuseChecks) c.stop?.();
        await queue.close();
        view.stop();
        await rawDirectory.close();
        if (ownsCounters) await sharedCounters?.close();
      })();
      return closing;
    },
  };
}
