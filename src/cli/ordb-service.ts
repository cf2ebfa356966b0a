/**
 * The ORDB inside `relayguard serve`. (The relay's DNSBL consumer is an abuse check of the assembled receive path:
 * src/relay/abuse.ts.)
 *
 *   startOrdb(config, logger, deps)   opens the listing store (dataDir/relayguard.db, shared with the users), serves
 *                                     the zone on dnsbl.listen (UDP+TCP, AXFR, NOTIFY), rebuilds the zone whenever
 *                                     the store's serial moves (the workflow's changes at once; the CLI's, made from
 *                                     another process, within zonePollMs), and runs a tester worker (pending
 *                                     submissions and due retests become jobs in the store; the worker takes them
 *                                     with leases, like every `relayguard dnsbl worker`), polling every
 *                                     schedulerIntervalMs.
 *   createTestHost(settings, logger)  the tester the workflow gets: the smtp check is src/tester in proof mode with a
 *                                     built-in sink when dnsbl.probeDomain is set, else safe mode (which never lists
 *                                     a relay); the proxy check is the open-proxy battery against dnsbl.proxyPorts
 *                                     with its own sink (dnsbl.proxySink, started at the first proxy test), proved
 *                                     by arrival in either mode; the nntp check is the open-Usenet check on
 *                                     dnsbl.nntpPorts, posting (and reading back, then cancelling) a test article
 *                                     only when dnsbl.nntpGroup names a test group, else safe (never lists).
 *
 * Configuration keys this reads that the schema may not have yet are read defensively with the defaults below
 * (OrdbSettings / GateSettings), so adding them to src/config/schema.ts is all that is needed to expose them.
 */
import { mkdirSync } from 'node:fs';
import { promises as dnsPromises } from 'node:dns';
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import {
  DnsblClient, DnsblServer, JobQueue, ListingStore, OrdbWorker, OrdbWorkflow, tsigKey, ZoneJournal, zoneFromStore,
  type DnsblResolver, type DnsblZoneLookup, type HostTestResult, type HostTester, type NntpEvidence, type ProxyEvidence, type TestOutcome, type ZoneHealth, type ZoneOptions,
} from '../dnsbl/index.ts';
import { evaluateDnsbl, type DnsblDecision } from '../policy/dnsbl-check.ts';
import { NetworkList } from '../policy/networks.ts';
import type { SessionHandler } from '../smtp/handler.ts';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import { ProbeSink, parsePortSpec, runTester, type PortSpec } from '../tester/index.ts';
import { ProxySink, type ProxyTargetResult, type ProxyTimeouts } from '../tester/proxy/index.ts';
import { combineRun, parseNntpPortSpec, runNntp, type NntpPortSpec, type NntpTargetResult } from '../tester/nntp/index.ts';

const MIN = 60_000;

export interface OrdbSettings {
  readonly zone: string;
  readonly listen: { readonly address: string; readonly port: number };
  /** SQLite file of the listings. Default dataDir/relayguard.db. */
  readonly databasePath: string;
  /** TTL of listing answers, seconds. Default 2100 (rbldnsd's 35 min). */
  readonly ttlSeconds: number;
  /** Evidence page in the TXT ("$" = the address), or null for none. */
  readonly evidenceUrl: string | null;
  /** Networks allowed to AXFR the zone; secondaries to NOTIFY. */
  readonly axfrAllow: readonly string[];
  readonly notify: readonly { readonly address: string; readonly port: number; readonly key?: string | null }[];
  /** Proof mode when set: probes go to this domain, whose MX must reach the sink. */
  readonly probeDomain: string | null;
  readonly sink: { readonly address: string; readonly port: number };
  readonly probeWaitMs: number;
  readonly testPorts: readonly PortSpec[];
  /** The open-proxy check's sink listener, the address proxies are asked to reach (null: the sink's), its ports. */
  readonly proxySink: { readonly address: string; readonly port: number };
  readonly proxyProbeAddress: string | null;
  readonly proxyPorts: readonly number[];
  /** The nntp check's ports, and its test group (null: safe, nothing posted, never listed). */
  readonly nntpPorts: readonly NntpPortSpec[];
  readonly nntpGroup: string | null;
  /** The tester's source address, or null for the system's choice. */
  readonly sourceAddress: string | null;
  /** Per-address time budget of a test. */
  readonly testBudgetMs: number;
  readonly retestIntervalMs: number;
  readonly retryIntervalMs: number;
  readonly submissionsPerHour: number;
  /** Never tested, never listed (also written to the store as exclusions at start). */
  readonly excluded: readonly string[];
  /** Test loopback/private/reserved addresses (labs, tests). */
  readonly allowPrivateTargets: boolean;
  readonly schedulerIntervalMs: number;
  readonly zonePollMs: number;
  readonly testConcurrency: number;
  /** Lease of a test job (renewed every third of it while the test runs). */
  readonly jobLeaseMs: number;
}

