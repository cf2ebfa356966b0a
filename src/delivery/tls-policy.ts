/**
 * TLS policy per MX destination: which hops may be used and what TLS each must have.
 *
 * - StaticTlsPolicy: configuration only. Default 'may' (opportunistic STARTTLS); per domain 'none', 'may',
 *   'required' (encrypted, any certificate) or 'verify' (encrypted, certificate chain and MX name verified).
 * - MtaSts (RFC 8461): the `_mta-sts.DOMAIN` TXT record announces a policy, fetched over HTTPS (certificate
 *   verified, no redirects, 64 KiB at most) from https://mta-sts.DOMAIN/.well-known/mta-sts.txt and cached for
 *   max_age (refetched when the TXT id changes; a cached policy survives fetch failures). mode enforce: only MX
 *   hosts matching an `mx:` pattern are used (none → defer 4.7.5), each with TLS and a certificate valid for the MX
 *   name (else defer 4.7.x, never plaintext); mode testing: delivery as usual, mismatches logged.
 * - DANE (RFC 7672): TLSA records at _PORT._tcp.MXHOST make TLS mandatory for that host and the certificate
 *   must match one usable record (usage 3 DANE-EE or 2 DANE-TA, selector 0 full certificate or 1 SPKI, matching
 *   0 exact, 1 SHA-256, 2 SHA-512). A TLSA lookup that fails (SERVFAIL, timeout) makes that host unusable. Node's
 *   resolver cannot see the DNSSEC AD bit, so DANE is only as good as the resolver: enable it only when the
 *   configured resolver is a local validating one (unbound, systemd-resolved with DNSSEC=yes) that returns
 *   SERVFAIL for bogus data. DANE wins over MTA-STS for a host that has TLSA records (RFC 8461 section 2).
 * - TlsPolicy composes the three.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { request } from 'node:https';
import { isIP } from 'node:net';
import type { LookupFunction } from 'node:net';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import type { TlsInfo } from '../smtp/client.ts';
import type { HopTlsPolicy, HopTarget } from './outbound.ts';
import type { NextHop } from './mx.ts';
import { deferred, type LocalFailure } from './outcome.ts';
import type { TlsMode } from './routing.ts';

export interface TlsPolicyDecision {
  readonly forHop: (hop: HopTarget) => HopTlsPolicy;
  /** The hops allowed, when the policy narrows the MX list (MTA-STS "mx" patterns); default all. */
  readonly hops?: readonly NextHop[];
  /** "MTA-STS", "DANE", "TLS policy". */
  readonly source?: string;
}

export interface TlsPolicySource {
  policyFor(domain: string, hops: readonly NextHop[], signal?: AbortSignal): Promise<TlsPolicyDecision | { readonly failure: LocalFailure }>;
}

export type DomainTlsMode = TlsMode | 'verify';

export interface StaticTlsPolicyOptions {
  /** Default for every MX destination. Default 'may'. */
  readonly default?: DomainTlsMode;
  /** Per destination domain (canonical). */
  readonly domains?: Readonly<Record<string, DomainTlsMode>>;
  /** Trusted CAs for 'verify' (PEM); default the system store. */
  readonly ca?: readonly string[];
}

export class StaticTlsPolicy implements TlsPolicySource {
  readonly #options: StaticTlsPolicyOptions;
  constructor(options: StaticTlsPolicyOptions = {}) {
    this.#options = options;
  }

  modeFor(domain: string): DomainTlsMode {
    return this.#options.domains?.[domain] ?? this.#options.default ?? 'may';
  }

  async policyFor(domain: string): Promise<TlsPolicyDecision> {
    const mode = this.modeFor(domain);
    const ca = this.#options.ca;
    return {
      source: 'TLS policy',
      forHop: (hop) => ({
        mode: mode === 'verify' ? 'required' : mode,
        verify: mode === 'verify',
        servername: hop.host,
        ...(ca ? { ca } : {}),
        source: 'TLS policy',
      }),
    };
  }
}


// ---------------------------------------------------------------------------------------------------------
// MTA-STS (RFC 8461)

