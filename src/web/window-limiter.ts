/**
 * A sliding-window rate limit per key (client address, listed address), in memory, bounded in keys: the least
 * recently used key is forgotten first. Used by the public ORDB pages (lookups per client and minute, delisting
 * requests per client and per listed address and hour). IPv6 clients are counted per /64 (clientKey), since one
 * host commonly holds a whole /64.
 *
 * Trust: keys come from the socket (never from a header a client writes); nothing here throws on odd input.
 */
import { canonicalIp } from '../core/canonical.ts';

export type Gate = { readonly ok: true } | { readonly ok: false; readonly retryAfterMs: number };

export class WindowLimiter {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #maxKeys: number;
  readonly #hits = new Map<string, number[]>();

  constructor(options: { limit: number; windowMs: number; maxKeys?: number }) {
    this.#limit = options.limit;
    this.#windowMs = options.windowMs;
    this.#maxKeys = options.maxKeys ?? 100_000;
  }

  /** Whether a hit would pass now, without recording it. */
  check(key: string, now: number): Gate {
    const times = (this.#hits.get(key) ?? []).filter((t) => t > now - this.#windowMs);
    return times.length >= this.#limit ? { ok: false, retryAfterMs: Math.max(1, times[0]! + this.#windowMs - now) } : { ok: true };
  }

  /** Records a hit, or says how long to wait (and records nothing). */
  take(key: string, now: number): Gate {
    const times = (this.#hits.get(key) ?? []).filter((t) => t > now - this.#windowMs);
    if (times.length >= this.#limit) {
      this.#hits.set(key, times);
      return { ok: false, retryAfterMs: Math.max(1, times[0]! + this.#windowMs - now) };
    }
    times.push(now);
    this.#hits.delete(key); // re-inserted: moves to the end (most recently used)
    this.#hits.set(key, times);
    for (const k of this.#hits.keys()) {
      if (this.#hits.size <= this.#maxKeys) break;
      this.#hits.delete(k);
    }
    return { ok: true };
  }
}

/** The rate-limit key of a client address: the address for IPv4, its /64 for IPv6. */
export function clientKey(address: string | undefined): string {
  const ip = canonicalIp(address ?? '') ?? 'unknown';
  if (!ip.includes(':')) return ip;
  const [head, tail = ''] = ip.split('::');
  const left = head === '' ? [] : head!.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = ip.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
