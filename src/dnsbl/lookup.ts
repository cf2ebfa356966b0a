/**
 * The relay's DNSBL client (the consumer side of RFC 5782): looks a client address up in DNS blocklist zones over
 * an injected resolver (node:dns promises Resolver, or anything with resolve4 + resolveTxt), caches answers by TTL,
 * and health-checks each zone with the RFC 5782 section 5 test points.
 *
 * What an answer means (hostile-inputs DB-05, relay-testers.md 3.5):
 * - NXDOMAIN or an empty answer: not listed.
 * - A records, all in 127.0.0.0/8: listed, with those codes; the TXT (first record) is fetched as the reason.
 * - An A record outside 127.0.0.0/8 (a resolver that rewrites NXDOMAIN, a dead list's wildcard), 127.0.0.1
 *   (URIBL-style "query refused", and the never-listed test point), or 127.255.255.0/24 (Spamhaus error codes:
 *   .252 typo in the zone, .254 public resolver, .255 excessive queries): "broken", i.e. not listed, list broken.
 * - SERVFAIL, REFUSED, a timeout, a network error: "error". Never treated as listed: the caller must fail open.
 *
 * Cache: listed and broken answers for their TTL clamped to [minTtl, maxTtl] (postscreen_dnsbl_min_ttl 60 s,
 * max_ttl 1 h), not-listed answers for negativeTtl, errors not at all; concurrent lookups of one name share one
 * query. The cache holds at most maxCacheEntries (oldest dropped first).
 *
 * Health check (at start and periodically): 127.0.0.2 must be listed (with a code in 127/8) and 127.0.0.1 must not.
 * A zone that lists 127.0.0.1 "lists the world" (ORDB from March 2008) and is disabled; so is a zone that does not
 * list 127.0.0.2 or answers it with a broken code. A zone that cannot be reached keeps its state (its lookups fail
 * and fail open anyway). A disabled zone is checked again at the next round and enabled when healthy.
 */
import { canonicalIp } from '../core/canonical.ts';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { dnsblName, parseAddress } from './network.ts';
import { normalizeZoneName } from './zone.ts';

/** What the client needs of a resolver; node:dns `promises.Resolver` fits. */
export interface DnsblResolver {
  resolve4(hostname: string, options: { ttl: true }): Promise<Array<{ address: string; ttl: number }>>;
  resolveTxt(hostname: string): Promise<string[][]>;
}

export type DnsblErrorKind = 'timeout' | 'servfail' | 'refused' | 'network' | 'bad-address' | 'other';

export type DnsblLookupResult =
  | { readonly kind: 'listed'; readonly listed: true; readonly zone: string; readonly name: string; readonly codes: readonly string[]; readonly txt: string | null; readonly ttl: number }
  | { readonly kind: 'not-listed'; readonly listed: false; readonly zone: string; readonly name: string }
  | { readonly kind: 'broken'; readonly listed: false; readonly zone: string; readonly name: string; readonly broken: string; readonly codes: readonly string[] }
  | { readonly kind: 'error'; readonly listed: false; readonly zone: string; readonly name: string; readonly error: DnsblErrorKind; readonly detail: string };

/** A zone's result in a check of every configured zone. */
export type DnsblZoneLookup =
  | (DnsblLookupResult & { readonly weight: number })
  | { readonly kind: 'disabled'; readonly listed: false; readonly zone: string; readonly weight: number; readonly reason: string };

export type ZoneHealthStatus = 'unchecked' | 'healthy' | 'lists-the-world' | 'test-point-missing' | 'broken' | 'unreachable';

export interface ZoneHealth {
  readonly zone: string;
  readonly weight: number;
  readonly enabled: boolean;
  readonly status: ZoneHealthStatus;
  readonly detail: string | null;
  readonly checkedAt: number | null;
}

export interface DnsblZoneConfig {
  readonly zone: string;
  readonly weight: number;
}

export interface DnsblClientOptions {
  readonly resolver: DnsblResolver;
  readonly zones?: readonly DnsblZoneConfig[] | undefined;
  readonly clock?: Clock | undefined;
  readonly logger?: Logger | undefined;
  /** Longest wait for one lookup (A, then TXT), ms. Default 5000. */
  readonly timeoutMs?: number | undefined;
  /** Cache TTL bounds for listed/broken answers, ms. Default 60 s and 1 h. */
  readonly minTtlMs?: number | undefined;
  readonly maxTtlMs?: number | undefined;
  /** Cache time of not-listed answers, ms. Default 60 s. */
  readonly negativeTtlMs?: number | undefined;
  /** Default 50 000. */
  readonly maxCacheEntries?: number | undefined;
  /** Fetch the TXT reason of listed addresses. Default true. */
  readonly txt?: boolean | undefined;
}

