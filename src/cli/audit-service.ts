/**
 * The self-audit composed from a configuration (src/audit): the checks of `relayguard audit` and of serve's periodic
 * job, the history store (dataDir/audit.db or PostgreSQL's audit_reports), and the service serve runs.
 *
 *   auditChecks(config, parts)       config lint, relay (audit.relay.vantage: LocalVantage from an untrusted loopback
 *                                    source, RemoteVantage: another relayguard's tester API), blocklists, dns
 *   openAuditHistory(config)         the history port over the store's adapter
 *   startAuditService(config, ...)   serve's periodic job (audit.enabled), gauges on the node's metrics
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { AuditVantage, Config } from '../config/schema.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import {
  AuditService, LocalVantage, RemoteVantage, blocklistCheck, auditAddresses, checkMailDomains, chooseSourceAddress, chooseSourceAddress6, configCheck, mailDomainsInputFromConfig, relayCheck, targetsOf, worst,
  type AuditCheck, type AuditHistory, type AuditReport, type RelayTarget, type Vantage,
} from '../audit/index.ts';
import { openAuditStore } from '../store/index.ts';
import type { RelayMetrics } from '../web/index.ts';

export interface AuditParts {
  /** The listeners as bound (serve); default the configured ones. */
  readonly listeners?: () => readonly RelayTarget[];
  /** Tester reply timeouts (tests shorten them). */
  readonly testerTimeouts?: { readonly connect?: number; readonly greeting?: number; readonly command?: number };
  /** More checks (the DNS/TLS check of the mail domains slots in here). */
  readonly extraChecks?: (config: Config) => readonly AuditCheck[];
}

export function auditChecks(config: Config, parts: AuditParts = {}): AuditCheck[] {
  const a = config.audit;
  const listeners = parts.listeners ?? (() => targetsOf(config.listeners));
  const checks: AuditCheck[] = [configCheck(config)];
  if (a.relay.enabled) {
    const make = (v: AuditVantage) => (): Vantage => (v.kind === 'remote'
      ? new RemoteVantage({
        url: v.url, tokenFile: v.tokenFile, ca: v.ca, proof: v.proof, host: v.host, addresses: a.addresses,
        hostName: config.hostname, domain: config.localDomains[0] ?? null, budgetMs: a.timeout,
      })
      : new LocalVantage({
        sourceAddress: chooseSourceAddress(config, a.relay.sourceAddress),
        sourceAddress6: chooseSourceAddress6(config, a.relay.sourceAddress6),
        probeDomain: a.relay.probeDomain ?? config.dnsbl.probeDomain,
        sink: a.relay.sink,
        probeWaitMs: a.relay.probeWait,
        hostName: config.hostname,
        domain: config.localDomains[0] ?? null,
        budgetMs: a.timeout,
        ...(parts.testerTimeouts ? { timeouts: parts.testerTimeouts } : {}),
      }));
    const vantages = a.relay.vantage.map(make);
    checks.push(relayCheck({
      targets: listeners,
      vantage: () => (vantages.length === 1 ? vantages[0]!() : vantages),
    }));
  }
  checks.push(blocklistCheck({
    zones: a.blocklists,
    addresses: () => auditAddresses(a.addresses, listeners()),
    servers: a.dnsServers.length > 0 ? a.dnsServers : config.dnsblResolver.servers,
    dnsTimeoutMs: a.dnsTimeout,
  }));
  if (a.mailDomains && config.localDomains.length > 0) checks.push(mailDomainsCheck(config));
  checks.push(...(parts.extraChecks?.(config) ?? []));
  return checks;
}

/**
 * Check 4, 'dns': the DNS and TLS of every local domain (src/audit/mail-domains.ts): MX, FCrDNS of the sending
 * addresses (audit.addresses), SPF, DMARC, MTA-STS, TLS-RPT, DANE, the listeners' certificates, the DKIM keys of
 * delivery.dkim (read from their key files; one that cannot be read is left out and named by the check).
 */
function mailDomainsCheck(config: Config): AuditCheck {
  const a = config.audit;
  return {
    name: 'dns',
    async run(ctx) {
      const keys = new Map<string, string>();
      for (const k of config.delivery.dkim) {
        try { keys.set(`${k.domain}/${k.selector}`, readFileSync(k.keyFile, 'utf8')); } catch { /* reported as a missing key */ }
      }
      const servers = a.dnsServers.length > 0 ? a.dnsServers : config.delivery.dnsServers;
      const input = mailDomainsInputFromConfig(config, {
        sendingAddresses: a.addresses.filter((x) => isIP(x) !== 0),
        dkimPrivateKeys: keys,
        resolver: { servers: [...servers] },
        timeoutMs: a.dnsTimeout,
      });
      return (await checkMailDomains(input, ctx.signal)).findings;
    },
  };
}

/** The history of a configuration: PostgreSQL's table with store.postgres, else dataDir/audit.db. */
export async function openAuditHistory(config: Config, logger?: Logger): Promise<AuditHistory> {
  if (config.store.postgres === null) mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  return openAuditStore<AuditReport>({ dataDir: config.dataDir, postgres: config.store.postgres, keep: config.audit.keep, ...(logger ? { logger } : {}) });
}

/** Publishes a report on the node's gauges. */
export function publishAudit(metrics: RelayMetrics, report: AuditReport): void {
  metrics.auditReport(report.checks.map((c) => ({ check: c.check, severity: worst(c.findings) })), report.startedAt);
}

export interface RunningAudit {
  readonly service: AuditService;
  stop(): Promise<void>;
}

export interface AuditServiceDeps extends AuditParts {
  readonly metrics: RelayMetrics;
  readonly clock?: Clock;
  readonly tickMs?: number;
  /** A history instead of the configured store (tests). */
  readonly history?: AuditHistory;
}

/** Serve's audit: the periodic job when audit.enabled (else on demand only), its reports on the gauges. */
export async function startAuditService(config: Config, logger: Logger, deps: AuditServiceDeps): Promise<RunningAudit> {
  const log = logger.child({ component: 'audit' });
  const history = deps.history ?? (await openAuditHistory(config, log));
  const service = new AuditService({
    node: config.node,
    checks: () => auditChecks(config, deps),
    history,
    intervalMs: config.audit.interval,
    timeoutMs: config.audit.timeout,
    logger: log,
    schedule: config.audit.enabled,
    onReport: (r) => publishAudit(deps.metrics, r),
    ...(deps.clock ? { clock: deps.clock } : {}),
    ...(deps.tickMs !== undefined ? { tickMs: deps.tickMs } : {}),
  });
  await service.start();
  if (config.audit.enabled) log.info('audit scheduled', { interval_ms: config.audit.interval });
  return {
    service,
    async stop() {
      await service.stop();
      await history.close();
    },
  };
}