export interface MtaStsPolicy {
  readonly mode: 'enforce' | 'testing' | 'none';
  readonly mx: readonly string[];
  /** Seconds. */
  readonly maxAge: number;
}

/** Parses a policy file; null when it is not a valid STSv1 policy. */
export function parseMtaStsPolicy(text: string): MtaStsPolicy | null {
  const fields = new Map<string, string[]>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '') continue;
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    const list = fields.get(k);
    if (list) list.push(v);
    else fields.set(k, [v]);
  }
  if (fields.get('version')?.[0] !== 'STSv1') return null;
  const mode = fields.get('mode')?.[0];
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') return null;
  const maxAge = Number(fields.get('max_age')?.[0]);
  if (!Number.isInteger(maxAge) || maxAge < 0) return null;
  const mx = (fields.get('mx') ?? []).map((m) => m.toLowerCase().replace(/\.$/, '')).filter((m) => /^(\*\.)?[a-z0-9.-]+$/.test(m));
  if (mode !== 'none' && mx.length === 0) return null;
  return { mode, mx, maxAge: Math.min(maxAge, 31_557_600) };
}

/** RFC 8461 section 4.1: exact match, or "*.example.com" matching exactly one more left-most label. */
export function mxMatches(host: string, patterns: readonly string[]): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  for (const p of patterns) {
    if (p.startsWith('*.')) {
      const rest = p.slice(2);
      const dot = h.indexOf('.');
      if (dot > 0 && h.slice(dot + 1) === rest) return true;
    } else if (h === p) {
      return true;
    }
  }
  return false;
}

/** The id of the single valid "v=STSv1" TXT record, or null. */
export function parseStsTxt(records: readonly (readonly string[])[]): string | null {
  const sts = records.map((r) => r.join('')).filter((t) => /^v=STSv1\s*(;|$)/.test(t));
  if (sts.length !== 1) return null;
  const id = /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(?:;|$)/.exec(sts[0]!)?.[1];
  return id ?? null;
}

export interface MtaStsResolver {
  resolveTxt(name: string): Promise<string[][]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

export interface MtaStsOptions {
  readonly resolver: MtaStsResolver;
  /** Fetches the policy text of a domain; default: HTTPS GET through `resolver` (no redirects, 64 KiB, 10 s). */
  readonly fetchPolicy?: (domain: string, signal?: AbortSignal) => Promise<string>;
  /** For the default fetcher: extra trusted CAs (tests) and the port (default 443). */
  readonly ca?: readonly string[];
  readonly port?: number;
  readonly timeoutMs?: number;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Most cached policies. Default 10000. */
  readonly maxCached?: number;
}

interface CachedPolicy {
  readonly id: string;
  readonly policy: MtaStsPolicy;
  readonly expiresAt: number;
}

const MAX_POLICY_BYTES = 64 * 1024;

export class MtaSts {
  readonly #o: MtaStsOptions;
  readonly #cache = new Map<string, CachedPolicy>();
  readonly #clock: Clock;
  readonly #logger: Logger;

  constructor(options: MtaStsOptions) {
    this.#o = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#logger = options.logger ?? NULL_LOGGER;
  }