/**
 * The zone's apex records from the configuration (field report L10/D2): the NS set (dnsbl.nameservers, else
 * `hostname`), glue for name servers inside the zone, and the SOA contact and timers. The serial comes from the
 * listing store.
 */
export function zoneApexOptions(config: Config): Pick<ZoneOptions, 'ns' | 'hosts' | 'soa'> {
  const d = config.dnsbl;
  const zone = d.zone.toLowerCase();
  const inZone = (name: string): boolean => name === zone || name.endsWith(`.${zone}`);
  const unspecified = d.listen.address === '0.0.0.0' || d.listen.address === '::';
  const servers = d.nameservers.length > 0
    ? d.nameservers
    : [{ name: config.hostname.toLowerCase(), addresses: inZone(config.hostname.toLowerCase()) && !unspecified ? [d.listen.address] : [] }];
  const hosts = servers.filter((n) => inZone(n.name) && n.addresses.length > 0).map((n) => ({ name: n.name, addresses: [...n.addresses] }));
  const seconds = (ms: number): number => Math.max(0, Math.round(ms / 1000));
  return {
    ns: servers.map((n) => n.name),
    hosts,
    soa: {
      mname: servers[0]!.name,
      ...(d.soa.contact !== null ? { rname: d.soa.contact.replace('@', '.').toLowerCase() } : {}),
      refresh: seconds(d.soa.refresh),
      retry: seconds(d.soa.retry),
      expire: seconds(d.soa.expire),
      minimum: seconds(d.soa.minimum),
    },
  };
}

/** The ORDB database: the embedded database under dataDir (tables are prefixed dnsbl_). */
export function ordbDatabasePath(config: Config): string {
  return join(config.dataDir, 'relayguard.db');
}

export function ordbSettings(config: Config, overrides: Partial<OrdbSettings> = {}): OrdbSettings {
  const d = config.dnsbl;
  return {
    zone: d.zone,
    listen: { ...d.listen },
    databasePath: ordbDatabasePath(config),
    ttlSeconds: Math.max(0, Math.round(d.ttl / 1000)),
    evidenceUrl: d.evidenceUrl,
    axfrAllow: d.axfrAllow,
    notify: d.notify,
    probeDomain: d.probeDomain,
    sink: d.sink,
    probeWaitMs: d.probeWait,
    testPorts: d.testPorts.map((p) => parsePortSpec(String(p))),
    proxySink: { ...d.proxySink },
    proxyProbeAddress: d.proxyProbeAddress,
    proxyPorts: [...d.proxyPorts],
    nntpPorts: d.nntpPorts.map((p) => parseNntpPortSpec(String(p))),
    nntpGroup: d.nntpGroup,
    sourceAddress: d.sourceAddress,
    testBudgetMs: d.testBudget,
    retestIntervalMs: d.retestInterval,
    retryIntervalMs: d.retryInterval,
    submissionsPerHour: d.submissionsPerHour,
    excluded: d.excluded,
    allowPrivateTargets: d.allowPrivateTargets,
    schedulerIntervalMs: d.schedulerInterval,
    zonePollMs: 2000,
    testConcurrency: d.testConcurrency,
    jobLeaseMs: d.jobLease,
    ...overrides,
  };
}

export interface TestHost {
  readonly test: HostTester;
  /** Proof mode is available (a probe domain and a running sink). */
  readonly prove: boolean;
  readonly sink: ProbeSink | null;
  close(): Promise<void>;
}