const ERROR_CODES: Record<string, DnsblErrorKind> = {
  ETIMEOUT: 'timeout', ETIMEDOUT: 'timeout', ESERVFAIL: 'servfail', EREFUSED: 'refused', ECONNREFUSED: 'network',
  ECONNRESET: 'network', EHOSTUNREACH: 'network', ENETUNREACH: 'network', ECANCELLED: 'timeout',
};
const NOT_LISTED_CODES = new Set(['ENOTFOUND', 'ENODATA', 'NOTFOUND', 'NODATA']);
const MAX_TXT = 512;

/**
 * Why a set of A answers cannot be read as a listing, or null when they are all proper codes in 127.0.0.0/8
 * (other than 127.0.0.1 and 127.255.255.0/24).
 */
export function brokenAnswer(codes: readonly string[]): string | null {
  for (const c of codes) {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(c);
    if (!m) return `answer ${c} is not an IPv4 address`;
    if (m[1] !== '127') return `answer ${c} is outside 127.0.0.0/8 (a resolver rewriting NXDOMAIN, or a dead list)`;
    if (c === '127.0.0.1') return 'answer 127.0.0.1 (the never-listed test point; lists use it for "query refused")';
    if (m[2] === '255' && m[3] === '255') {
      const why = m[4] === '252' ? 'typo in the zone name' : m[4] === '254' ? 'query through a public or open resolver' : m[4] === '255' ? 'excessive number of queries' : 'list error code';
      return `error code ${c} (${why}), not a listing`;
    }
  }
  return null;
}

/** The query name of an address below a zone; IPv4-mapped IPv6 addresses are looked up as IPv4. Null for a bad address. */
export function queryName(ip: string, zone: string): string | null {
  const address = canonicalIp(ip.trim()) ?? ip.trim();
  if (parseAddress(address) === null) return null;
  return dnsblName(address, zone);
}

function errorKind(err: unknown): { kind: 'not-listed' } | { kind: 'error'; error: DnsblErrorKind; detail: string } {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NOT_LISTED_CODES.has(code)) return { kind: 'not-listed' };
  const detail = typeof code === 'string' ? code : err instanceof Error ? err.message : String(err);
  return { kind: 'error', error: (typeof code === 'string' ? ERROR_CODES[code] : undefined) ?? 'other', detail };
}

class Timeout extends Error {
  readonly code = 'ETIMEOUT';
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Timeout(`no answer within ${ms} ms`)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

interface ZoneState {
  readonly zone: string;
  readonly weight: number;
  enabled: boolean;
  status: ZoneHealthStatus;
  detail: string | null;
  checkedAt: number | null;
}

export class DnsblClient {
  readonly #resolver: DnsblResolver;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #minTtl: number;
  readonly #maxTtl: number;
  readonly #negTtl: number;
  readonly #maxEntries: number;
  readonly #txt: boolean;
  readonly #zones: ZoneState[];
  readonly #cache = new Map<string, { result: DnsblLookupResult; expires: number }>();
  readonly #inflight = new Map<string, Promise<DnsblLookupResult>>();
  readonly #lastErrorLog = new Map<string, number>();
  #health: Promise<ZoneHealth[]> | null = null;
  #firstCheck: Promise<unknown> | null = null;
  #timer: NodeJS.Timeout | null = null;
  readonly stats = { lookups: 0, cacheHits: 0, queries: 0, listed: 0, broken: 0, errors: 0 };

  constructor(options: DnsblClientOptions) {
    this.#resolver = options.resolver;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#log = options.logger ?? NULL_LOGGER;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#minTtl = options.minTtlMs ?? 60_000;
    this.#maxTtl = Math.max(this.#minTtl, options.maxTtlMs ?? 3_600_000);
    this.#negTtl = options.negativeTtlMs ?? 60_000;
    this.#maxEntries = Math.max(1, options.maxCacheEntries ?? 50_000);
    this.#txt = options.txt ?? true;
    const seen = new Set<string>();
    this.#zones = [];
    for (const z of options.zones ?? []) {
      const zone = normalizeZoneName(z.zone, 'DNSBL zone');
      if (seen.has(zone)) continue;
      seen.add(zone);
      this.#zones.push({ zone, weight: z.weight, enabled: true, status: 'unchecked', detail: null, checkedAt: null });
    }
  }

