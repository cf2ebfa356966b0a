/**
 * Abuse checks: the ordered list of checks the receive path runs for a recipient after the relay decision accepted
 * it (DNSBL today; rate limits and greylisting later). They are kept apart from relay rules on purpose: a relay
 * rule says whether we may carry the mail at all, an abuse check whether we want it from this client now.
 * The first check that answers with a reply refuses the recipient; a check never accepts anything by itself.
 */
import { promises as dnsPromises } from 'node:dns';
import type { CanonicalAddress } from '../core/address.ts';
import type { Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import type { Reply } from '../core/reply.ts';
import type { Config } from '../config/schema.ts';
import { DnsblClient, type DnsblResolver, type DnsblZoneLookup, type ZoneHealth } from '../dnsbl/index.ts';
import { evaluateDnsbl, type DnsblDecision } from '../policy/dnsbl-check.ts';
import { NetworkList } from '../policy/networks.ts';
import type { RelayDecision } from '../policy/relay.ts';
import type { ConnectionInfo, SessionState } from '../smtp/handler.ts';

export interface RecipientCheckRequest {
  readonly session: SessionState;
  readonly rcpt: CanonicalAddress;
  /** The relay decision that accepted it ('local' or 'relay'). */
  readonly decision: RelayDecision;
  readonly trusted: boolean;
}

export interface AbuseRefusal {
  readonly reply: Reply;
  readonly reason: string;
  /** Extra log fields (zone, score, ...). */
  readonly fields?: Readonly<Record<string, unknown>>;
}

export interface AbuseCheck {
  readonly name: string;
  /** A client connected (start lookups early). */
  onConnect?(connection: ConnectionInfo): void;
  /** A refusal for this recipient, or null to let it through to the next check. */
  checkRecipient(req: RecipientCheckRequest): Promise<AbuseRefusal | null>;
  /** The session ended. */
  onClose?(connectionId: string): void;
  /** Background work (health checks); resolves when the check is ready. */
  start?(): Promise<unknown>;
  stop?(): void;
}

export interface DnsblCheckOptions {
  readonly zones: readonly { readonly zone: string; readonly weight: number }[];
  /** Default 1. */
  readonly threshold?: number | undefined;
  readonly resolver: DnsblResolver;
  /** Trusted networks are never looked up (check() without `who.trusted`). Default: nobody is trusted. */
  readonly isTrusted?: (ip: string) => boolean;
  readonly logger: Logger;
  readonly clock?: Clock | undefined;
  /** Per lookup, ms. Default 5000. */
  readonly timeoutMs?: number | undefined;
  readonly minTtlMs?: number | undefined;
  readonly maxTtlMs?: number | undefined;
  readonly negativeTtlMs?: number | undefined;
  /** Zone health checks; default 10 min (0: only at start). */
  readonly healthCheckIntervalMs?: number | undefined;
}

export interface DnsblCheck extends AbuseCheck {
  readonly client: DnsblClient;
  /** Looks the address up and decides, as the RCPT check does. */
  check(ip: string, who?: { readonly user?: string | null; readonly trusted?: boolean }): Promise<DnsblDecision>;
  /** First health check of every zone (lookups wait for it), then periodic ones. */
  start(): Promise<ZoneHealth[]>;
  stop(): void;
}

const MIN = 60_000;

/**
 * The DNSBL consumer as an abuse check: lookups start at connect, the decision is taken at RCPT (554 5.7.1 for a
 * listed client; trusted networks and authenticated users pass; a DNS failure never blocks).
 */
export function createDnsblCheck(options: DnsblCheckOptions): DnsblCheck {
  const client = new DnsblClient({
    resolver: options.resolver, zones: options.zones, clock: options.clock, logger: options.logger,
    timeoutMs: options.timeoutMs, minTtlMs: options.minTtlMs, maxTtlMs: options.maxTtlMs, negativeTtlMs: options.negativeTtlMs,
  });
  const threshold = options.threshold ?? 1;
  const lookups = new Map<string, Promise<DnsblZoneLookup[]>>();
  const decide = (ip: string, results: readonly DnsblZoneLookup[], user: string | null, trusted: boolean): DnsblDecision =>
    evaluateDnsbl({ ip, results, threshold, trusted, user });
  return {
    name: 'dnsbl',
    client,
    async check(ip, who = {}) {
      const trusted = who.trusted ?? options.isTrusted?.(ip) ?? false;
      return decide(ip, trusted ? [] : await client.checkAll(ip), who.user ?? null, trusted);
    },
    onConnect(connection) {
      lookups.set(connection.id, client.checkAll(connection.remoteAddress));
    },
    async checkRecipient({ session, trusted }) {
      if (trusted || session.user !== null) return null;
      const ip = session.connection.remoteAddress;
      let pending = lookups.get(session.connection.id);
      if (pending === undefined) {
        pending = client.checkAll(ip);
        lookups.set(session.connection.id, pending);
      }
      const d = decide(ip, await pending, session.user, trusted);
      if (!d.blocked) return null;
      return {
        reply: d.reply,
        reason: `listed in ${d.listedIn.join(', ')} (score ${d.score})`,
        fields: { zone: d.zone, score: d.score, listed_in: d.listedIn },
      };
    },
    onClose(id) {
      lookups.delete(id);
    },
    start() {
      return client.startHealthChecks(options.healthCheckIntervalMs ?? 10 * MIN);
    },
    stop() {
      client.stopHealthChecks();
    },
  };
}

/** The DNSBL check for a Config (dnsblChecks, dnsblThreshold, dnsblResolver); null when no zone is configured. */
export function dnsblCheckFromConfig(config: Config, logger: Logger, deps: { resolver?: DnsblResolver; clock?: Clock } = {}): DnsblCheck | null {
  if (config.dnsblChecks.length === 0) return null;
  const r = config.dnsblResolver;
  let resolver = deps.resolver;
  if (resolver === undefined) {
    const res = new dnsPromises.Resolver({ timeout: r.timeout, tries: 2 });
    if (r.servers.length > 0) res.setServers([...r.servers]);
    resolver = res;
  }
  return createDnsblCheck({
    zones: config.dnsblChecks,
    threshold: config.dnsblThreshold,
    resolver,
    isTrusted: trustedPredicate(config),
    logger: logger.child({ component: 'dnsbl-client' }),
    clock: deps.clock,
    timeoutMs: r.timeout,
    minTtlMs: r.minTtl,
    maxTtlMs: r.maxTtl,
    negativeTtlMs: r.negativeTtl,
    healthCheckIntervalMs: r.healthCheckInterval,
  });
}

/** Trusted networks of a config as a predicate. */
export function trustedPredicate(config: Config): (ip: string) => boolean {
  const list = new NetworkList(config.trustedNetworks);
  return (ip) => list.contains(ip);
}
