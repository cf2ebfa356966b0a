/**
 * Per-client state that outlives a session (Postfix anvil): AUTH failure throttling and concurrent connection
 * counts. One instance per process, shared by all listeners, so reconnecting does not reset anything. (Across
 * processes and nodes, the AUTH throttle runs over a shared CounterStore instead: shared-auth-throttle.ts.)
 *
 * Clients are grouped by `clientKey`: an IPv4 address (IPv4-mapped IPv6 folded to IPv4) counts alone, an IPv6
 * address counts with its whole /64, since one host usually controls a /64.
 */
import ipaddr from 'ipaddr.js';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';

/**
 * The key a client's counters are kept under: "1.2.3.4", or "2001:db8:1:2::/64" for IPv6 (prefix configurable).
 * Anything that is not an IP address is used as given (lower-cased), so it is still counted.
 */
export function clientKey(ip: string, ipv6PrefixLength = 64): string {
  const s = ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip;
  if (ipaddr.IPv4.isValidFourPartDecimal(s)) return s;
  if (!s.includes(':') || !ipaddr.IPv6.isValid(s)) return ip.toLowerCase();
  const addr = ipaddr.IPv6.parse(s);
  if (addr.isIPv4MappedAddress()) return addr.toIPv4Address().toString();
  const bytes = addr.toByteArray();
  const prefix = Math.max(0, Math.min(128, ipv6PrefixLength));
  for (let bit = prefix; bit < 128; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return `${ipaddr.fromByteArray(bytes).toString()}/${prefix}`;
}

export type ThrottleResult = { readonly allowed: true } | { readonly allowed: false; readonly retryAfterMs: number };

export interface AuthThrottleOptions {
  /** Failures allowed within `windowMs` before the client is refused. Default 10. */
  readonly maxFailures?: number;
  /** Length of the sliding window in ms. Default 60 000. */
  readonly windowMs?: number;
  /** Most clients tracked at once; the least recently failing is forgotten first. Default 100 000. */
  readonly maxTrackedClients?: number;
  /** IPv6 grouping. Default 64. */
  readonly ipv6PrefixLength?: number;
  readonly clock?: Clock;
}

const ALLOWED: ThrottleResult = Object.freeze({ allowed: true });

/**
 * Sliding-window AUTH failure limit. After `maxFailures` failures within `windowMs`, the client is refused until
 * the oldest of those failures leaves the window (so at most `maxFailures` guesses per window, whatever the number
 * of connections). The caller replies `450 4.7.1 Error: too many AUTH failures from <ip>` and does not run the
 * AUTH exchange while refused.
 *
 * Use `acquire` before the password check, not `check`: it counts the attempt as a failure at once (the password
 * check takes a while, scrypt), so N guesses in parallel from one client cannot all pass a gate that only later
 * learns they failed: at most `maxFailures` of them run the password check per window, the rest are refused.
 * Then `recordFailure` confirms the counted attempt (counts nothing more) and `recordSuccess` refunds it:
 *
 *     const gate = throttle.acquire(ip);          // counts the attempt
 *     if (!gate.allowed) return throttled(gate.retryAfterMs);
 *     if (await passwordOk()) throttle.recordSuccess(ip);   // refund
 *     else throttle.recordFailure(ip);                      // already counted
 *
 * An attempt that is neither confirmed nor refunded (the check threw) stays counted as a failure.
 *
 * `recordSuccess` deliberately does not clear earlier failures: otherwise an attacker holding one valid account
 * could log in between guesses at other accounts and never be throttled.
 *
 * Memory: at most `maxTrackedClients` entries of at most `maxFailures` timestamps each. Entries are kept in
 * order of their last failure; expired entries are dropped from the front as new failures arrive.
 */
export class AuthThrottle {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly #maxTracked: number;
  readonly #v6prefix: number;
  readonly #clock: Clock;
  /** Key -> timestamps of the most recent failures (attempts in progress included), oldest first, at most maxFailures. */
  readonly #failures = new Map<string, number[]>();
  /** Key -> attempts counted by acquire() and neither confirmed nor refunded yet. */
  readonly #inFlight = new Map<string, number>();

  constructor(options: AuthThrottleOptions = {}) {
    this.maxFailures = positiveInt(options.maxFailures ?? 10, 'maxFailures');
    this.windowMs = positiveInt(options.windowMs ?? 60_000, 'windowMs');
    this.#maxTracked = positiveInt(options.maxTrackedClients ?? 100_000, 'maxTrackedClients');
    this.#v6prefix = options.ipv6PrefixLength ?? 64;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
  }

  /** Number of clients currently tracked (for metrics). */
  get size(): number {
    return this.#failures.size;
  }

  /** Whether the client may attempt AUTH now. Counts nothing: the AUTH path uses acquire(). */
  check(ip: string): ThrottleResult {
    const key = clientKey(ip, this.#v6prefix);
    const list = this.#failures.get(key);
    if (!list) return ALLOWED;
    const now = this.#clock.now();
    this.#expire(list, now);
    if (list.length === 0) {
      this.#failures.delete(key);
      this.#inFlight.delete(key); // an attempt older than the window: nothing left to confirm or refund
      return ALLOWED;
    }
    if (list.length < this.maxFailures) return ALLOWED;
    return { allowed: false, retryAfterMs: Math.max(1, list[0]! + this.windowMs - now) };
  }

  /**
   * Admits one AUTH attempt and counts it as a failure right away (see the class comment), or refuses the client
   * without counting. Follow an allowed attempt with recordFailure or recordSuccess.
   */
  acquire(ip: string): ThrottleResult {
    const gate = this.check(ip);
    if (!gate.allowed) return gate;
    const key = clientKey(ip, this.#v6prefix);
    this.#count(key, this.#clock.now());
    this.#inFlight.set(key, (this.#inFlight.get(key) ?? 0) + 1);
    return ALLOWED;
  }

  /**
   * Counts one failed AUTH (an attempt counted by acquire is only confirmed, not counted twice); returns whether
   * the client may still try.
   */
  recordFailure(ip: string): ThrottleResult {
    const key = clientKey(ip, this.#v6prefix);
    if (this.#takeInFlight(key)) return this.check(ip);
    this.#count(key, this.#clock.now());
    return this.check(ip);
  }

  #takeInFlight(key: string): boolean {
    const n = this.#inFlight.get(key) ?? 0;
    if (n <= 0) return false;
    if (n === 1) this.#inFlight.delete(key);
    else this.#inFlight.set(key, n - 1);
    return true;
  }

  #count(key: string, now: number): void {
    let list = this.#failures.get(key);
    if (list) {
      this.#failures.delete(key); // re-insert at the end: the map stays ordered by last failure
      this.#expire(list, now);
    } else {
      list = [];
    }
    list.push(now);
    if (list.length > this.maxFailures) list.splice(0, list.length - this.maxFailures);
    this.#failures.set(key, list);
    this.#sweep(now);
  }

  /**
   * A successful AUTH: refunds the attempt acquire() counted (the newest count of the client; attempts running in
   * parallel were counted at about the same time). Earlier failures stay counted (see the class comment).
   */
  recordSuccess(ip: string): void {
    const key = clientKey(ip, this.#v6prefix);
    const refund = this.#takeInFlight(key);
    const list = this.#failures.get(key);
    if (!list) return;
    if (refund) list.pop();
    this.#expire(list, this.#clock.now());
    if (list.length === 0) {
      this.#failures.delete(key);
      this.#inFlight.delete(key);
    }
  }

  /** Forgets everything about a client (an operator's unblock). Attempts in progress are not refunded later. */
  reset(ip: string): void {
    const key = clientKey(ip, this.#v6prefix);
    this.#failures.delete(key);
    this.#inFlight.delete(key);
  }

  #expire(list: number[], now: number): void {
    const cutoff = now - this.windowMs;
    let n = 0;
    while (n < list.length && list[n]! <= cutoff) n++;
    if (n > 0) list.splice(0, n);
  }

  #sweep(now: number): void {
    const cutoff = now - this.windowMs;
    // Front entries failed least recently; drop those whose newest failure has left the window.
    for (const [key, list] of this.#failures) {
      const newest = list[list.length - 1];
      if (newest !== undefined && newest > cutoff && this.#failures.size <= this.#maxTracked) break;
      this.#failures.delete(key);
      this.#inFlight.delete(key);
    }
  }
}

export type AcquireResult = 'ok' | 'per-ip' | 'total';

export interface ConnectionCounterOptions {
  /** Concurrent connections per client (IPv4 address or IPv6 /64). */
  readonly perIp: number;
  /** Concurrent connections in total. */
  readonly total: number;
  /** IPv6 grouping. Default 64. */
  readonly ipv6PrefixLength?: number;
}

/**
 * Concurrent connection counts, per client and in total (Postfix `smtpd_client_connection_count_limit`), in this
 * process only, deliberately: sharing them over a cluster would cost two database writes per connection (open and
 * close) plus leases for a node that dies holding counts, on the hottest path there is (a PostgreSQL round trip
 * measured at ~0.3 ms, ~2,000 writes/s per node's pool on this machine: below the intake rate the cluster aims
 * at). The load balancer already sees every connection of every node: cluster-wide per-client limits (concurrency
 * and connection rate) belong in HAProxy's stick table (`track-sc0 src`, `sc0_conn_cur`, `sc0_conn_rate`); this
 * counter stays as each node's backstop. The AUTH throttle, where a per-attempt round trip is cheap next to the
 * scrypt check, is the one shared (shared-auth-throttle.ts).
 * Call `tryAcquire` on accept; on 'ok' call `release` exactly once when the connection closes. On 'per-ip' or
 * 'total' nothing was counted: reply `421 4.7.0 <host> Error: too many connections from <ip>` and close.
 */
export class ConnectionCounter {
  readonly perIp: number;
  readonly limit: number;
  readonly #v6prefix: number;
  readonly #counts = new Map<string, number>();
  #total = 0;

  constructor(options: ConnectionCounterOptions) {
    this.perIp = positiveInt(options.perIp, 'perIp');
    this.limit = positiveInt(options.total, 'total');
    this.#v6prefix = options.ipv6PrefixLength ?? 64;
  }

  tryAcquire(ip: string): AcquireResult {
    if (this.#total >= this.limit) return 'total';
    const key = clientKey(ip, this.#v6prefix);
    const n = this.#counts.get(key) ?? 0;
    if (n >= this.perIp) return 'per-ip';
    this.#counts.set(key, n + 1);
    this.#total++;
    return 'ok';
  }

  /** Releases one connection of this client. A release without a matching acquire is ignored. */
  release(ip: string): void {
    const key = clientKey(ip, this.#v6prefix);
    const n = this.#counts.get(key);
    if (n === undefined) return;
    if (n <= 1) this.#counts.delete(key);
    else this.#counts.set(key, n - 1);
    this.#total--;
  }

  /** Open connections of this client. */
  count(ip: string): number {
    return this.#counts.get(clientKey(ip, this.#v6prefix)) ?? 0;
  }

  /** Open connections in total. */
  get total(): number {
    return this.#total;
  }

  /** Number of distinct clients with open connections. */
  get clients(): number {
    return this.#counts.size;
  }
}

function positiveInt(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer, got ${n}`);
  return n;
}