  get zones(): readonly ZoneHealth[] {
    return this.#zones.map((z) => ({ zone: z.zone, weight: z.weight, enabled: z.enabled, status: z.status, detail: z.detail, checkedAt: z.checkedAt }));
  }

  clearCache(): void {
    this.#cache.clear();
  }

  /** Looks one address up in one zone (cached). Never rejects. */
  async lookup(ip: string, zoneName: string): Promise<DnsblLookupResult> {
    this.stats.lookups++;
    let zone: string;
    try {
      zone = normalizeZoneName(zoneName, 'DNSBL zone');
    } catch (err) {
      return { kind: 'error', listed: false, zone: zoneName, name: '', error: 'bad-address', detail: (err as Error).message };
    }
    const name = queryName(ip, zone);
    if (name === null) return { kind: 'error', listed: false, zone, name: '', error: 'bad-address', detail: `not an IP address: ${JSON.stringify(ip.slice(0, 64))}` };
    const now = this.#clock.now();
    const hit = this.#cache.get(name);
    if (hit !== undefined) {
      if (hit.expires > now) {
        this.stats.cacheHits++;
        this.#log.debug('dnsbl lookup', { zone, result: hit.result.kind, cached: true });
        return hit.result;
      }
      this.#cache.delete(name);
    }
    const running = this.#inflight.get(name);
    if (running) return running;
    const p = this.#query(zone, name).then((r) => {
      this.#store(name, r);
      // One event per lookup answered from DNS or the cache (not 'dnsbl lookup failed', which is rate-limited): metrics.
      this.#log.debug('dnsbl lookup', { zone, result: r.kind, cached: false });
      return r;
    }).finally(() => this.#inflight.delete(name));
    this.#inflight.set(name, p);
    return p;
  }

  #store(name: string, r: DnsblLookupResult): void {
    let ttl: number;
    if (r.kind === 'listed') ttl = Math.min(this.#maxTtl, Math.max(this.#minTtl, r.ttl * 1000));
    else if (r.kind === 'broken') ttl = this.#minTtl;
    else if (r.kind === 'not-listed') ttl = this.#negTtl;
    else return;
    if (ttl <= 0) return;
    if (this.#cache.size >= this.#maxEntries) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
    this.#cache.set(name, { result: r, expires: this.#clock.now() + ttl });
  }

  async #query(zone: string, name: string): Promise<DnsblLookupResult> {
    this.stats.queries++;
    let answers: Array<{ address: string; ttl: number }>;
    try {
      answers = await withTimeout(this.#resolver.resolve4(name, { ttl: true }), this.#timeoutMs);
    } catch (err) {
      const k = errorKind(err);
      if (k.kind === 'not-listed') return { kind: 'not-listed', listed: false, zone, name };
      this.stats.errors++;
      this.#logError(zone, name, k.error, k.detail);
      return { kind: 'error', listed: false, zone, name, error: k.error, detail: k.detail };
    }
    if (answers.length === 0) return { kind: 'not-listed', listed: false, zone, name };
    const codes = [...new Set(answers.map((a) => a.address))].sort();
    const broken = brokenAnswer(codes);
    if (broken !== null) {
      this.stats.broken++;
      this.#logError(zone, name, 'broken', broken);
      return { kind: 'broken', listed: false, zone, name, broken, codes };
    }
    this.stats.listed++;
    const ttl = Math.min(...answers.map((a) => (Number.isFinite(a.ttl) && a.ttl >= 0 ? a.ttl : 0)));
    let txt: string | null = null;
    if (this.#txt) {
      try {
        const records = await withTimeout(this.#resolver.resolveTxt(name), this.#timeoutMs);
        const first = records[0];
        if (first !== undefined) txt = first.join('').slice(0, MAX_TXT);
      } catch {
        // listed without a reason
      }
    }
    return { kind: 'listed', listed: true, zone, name, codes, txt, ttl };
  }

  /** Logs a failing zone at most once a minute. */
  #logError(zone: string, name: string, error: string, detail: string): void {
    const now = this.#clock.now();
    const last = this.#lastErrorLog.get(zone);
    if (last !== undefined && now - last < 60_000) return;
    this.#lastErrorLog.set(zone, now);
    this.#log.warn('dnsbl lookup failed', { zone, query: name, error, detail });
  }

  /**
   * Looks the address up in every configured zone at once (disabled zones are reported, not queried). Waits for
   * the first health check if one is running, so a zone that lists the world is never used. Never rejects.
   */
  async checkAll(ip: string): Promise<DnsblZoneLookup[]> {
    if (this.#firstCheck) await this.#firstCheck;
    return Promise.all(this.#zones.map(async (z): Promise<DnsblZoneLookup> => {
      if (!z.enabled) return { kind: 'disabled', listed: false, zone: z.zone, weight: z.weight, reason: z.detail ?? z.status };
      return { ...(await this.lookup(ip, z.zone)), weight: z.weight };
    }));
  }