export interface TestHostSettings {
  readonly probeDomain: string | null;
  readonly sink: { readonly address: string; readonly port: number };
  readonly probeWaitMs: number;
  readonly testPorts: readonly PortSpec[];
  readonly sourceAddress: string | null;
  readonly testBudgetMs: number;
  /** Reply timeouts (tests shorten them). */
  readonly timeouts?: { readonly connect: number; readonly greeting: number; readonly command: number } | undefined;
  /** The proxy check (absent: loopback sink on a free port, the sink's address, the common proxy ports). */
  readonly proxySink?: { readonly address: string; readonly port: number } | undefined;
  readonly proxyProbeAddress?: string | null | undefined;
  readonly proxyPorts?: readonly number[] | undefined;
  /** The proxy battery's timeouts (tests shorten them). */
  readonly proxyTimeouts?: Partial<ProxyTimeouts> | undefined;
  /** The nntp check (absent: 119 and 563, safe). How long to try reading the test article back, ms (default 15 s). */
  readonly nntpPorts?: readonly NntpPortSpec[] | undefined;
  readonly nntpGroup?: string | null | undefined;
  readonly nntpReadBackMs?: number | undefined;
}

/** The evidence of a proved open Usenet server: the first port whose test article read back. */
export function nntpEvidence(t: NntpTargetResult): NntpEvidence | undefined {
  for (const p of t.ports) {
    const proof = p.proofs.find((x) => x.articleReadBack);
    if (p.verdict !== 'OPEN' || proof === undefined) continue;
    const line = (r: { code: number; text: string } | null): string | null => (r ? `${r.code} ${r.text}`.trim() : null);
    return {
      testedAddress: t.address, port: p.port, path: proof.path, group: proof.group, messageId: proof.messageId,
      command: line(proof.command), posted: line(proof.posted),
      readBack: [proof.articleReadBack ? 'ARTICLE' : null, proof.headReadBack ? 'HEAD' : null, proof.inGroup ? 'GROUP/STAT' : null].filter((x): x is string => x !== null),
      pathHeader: proof.pathHeader, injectionInfo: proof.injectionInfo, cancelled: proof.cancel?.removed === true,
    };
  }
  return undefined;
}

const DEFAULT_ORDB_PROXY_PORTS: readonly number[] = [80, 81, 1080, 3128, 8000, 8080, 8081, 8888, 23];

function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip.toLowerCase().startsWith('::ffff:127.');
}

/** The evidence of a proved open proxy: the first attempt that reached the sink (mail port first). */
export function proxyEvidence(t: ProxyTargetResult): ProxyEvidence | undefined {
  const open = t.ports.flatMap((p) => p.attempts.filter((a) => a.verdict === 'OPEN' && a.proof?.arrived === true).map((a) => ({ port: p.port, a })));
  const first = open.find((o) => o.a.proof?.sinkKind === 'mail') ?? open[0];
  if (first === undefined) return undefined;
  const { port, a } = first;
  return {
    testedAddress: t.address,
    egressAddress: a.proof?.egressAddress ?? null,
    port,
    method: a.method,
    title: a.title,
    destination: a.destination ? `${a.destination.host.includes(':') ? `[${a.destination.host}]` : a.destination.host}:${a.destination.port}` : null,
    reply: a.reply,
    sinkLine: a.proof?.sinkLine ?? null,
    attempt: a.id,
    openAttempts: open.slice(0, 32).map((o) => `${o.port} ${o.a.id} ${o.a.method}`),
  };
}

/**
 * The tester as the workflow sees it. A target whose every port refused the connection comes back INCONCLUSIVE
 * ("unreachable"), never CLOSED: a relay must not get delisted by firewalling the tester.
 */
