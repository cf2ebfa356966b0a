/**
 * The audit's DNS client: every answer is a value that says what happened, so a check can tell "no such record"
 * (a fact about the zone) from "no answer" (a fact about the network), and never mistakes the second for the first.
 *
 * - ok: records (possibly after CNAME following, done by the server).
 * - none: NXDOMAIN ('nxdomain') or the name exists without records of the type ('nodata'). Both are "void" lookups
 *   in the sense of RFC 7208 section 4.6.4.
 * - unreachable: a timeout, a refused or unreachable server, a cancelled query. A check reports it as 'unreachable'.
 * - broken: SERVFAIL, REFUSED, FORMERR, a malformed answer (EBADRESP...). A check reports it as 'broken'.
 *
 * The default implementation is node:dns promises.Resolver with setServers (which takes "ip:port", so tests ask a
 * BIND on a loopback port) and a per-query deadline on top of the resolver's own timeout.
 *
 * Trust: talks to the configured DNS servers only; answers are untrusted text.
 */
import { promises as dnsPromises } from 'node:dns';

export type DnsAnswer<T> =
  | { readonly kind: 'ok'; readonly records: T }
  | { readonly kind: 'none'; readonly reason: 'nxdomain' | 'nodata' }
  | { readonly kind: 'unreachable'; readonly code: string; readonly detail: string }
  | { readonly kind: 'broken'; readonly code: string; readonly detail: string };

export interface MxRecord { readonly exchange: string; readonly priority: number }
export interface TlsaRecord { readonly certUsage: number; readonly selector: number; readonly match: number; readonly data: Uint8Array }

/** What the audit asks of DNS. Every method resolves (never rejects) with a DnsAnswer. */
export interface AuditResolver {
  txt(name: string): Promise<DnsAnswer<string[]>>;
  mx(name: string): Promise<DnsAnswer<MxRecord[]>>;
  a(name: string): Promise<DnsAnswer<string[]>>;
  aaaa(name: string): Promise<DnsAnswer<string[]>>;
  ptr(ip: string): Promise<DnsAnswer<string[]>>;
  tlsa(name: string): Promise<DnsAnswer<TlsaRecord[]>>;
}

const NONE: Readonly<Record<string, 'nxdomain' | 'nodata'>> = { ENOTFOUND: 'nxdomain', ENODATA: 'nodata' };
const UNREACHABLE = new Set(['ETIMEOUT', 'ETIMEDOUT', 'ECONNREFUSED', 'ECANCELLED', 'ENETUNREACH', 'EHOSTUNREACH', 'ECONNRESET', 'EDESTRUCTION', 'ABORT_ERR']);

/** Classifies a node:dns error. */
export function classifyDnsError<T>(err: unknown): DnsAnswer<T> {
  const code = (err as { code?: unknown } | null)?.code;
  const c = typeof code === 'string' ? code : 'EUNKNOWN';
  const detail = err instanceof Error ? err.message : String(err);
  const none = NONE[c];
  if (none !== undefined) return { kind: 'none', reason: none };
  if (UNREACHABLE.has(c)) return { kind: 'unreachable', code: c, detail };
  return { kind: 'broken', code: c, detail };
}

export interface NodeResolverOptions {
  /** "ip" or "ip:port" ("[v6]:port"). */
  readonly servers: readonly string[];
  /** Deadline of one query, ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Tries per server (node:dns). Default 2. */
  readonly tries?: number;
  readonly signal?: AbortSignal;
}

/** An AuditResolver over node:dns promises.Resolver. */
export function nodeResolver(options: NodeResolverOptions): AuditResolver {
  const timeoutMs = options.timeoutMs ?? 5000;
  const tries = options.tries ?? 2;
  const r = new dnsPromises.Resolver({ timeout: Math.max(100, Math.floor(timeoutMs / tries)), tries });
  if (options.servers.length > 0) r.setServers([...options.servers]);
  options.signal?.addEventListener('abort', () => r.cancel(), { once: true });

  const ask = async <T>(fn: () => Promise<T>, empty: (v: T) => boolean): Promise<DnsAnswer<T>> => {
    if (options.signal?.aborted) return { kind: 'unreachable', code: 'ABORT_ERR', detail: 'audit aborted' };
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<DnsAnswer<T>>((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'unreachable', code: 'ETIMEOUT', detail: `no answer within ${timeoutMs} ms` }), timeoutMs + 250);
    });
    const query = fn().then(
      (v): DnsAnswer<T> => (empty(v) ? { kind: 'none', reason: 'nodata' } : { kind: 'ok', records: v }),
      (err: unknown) => classifyDnsError<T>(err),
    );
    try {
      return await Promise.race([query, deadline]);
    } finally {
      clearTimeout(timer);
    }
  };

  return {
    txt: (name) => ask(async () => (await r.resolveTxt(name)).map((chunks) => chunks.join('')), (v) => v.length === 0),
    mx: (name) => ask(async () => (await r.resolveMx(name)).map((m) => ({ exchange: m.exchange, priority: m.priority })), (v) => v.length === 0),
    a: (name) => ask(() => r.resolve4(name), (v) => v.length === 0),
    aaaa: (name) => ask(() => r.resolve6(name), (v) => v.length === 0),
    ptr: (ip) => ask(() => r.reverse(ip), (v) => v.length === 0),
    tlsa: (name) => ask(async () => (await r.resolveTlsa(name)).map((t) => ({
      certUsage: t.certUsage, selector: t.selector, match: t.match, data: new Uint8Array(t.data),
    })), (v) => v.length === 0),
  };
}

/** "example.com." -> "example.com", lower case. */
export function normName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