  /** Checks one zone with the RFC 5782 test points (no cache). */
  async checkZone(zoneName: string): Promise<{ status: Exclude<ZoneHealthStatus, 'unchecked'>; detail: string }> {
    const zone = normalizeZoneName(zoneName, 'DNSBL zone');
    const ask = async (ip: string): Promise<{ codes: string[] } | { nx: true } | { error: string }> => {
      try {
        const a = await withTimeout(this.#resolver.resolve4(dnsblName(ip, zone)!, { ttl: true }), this.#timeoutMs);
        return a.length === 0 ? { nx: true } : { codes: [...new Set(a.map((x) => x.address))].sort() };
      } catch (err) {
        const k = errorKind(err);
        return k.kind === 'not-listed' ? { nx: true } : { error: `${k.error} (${k.detail})` };
      }
    };
    const [two, one] = await Promise.all([ask('127.0.0.2'), ask('127.0.0.1')]);
    if ('codes' in one) return { status: 'lists-the-world', detail: `127.0.0.1 is listed (${one.codes.join(', ')}): the zone lists everything` };
    if ('error' in two || 'error' in one) {
      return { status: 'unreachable', detail: `test point lookup failed: ${'error' in two ? two.error : (one as { error: string }).error}` };
    }
    if (!('codes' in two)) return { status: 'test-point-missing', detail: '127.0.0.2 is not listed (RFC 5782 section 5 says it must be)' };
    const broken = brokenAnswer(two.codes);
    if (broken !== null) return { status: 'broken', detail: `127.0.0.2: ${broken}` };
    return { status: 'healthy', detail: `127.0.0.2 listed (${two.codes.join(', ')}), 127.0.0.1 not listed` };
  }

  /** Health-checks every zone and enables or disables it; concurrent calls share one round. */
  healthCheck(): Promise<ZoneHealth[]> {
    this.#health ??= (async () => {
      try {
        await Promise.all(this.#zones.map(async (z) => {
          let r: { status: Exclude<ZoneHealthStatus, 'unchecked'>; detail: string };
          try {
            r = await this.checkZone(z.zone);
          } catch (err) {
            r = { status: 'unreachable', detail: (err as Error).message };
          }
          const was = z.enabled;
          z.status = r.status;
          z.detail = r.detail;
          z.checkedAt = this.#clock.now();
          if (r.status === 'healthy') z.enabled = true;
          else if (r.status !== 'unreachable') z.enabled = false;
          const fields = { zone: z.zone, status: r.status, detail: r.detail, enabled: z.enabled };
          if (was && !z.enabled) this.#log.error('dnsbl zone disabled', fields);
          else if (!was && z.enabled) this.#log.warn('dnsbl zone enabled again', fields);
          else if (r.status === 'unreachable') this.#log.warn('dnsbl zone health check failed', fields);
          else this.#log.debug('dnsbl zone healthy', fields);
          if (was !== z.enabled) this.#dropZoneCache(z.zone);
        }));
        return this.zones as ZoneHealth[];
      } finally {
        this.#health = null;
      }
    })();
    return this.#health;
  }

  #dropZoneCache(zone: string): void {
    for (const k of this.#cache.keys()) if (k.endsWith(`.${zone}`)) this.#cache.delete(k);
  }

  /** Runs a health check now (lookups wait for it) and then every intervalMs (0: only now). */
  startHealthChecks(intervalMs: number): Promise<ZoneHealth[]> {
    this.stopHealthChecks();
    const first = this.healthCheck();
    this.#firstCheck = first.finally(() => { this.#firstCheck = null; });
    if (intervalMs > 0) {
      this.#timer = setInterval(() => { void this.healthCheck(); }, intervalMs);
      this.#timer.unref();
    }
    return first;
  }

  stopHealthChecks(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