export async function createTestHost(settings: TestHostSettings, logger: Logger): Promise<TestHost> {
  let sink: ProbeSink | null = null;
  if (settings.probeDomain !== null) {
    const cert = await generateSelfSigned(settings.probeDomain);
    sink = await ProbeSink.start({
      address: settings.sink.address, port: settings.sink.port, probeDomain: settings.probeDomain,
      hostname: `sink.${settings.probeDomain}`, tls: cert,
    });
    logger.info('dnsbl probe sink listening', { address: sink.address, port: sink.port, probe_domain: settings.probeDomain });
  }
  // The proxy check's sink: started at the first proxy test (most instances never test a proxy), kept till close().
  let proxySink: Promise<ProxySink> | null = null;
  const proxySinkNow = (): Promise<ProxySink> => {
    proxySink ??= (async () => {
      const at = settings.proxySink ?? { address: '127.0.0.1', port: 0 };
      const ps = await ProxySink.start({ listen: [{ address: at.address, port: at.port, kind: 'mail' }, { address: at.address, port: 0, kind: 'control' }] });
      logger.info('dnsbl proxy sink listening', { address: ps.listeners[0]?.address, port: ps.listeners[0]?.port, probe_address: settings.proxyProbeAddress ?? null });
      return ps;
    })();
    proxySink.catch(() => { proxySink = null; }); // a failed start is tried again at the next test
    return proxySink;
  };
  const testProxy = async (ip: string, signal: AbortSignal): Promise<HostTestResult> => {
    let ps: ProxySink;
    try {
      ps = await proxySinkNow();
    } catch (err) {
      return { verdict: 'INCONCLUSIVE', proved: false, check: 'proxy', reason: 'error', detail: `the proxy sink did not start (dnsbl.proxySink): ${(err as Error).message}`, mode: 'safe', report: null };
    }
    const mail4 = ps.listener(4, 'mail');
    const v4 = settings.proxyProbeAddress ?? (mail4 && mail4.address !== '0.0.0.0' ? mail4.address : null);
    // A remote proxy asked for a loopback address would connect to itself (and prove nothing).
    if (v4 === null || (isLoopback(v4) && !isLoopback(ip))) {
      return {
        verdict: 'INCONCLUSIVE', proved: false, check: 'proxy', reason: 'no-probe-address', mode: 'safe', report: null,
        detail: v4 === null
          ? 'no address for the proxies to reach the sink: set dnsbl.proxyProbeAddress'
          : `the proxy sink's address ${v4} is loopback: a remote proxy would reach itself; set dnsbl.proxyProbeAddress (and dnsbl.proxySink) to a public address`,
      };
    }
    const run = await runTester([ip], {
      checks: ['proxy'],
      ports: settings.testPorts,
      testerDomain: settings.probeDomain ?? 'example.net',
      ...(settings.sourceAddress !== null ? { sourceAddress: settings.sourceAddress } : {}),
      proxy: {
        ports: settings.proxyPorts ?? DEFAULT_ORDB_PROXY_PORTS, sink: ps, probeAddresses: { v4 }, budgetMs: settings.testBudgetMs,
        ...(settings.proxyTimeouts ? { timeouts: settings.proxyTimeouts } : {}),
      },
      signal,
      resolve: { mx: false },
    });
    const t = run.proxies[0];
    if (t === undefined) {
      return { verdict: 'INCONCLUSIVE', proved: false, check: 'proxy', reason: 'error', detail: run.errors.map((e) => e.error).join('; ') || 'not tested', mode: run.mode, report: run };
    }
    // No proxy port answering is not "closed": the host may be down or firewalling the tester.
    const unreachable = t.reason === 'no-service';
    const proved = t.verdict === 'OPEN' && t.reason === 'proved';
    const ev = proved ? proxyEvidence(t) : undefined;
    const egress = ev?.egressAddress ?? t.egress[0];
    return {
      verdict: unreachable ? 'INCONCLUSIVE' : t.verdict,
      proved,
      check: 'proxy',
      reason: unreachable ? 'unreachable' : t.reason,
      detail: t.detail,
      mode: run.mode,
      ...(egress !== undefined ? { egressAddress: egress } : {}),
      ...(ev ? { proxy: ev } : {}),
      report: run,
    };
  };
  const testNntp = async (ip: string, signal: AbortSignal): Promise<HostTestResult> => {
    const group = settings.nntpGroup ?? null;
    const started = Date.now();
    const startedAt = new Date().toISOString();
    const testerDomain = settings.probeDomain ?? 'example.net';
    const run = await runNntp([ip], {
      ports: settings.nntpPorts ?? [{ port: 119, role: 'nntp' }, { port: 563, role: 'nntps' }],
      testerDomain, budgetMs: settings.testBudgetMs, transcript: true, signal,
      ...(settings.timeouts ? { timeouts: settings.timeouts } : {}),
      ...(settings.sourceAddress !== null ? { sourceAddress: settings.sourceAddress } : {}),
      ...(group !== null ? { prove: { group, ...(settings.nntpReadBackMs !== undefined ? { waitMs: settings.nntpReadBackMs } : {}) } } : {}),
    });
    const mode = group !== null ? 'prove' as const : 'safe' as const;
    const report = combineRun(null, run, { checks: ['nntp'], testerDomain, startedAt, durationMs: Date.now() - started, mode });
    const t = run.section.targets[0];
    if (t === undefined) {
      return { verdict: 'INCONCLUSIVE', proved: false, check: 'nntp', reason: 'error', detail: run.errors.map((e) => e.error).join('; ') || 'not tested', mode, report };
    }
    const unreachable = t.ports.length > 0 && t.ports.every((p) => p.reason === 'no-service');
    // Only an article read back proves an open server: a 340 to POST in safe mode is "accepted, not proved".
    const ev = t.verdict === 'OPEN' ? nntpEvidence(t) : undefined;
    return {
      verdict: unreachable ? 'INCONCLUSIVE' : t.verdict,
      proved: ev !== undefined,
      check: 'nntp',
      reason: unreachable ? 'unreachable' : t.reason,
      detail: t.detail,
      mode,
      ...(ev ? { nntp: ev } : {}),
      report,
    };
  };
  const test: HostTester = async (ip, { prove, signal, check }) => {
    if (check === 'proxy') return testProxy(ip, signal);
    if (check === 'nntp') return testNntp(ip, signal);
    const proving = prove && sink !== null;
    const run = await runTester([ip], {
      ports: settings.testPorts,
      testerDomain: proving ? settings.probeDomain! : 'example.net',
      ...(settings.sourceAddress !== null ? { sourceAddress: settings.sourceAddress } : {}),
      ...(proving ? { proof: { collector: sink!, waitMs: settings.probeWaitMs } } : {}),
      ...(settings.timeouts ? { timeouts: settings.timeouts } : {}),
      // The dialogue is part of the published evidence (the public lookup page shows it).
      transcript: true,
      budgetMs: settings.testBudgetMs,
      signal,
      resolve: { mx: false },
    });
    const t = run.targets[0];
    if (t === undefined) {
      return { verdict: 'INCONCLUSIVE', proved: false, reason: 'error', detail: run.errors.map((e) => e.error).join('; ') || 'not tested', mode: run.mode, report: run };
    }
    const unreachable = t.ports.length > 0 && t.ports.every((p) => p.reason === 'no-service');
    const result: HostTestResult = {
      verdict: unreachable ? 'INCONCLUSIVE' : t.verdict,
      proved: t.verdict === 'OPEN' && t.reason === 'proved',
      reason: unreachable ? 'unreachable' : t.reason,
      detail: t.detail,
      mode: run.mode,
      check: 'smtp',
      report: run,
    };
    return result;
  };
  const close = async (): Promise<void> => {
    await sink?.close();
    const ps = proxySink;
    proxySink = null;
    if (ps) await (await ps.catch(() => null))?.close();
  };
  return { test, prove: sink !== null, sink, close };
}

