/**
 * The AUTH failure throttle over a CounterStore (counters.ts) shared by worker processes (SQLite file) or nodes
 * (PostgreSQL): the same rule as AuthThrottle (auth-throttle.ts), held across the cluster.
 *
 * Order, as on one node: acquire() counts the attempt as a failure in the shared store BEFORE the password check
 * (one `take`: counted only while fewer than maxFailures are in the window, atomically in the store), so guesses
 * sent in parallel to several nodes cannot all pass a gate that learns of their failure later; recordFailure()
 * only confirms (no round trip); recordSuccess() refunds the counted attempt (one round trip, which the caller need
 * not wait for). The store's answer is the whole truth: no local "probably fine" shortcut admits an attempt.
 *
 * Local fast path (safe, refusals only): when the store says a client is over the limit, this node remembers until
 * when (the oldest failure leaving the window) and refuses that client without a round trip until then. Failures
 * counted elsewhere only push that time later; what could end it sooner (a refund of an attempt that was in flight
 * when the limit was reached and then succeeded, an operator's reset on another node) leaves this node stricter
 * than the store for at most one window, never looser. An attack therefore costs the store one refused `take` per
 * client and window per node beyond the maxFailures counted ones, whatever its volume.
 * What costs a round trip: each admitted AUTH attempt (one `take`, sub-millisecond next to the scrypt check of
 * tens of milliseconds that follows it) and each refund after a success.
 *
 * A store that cannot be reached: acquire() rejects with ERR_STORE_UNAVAILABLE (the caller answers 454 4.7.0,
 * neither 235 nor 535).
 */
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { clientKey, type ThrottleResult } from './auth-throttle.ts';
import type { CounterStore } from './counters.ts';

/** What the receive path needs of an AUTH throttle: AuthThrottle (one process) and SharedAuthThrottle both fit. */
export interface AuthGate {
  readonly maxFailures: number;
  readonly windowMs: number;
  /** Counts the attempt and admits it, or refuses the client. May reject (store unavailable): a temporary failure. */
  acquire(ip: string): ThrottleResult | Promise<ThrottleResult>;
  /** Confirms a failed attempt. */
  recordFailure(ip: string): unknown;
  /** Refunds the attempt acquire() counted. */
  recordSuccess(ip: string): unknown;
}

export interface SharedAuthThrottleOptions {
  readonly store: CounterStore;
  /** Failures allowed within `windowMs`. Default 10. */
  readonly maxFailures?: number;
  /** Default 60 000. */
  readonly windowMs?: number;
  /** IPv6 grouping. Default 64. */
  readonly ipv6PrefixLength?: number;
  readonly clock?: Clock;
  /** Key prefix in the store. Default "auth:". */
  readonly prefix?: string;
}

const ALLOWED: ThrottleResult = Object.freeze({ allowed: true });

export class SharedAuthThrottle implements AuthGate {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly #store: CounterStore;
  readonly #v6prefix: number;
  readonly #clock: Clock;
  readonly #prefix: string;
  /** Client key -> until when the store said it is refused (the local fast path). */
  readonly #refused = new Map<string, number>();
  /** Client key -> times of attempts counted by acquire() and neither confirmed nor refunded yet. */
  readonly #inFlight = new Map<string, number[]>();

  constructor(options: SharedAuthThrottleOptions) {
    this.#store = options.store;
    this.maxFailures = options.maxFailures ?? 10;
    this.windowMs = options.windowMs ?? 60_000;
    this.#v6prefix = options.ipv6PrefixLength ?? 64;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#prefix = options.prefix ?? 'auth:';
  }

  /** Clients refused locally now (metrics, tests). */
  get refusedLocally(): number {
    return this.#refused.size;
  }

  async acquire(ip: string): Promise<ThrottleResult> {
    const key = clientKey(ip, this.#v6prefix);
    const now = this.#clock.now();
    const until = this.#refused.get(key);
    if (until !== undefined) {
      if (until > now) return { allowed: false, retryAfterMs: until - now };
      this.#refused.delete(key);
    }
    // Several attempts of one client in flight on this node may all use one `now`; give each its own time so a
    // refund removes exactly its own event.
    let at = now;
    const flying = this.#inFlight.get(key);
    while (flying?.includes(at)) at++;
    const state = await this.#store.take(this.#prefix + key, { now: at, windowMs: this.windowMs, limit: this.maxFailures });
    if (!state.counted) {
      const retry = Math.max(1, (state.oldest ?? at) + this.windowMs - now);
      this.#remember(key, now + retry);
      return { allowed: false, retryAfterMs: retry };
    }
    this.#inFlight.set(key, [...(flying ?? []), at]);
    return ALLOWED;
  }

  /**
   * Confirms the failed attempt acquire() counted (no round trip). A failure without an acquire() before it is
   * counted now (one `add`; the promise settles when the store has it).
   */
  recordFailure(ip: string): Promise<void> | void {
    const key = clientKey(ip, this.#v6prefix);
    if (this.#take(key) !== null) return;
    return this.#store.add(this.#prefix + key, { now: this.#clock.now(), windowMs: this.windowMs, limit: this.maxFailures }).then(() => {});
  }

  /** Refunds the attempt; resolves when the store has it (callers may go on without waiting). */
  async recordSuccess(ip: string): Promise<void> {
    const key = clientKey(ip, this.#v6prefix);
    const at = this.#take(key);
    if (at !== null) await this.#store.refund(this.#prefix + key, at);
  }

  /** Forgets a client here and in the store. */
  async reset(ip: string): Promise<void> {
    const key = clientKey(ip, this.#v6prefix);
    this.#refused.delete(key);
    this.#inFlight.delete(key);
    await this.#store.reset(this.#prefix + key);
  }

  #take(key: string): number | null {
    const list = this.#inFlight.get(key);
    if (!list || list.length === 0) return null;
    const at = list.pop()!;
    if (list.length === 0) this.#inFlight.delete(key);
    return at;
  }

  #remember(key: string, until: number): void {
    this.#refused.set(key, until);
    if (this.#refused.size > 100_000) {
      const now = this.#clock.now();
      for (const [k, u] of this.#refused) if (u <= now || this.#refused.size > 100_000) this.#refused.delete(k);
    }
  }
}