  /** The policy in force for a domain, or null. */
  async policy(domain: string, signal?: AbortSignal): Promise<MtaStsPolicy | null> {
    const now = this.#clock.now();
    let cached = this.#cache.get(domain) ?? null;
    if (cached !== null && cached.expiresAt <= now) {
      this.#cache.delete(domain);
      cached = null;
    }
    let id: string | null;
    try {
      id = parseStsTxt(await this.#o.resolver.resolveTxt(`_mta-sts.${domain}`));
    } catch {
      id = null; // no record or lookup failure: a cached policy still applies (RFC 8461 section 5.1)
    }
    if (id === null || (cached !== null && cached.id === id)) return cached?.policy ?? null;
    try {
      const text = await (this.#o.fetchPolicy ?? ((d, s) => this.#fetch(d, s)))(domain, signal);
      const policy = parseMtaStsPolicy(text);
      if (policy === null) throw new Error('invalid policy file');
      if (this.#cache.size >= (this.#o.maxCached ?? 10_000)) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(domain, { id, policy, expiresAt: now + policy.maxAge * 1000 });
      return policy;
    } catch (err) {
      this.#logger.warn('MTA-STS policy fetch failed', { domain, error: (err as Error).message, cached: cached !== null });
      return cached?.policy ?? null;
    }
  }

  #fetch(domain: string, signal?: AbortSignal): Promise<string> {
    const host = `mta-sts.${domain}`;
    const resolver = this.#o.resolver;
    const lookup: LookupFunction = (hostname, options, callback) => {
      const want = (options as { family?: number }).family;
      const p = want === 6 ? resolver.resolve6(hostname) : resolver.resolve4(hostname).catch(() => resolver.resolve6(hostname));
      p.then((addrs) => {
        const a = addrs[0];
        if (a === undefined) { callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 4); return; }
        if ((options as { all?: boolean }).all) (callback as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, addrs.map((x) => ({ address: x, family: isIP(x) })));
        else callback(null, a, isIP(a));
      }, (err: NodeJS.ErrnoException) => callback(err, '', 4));
    };
    return new Promise((resolve, reject) => {
      const req = request({
        host, servername: host, port: this.#o.port ?? 443, path: '/.well-known/mta-sts.txt', method: 'GET', lookup,
        timeout: this.#o.timeoutMs ?? 10_000, rejectUnauthorized: true, ...(this.#o.ca ? { ca: [...this.#o.ca] } : {}),
        ...(signal ? { signal } : {}), headers: { 'user-agent': 'relayguard-mta-sts' },
      }, (res) => {
        if (res.statusCode !== 200) { res.resume(); reject(new Error(`HTTP ${res.statusCode} from ${host}`)); return; }
        if (!/^text\/plain\b/i.test(String(res.headers['content-type'] ?? ''))) { res.resume(); reject(new Error('policy is not text/plain')); return; }
        const parts: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_POLICY_BYTES) { req.destroy(new Error('policy larger than 64 KiB')); return; }
          parts.push(c);
        });
        res.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('timed out fetching the MTA-STS policy')));
      req.on('error', reject);
      req.end();
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// DANE (RFC 7672, RFC 6698)

export interface TlsaRecordLike {
  readonly certUsage: number;
  readonly selector: number;
  readonly match: number;
  readonly data: ArrayBuffer | Uint8Array;
}

export interface DaneResolver {
  resolveTlsa(name: string): Promise<TlsaRecordLike[]>;
}

/** Certificates of the peer as DER: the leaf first, then the chain it sent (for DANE-TA). */
export interface PeerCertificates {
  readonly chain: readonly Buffer[];
}

/** Records DANE for SMTP can use: usage 2 or 3, selector 0 or 1, matching 0, 1 or 2. */
export function usableTlsa(records: readonly TlsaRecordLike[]): TlsaRecordLike[] {
  return records.filter((r) => (r.certUsage === 2 || r.certUsage === 3) && (r.selector === 0 || r.selector === 1) && r.match >= 0 && r.match <= 2);
}

function selectAndHash(der: Buffer, selector: number, match: number): Buffer {
  const selected = selector === 0 ? der : Buffer.from(new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' }));
  if (match === 0) return selected;
  return createHash(match === 1 ? 'sha256' : 'sha512').update(selected).digest();
}

/** True when one usable record matches: DANE-EE against the leaf, DANE-TA against any certificate of the chain. */
export function daneMatches(records: readonly TlsaRecordLike[], certs: PeerCertificates): boolean {
  const leaf = certs.chain[0];
  if (leaf === undefined) return false;
  for (const r of usableTlsa(records)) {
    const want = Buffer.from(r.data instanceof Uint8Array ? r.data : new Uint8Array(r.data));
    const candidates = r.certUsage === 3 ? [leaf] : certs.chain.slice(1);
    for (const der of candidates) {
      try {
        if (selectAndHash(der, r.selector, r.match).equals(want)) return true;
      } catch {
        // an unparsable certificate matches nothing
      }
    }
  }
  return false;
}

/** Checks the peer's certificates (DER, leaf first, as the SMTP client reports them) against the TLSA records. */
export function daneCheck(records: readonly TlsaRecordLike[], tls: TlsInfo): string | null {
  const cert = tls.peerCertificate;
  if (cert === null) return 'no certificate presented';
  const chain = cert.chain.length > 0 ? cert.chain : [cert.raw];
  return daneMatches(records, { chain }) ? null : 'no TLSA record matches the certificate';
}

// ---------------------------------------------------------------------------------------------------------
// The composed policy

export interface TlsPolicyOptions {
  readonly static?: StaticTlsPolicyOptions;
  /** MTA-STS; null/absent: off. */
  readonly mtaSts?: MtaSts | null;
  /** DANE via this resolver; only set it when the resolver validates DNSSEC (see the header comment). */
  readonly dane?: DaneResolver | null;
  readonly logger?: Logger;
}

function codeOf(err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : 'EUNKNOWN';
}

export class TlsPolicy implements TlsPolicySource {
  readonly #static: StaticTlsPolicy;
  readonly #o: TlsPolicyOptions;
  readonly #logger: Logger;

  constructor(options: TlsPolicyOptions = {}) {
    this.#static = new StaticTlsPolicy(options.static ?? {});
    this.#o = options;
    this.#logger = options.logger ?? NULL_LOGGER;
  }

  async policyFor(domain: string, hops: readonly NextHop[], signal?: AbortSignal): Promise<TlsPolicyDecision | { readonly failure: LocalFailure }> {
    const base = await this.#static.policyFor(domain);
    let allowed: readonly NextHop[] = hops;
    let forHop = base.forHop;
    let source = base.source ?? 'TLS policy';

    const sts = this.#o.mtaSts ? await this.#o.mtaSts.policy(domain, signal) : null;
    if (sts !== null && sts.mode !== 'none') {
      const matching = hops.filter((h) => mxMatches(h.host, sts.mx));
      if (sts.mode === 'enforce') {
        if (matching.length === 0) return { failure: deferred('4.7.5', `no MX host of ${domain} matches its MTA-STS policy`) };
        allowed = matching;
        source = 'MTA-STS';
        const ca = this.#o.static?.ca;
        forHop = (hop) => ({ mode: 'required', verify: true, servername: hop.host, ...(ca ? { ca } : {}), source: 'MTA-STS' });
      } else if (matching.length !== hops.length) {
        this.#logger.warn('MTA-STS testing: MX hosts outside the policy', { domain, hosts: hops.filter((h) => !matching.includes(h)).map((h) => h.host) });
      }
    }

    const dane = this.#o.dane;
    if (dane) {
      const byHost = new Map<string, TlsaRecordLike[] | 'fail' | null>();
      await Promise.all([...new Set(allowed.map((h) => `${h.host}|${h.port}`))].map(async (key) => {
        const [host, port] = key.split('|') as [string, string];
        try {
          const recs = usableTlsa(await dane.resolveTlsa(`_${port}._tcp.${host}`));
          byHost.set(key, recs.length > 0 ? recs : null);
        } catch (err) {
          const code = codeOf(err);
          byHost.set(key, code === 'ENODATA' || code === 'ENOTFOUND' ? null : 'fail');
        }
      }));
      const usable = allowed.filter((h) => byHost.get(`${h.host}|${h.port}`) !== 'fail');
      if (usable.length === 0) return { failure: deferred('4.7.5', `TLSA lookup failed for every MX host of ${domain} (DANE)`) };
      if (usable.length !== allowed.length) this.#logger.warn('DANE: TLSA lookup failed; hosts skipped', { domain, hosts: allowed.filter((h) => !usable.includes(h)).map((h) => h.host) });
      allowed = usable;
      const inner = forHop;
      forHop = (hop) => {
        const recs = byHost.get(`${hop.host}|${hop.port}`);
        if (recs === undefined || recs === null || recs === 'fail') return inner(hop);
        return { mode: 'required', verify: false, servername: hop.host, check: (tls) => daneCheck(recs, tls), source: 'DANE' };
      };
    }
    return { forHop, hops: allowed, source };
  }
}