export interface OrdbDeps {
  /** The tester; default createTestHost(settings) (with a sink when dnsbl.probeDomain is set). */
  readonly testHost?: HostTester | undefined;
  /** With testHost: whether it runs in proof mode. Default: settings.probeDomain is set. */
  readonly prove?: boolean | undefined;
  readonly clock?: Clock | undefined;
  readonly settings?: Partial<OrdbSettings> | undefined;
}

export interface RunningOrdb {
  readonly store: ListingStore;
  readonly workflow: OrdbWorkflow;
  readonly jobs: JobQueue;
  readonly worker: OrdbWorker;
  readonly server: DnsblServer;
  readonly settings: OrdbSettings;
  /** Rebuilds the zone when the store's serial moved; true when it did. */
  rebuild(): boolean;
  /** Runs the due work now through the worker (queues the due tests as jobs, runs what it can claim). */
  runDue(): Promise<TestOutcome[]>;
  stop(): Promise<void>;
}

export async function startOrdb(config: Config, logger: Logger, deps: OrdbDeps = {}): Promise<RunningOrdb> {
  const settings = ordbSettings(config, deps.settings);
  const log = logger.child({ component: 'dnsbl' });
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const store = ListingStore.open(settings.databasePath, deps.clock ? { clock: deps.clock } : {});
  let tester: TestHost | null = null;
  let server: DnsblServer | null = null;
  try {
    for (const net of settings.excluded) {
      if (store.get(net)?.state !== 'excluded') store.exclude(net, { detail: 'excluded by the configuration (dnsbl.excluded)' });
    }
    const zoneOptions: ZoneOptions & { evidenceUrl: string | null } = {
      apex: settings.zone, ttl: settings.ttlSeconds, evidenceUrl: settings.evidenceUrl, ...zoneApexOptions(config),
    };
    let serial = store.serial();
    const journal = new ZoneJournal(store);
    server = new DnsblServer({
      zone: zoneFromStore(store, zoneOptions),
      journal,
      address: settings.listen.address,
      port: settings.listen.port,
      axfrAllow: settings.axfrAllow,
      notify: settings.notify.map((n) => ({ address: n.address, port: n.port, ...(n.key ? { key: n.key } : {}) })),
      tsigKeys: config.dnsbl.tsigKeys.map((k) => tsigKey(k.name, k.algorithm, k.secret)),
      ...(config.dnsbl.transferRequiresTsig !== null ? { xfrRequireTsig: config.dnsbl.transferRequiresTsig } : {}),
      udpThreads: config.dnsbl.udpThreads,
      maxTcpConnections: config.dnsbl.tcp.maxConnections,
      maxTcpConnectionsPerClient: config.dnsbl.tcp.maxConnectionsPerClient,
      tcpIdleTimeoutMs: config.dnsbl.tcp.idleTimeout,
      tcpSessionTimeoutMs: config.dnsbl.tcp.sessionTimeout,
      logger: log,
    });
    await server.start();
    const srv = server;
    // Changes made while serve was down (the CLI writes the store) are served now: tell the secondaries at once
    // rather than at their next refresh (field report 1, M3). A secondary already at this serial does nothing.
    if (settings.notify.length > 0) {
      log.info('dnsbl notify at start', { serial: srv.zone.serial, secondaries: settings.notify.length });
      srv.notify().catch((err: unknown) => log.warn('dnsbl notify at start failed', { err: String(err) }));
    }
    const rebuild = (): boolean => {
      try {
        const now = store.serial();
        if (now === serial) return false;
        const next = zoneFromStore(store, zoneOptions);
        try {
          journal.record(srv.zone, next);
        } catch (err) {
          log.warn('dnsbl journal write failed', { err_code: 'ERR_DNSBL_JOURNAL', error: (err as Error).message });
        }
        srv.setZone(next);
        serial = now;
        log.info('dnsbl zone rebuilt', { serial: srv.zone.serial, listed: store.count('listed'), excluded: store.count('excluded') });
        return true;
      } catch (err) {
        log.error('dnsbl zone rebuild failed', { error: (err as Error).message });
        return false;
      }
    };
    let test = deps.testHost;
    let prove = deps.prove ?? settings.probeDomain !== null;
    if (test === undefined) {
      tester = await createTestHost(settings, log);
      test = tester.test;
      prove = tester.prove;
    }
    // The admin's "test now" runs as the address's job too, so no other worker tests it at the same time.
    let worker: OrdbWorker | null = null;
    const workflow = new OrdbWorkflow({
      testNowVia: (address, kind) => worker!.runNow(address, kind),
      store, test, prove, clock: deps.clock, logger: log,
      rateLimit: { perSubmitterPerHour: settings.submissionsPerHour },
      retestIntervalMs: settings.retestIntervalMs,
      retryIntervalMs: settings.retryIntervalMs,
      excluded: settings.excluded,
      allowNonGlobal: settings.allowPrivateTargets,
      concurrency: settings.testConcurrency,
      onChange: rebuild,
    });
    const poll = setInterval(rebuild, settings.zonePollMs);
    poll.unref();
    const jobs = new JobQueue(store, { clock: deps.clock });
    worker = new OrdbWorker({
      jobs, workflow, clock: deps.clock, logger: log, concurrency: settings.testConcurrency, leaseMs: settings.jobLeaseMs,
      pollMs: settings.schedulerIntervalMs > 0 ? settings.schedulerIntervalMs : undefined,
    });
    const w = worker;
    const runDue = (): Promise<TestOutcome[]> => w.drain().catch((err: unknown) => {
      log.error('dnsbl scheduler failed', { error: (err as Error)?.message ?? String(err) });
      return [];
    });
    if (settings.schedulerIntervalMs > 0) w.start();
    log.info('dnsbl workflow started', {
      zone: settings.zone, mode: prove ? 'prove' : 'safe', probe_domain: settings.probeDomain,
      retest_interval_ms: settings.retestIntervalMs, scheduler_interval_ms: settings.schedulerIntervalMs,
    });
    let stopping: Promise<void> | null = null;
    const t = tester;
    return {
      store, workflow, jobs, worker: w, server: srv, settings, rebuild, runDue,
      stop() {
        stopping ??= (async () => {
          clearInterval(poll);
          await w.stop();
          await workflow.stop();
          await srv.stop();
          await t?.close();
          store.close();
        })();
        return stopping;
      },
    };
  } catch (err) {
    await server?.stop().catch(() => {});
    await tester?.close().catch(() => {});
    store.close();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The relay's DNSBL gate
// ---------------------------------------------------------------------------------------------------------------

