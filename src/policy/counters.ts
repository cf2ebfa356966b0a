/**
 * The counters port: sliding-window event counts per key (AUTH failures per client today), which every process and
 * node of a cluster must share so that an attacker spreading guesses over nodes or worker processes meets the same
 * limit as on one. Owned here, by its consumer (policy: the shared AUTH throttle); implemented in memory (one
 * process, below), on a SQLite file (several worker processes of one machine) and on PostgreSQL (a cluster), in
 * src/store, all held to one contract suite (counters.case.ts).
 *
 * The contract, for every implementation:
 * - A key holds the times of its most recent events (at most `limit`), oldest first; events at or before
 *   `now - windowMs` do not count and may be dropped at any call. Times are the caller's clock (ms since the epoch).
 * - take() counts one event only when fewer than `limit` are in the window, atomically: N callers racing on one key
 *   (other processes or nodes included) get at most `limit - count` events counted, never more.
 * - add() counts one event whatever the count (the oldest beyond `limit` are dropped).
 * - refund(key, at) removes one event counted at exactly `at` (no-op when there is none).
 * - Every operation is one round trip at most; a store that cannot be reached rejects with ERR_STORE_UNAVAILABLE
 *   (directory.ts), so the caller answers with a temporary failure rather than guessing.
 * - Keys are opaque strings chosen by the caller, with a prefix per use ("auth:1.2.3.4").
 */

/** The events of a key in the window after the call. */
export interface WindowState {
  /** Whether this call counted its event (take: only below the limit; add: always; peek: never). */
  readonly counted: boolean;
  /** Events in the window, this call's included. */
  readonly count: number;
  /** The oldest event in the window, or null when there is none. */
  readonly oldest: number | null;
}

export interface WindowOptions {
  readonly now: number;
  readonly windowMs: number;
  readonly limit: number;
}

export interface CounterStore {
  /** "memory", "sqlite" or "postgres" (logs, metrics). */
  readonly kind: string;
  take(key: string, options: WindowOptions): Promise<WindowState>;
  add(key: string, options: WindowOptions): Promise<WindowState>;
  refund(key: string, at: number): Promise<void>;
  /** The window of a key, counting nothing. */
  peek(key: string, options: Omit<WindowOptions, 'limit'>): Promise<WindowState>;
  /** Forgets a key (an operator's unblock). */
  reset(key: string): Promise<void>;
  /** Drops keys whose newest event is at or before `before`; returns how many went. */
  sweep(before: number): Promise<number>;
  close(): Promise<void>;
}

/**
 * Applies one operation to a key's event list (oldest first) and answers the new list: the one rule every
 * implementation follows (the SQL ones do the same in SQL; SQLite calls this function inside its transaction).
 */
export function applyWindow(events: readonly number[], op: 'take' | 'add' | 'peek', options: { now: number; windowMs: number; limit?: number }): { events: number[]; state: WindowState } {
  const cutoff = options.now - options.windowMs;
  const live = events.filter((e) => e > cutoff);
  const limit = options.limit ?? Number.POSITIVE_INFINITY;
  let counted = false;
  if (op === 'add' || (op === 'take' && live.length < limit)) {
    live.push(options.now);
    live.sort((a, b) => a - b);
    if (live.length > limit) live.splice(0, live.length - limit);
    counted = true;
  }
  return { events: live, state: { counted, count: live.length, oldest: live[0] ?? null } };
}

/** Removes one event at exactly `at`; the same list when there is none. */
export function refundWindow(events: readonly number[], at: number): number[] {
  const i = events.indexOf(at);
  return i < 0 ? [...events] : [...events.slice(0, i), ...events.slice(i + 1)];
}

export interface MemoryCountersOptions {
  /** Most keys kept; the least recently changed go first. Default 100 000. */
  readonly maxKeys?: number;
}

/** The counters of one process (tests, and the reference the contract suite is written against). */
export class MemoryCounterStore implements CounterStore {
  readonly kind = 'memory';
  readonly #keys = new Map<string, number[]>();
  readonly #maxKeys: number;

  constructor(options: MemoryCountersOptions = {}) {
    this.#maxKeys = options.maxKeys ?? 100_000;
  }

  #apply(key: string, op: 'take' | 'add' | 'peek', options: { now: number; windowMs: number; limit?: number }): WindowState {
    const r = applyWindow(this.#keys.get(key) ?? [], op, options);
    if (op !== 'peek') {
      this.#keys.delete(key); // re-insert at the end: least recently changed first
      if (r.events.length > 0) this.#keys.set(key, r.events);
      while (this.#keys.size > this.#maxKeys) this.#keys.delete(this.#keys.keys().next().value!);
    }
    return r.state;
  }

  async take(key: string, options: WindowOptions): Promise<WindowState> {
    return this.#apply(key, 'take', options);
  }

  async add(key: string, options: WindowOptions): Promise<WindowState> {
    return this.#apply(key, 'add', options);
  }

  async refund(key: string, at: number): Promise<void> {
    const list = this.#keys.get(key);
    if (list) this.#keys.set(key, refundWindow(list, at));
  }

  async peek(key: string, options: Omit<WindowOptions, 'limit'>): Promise<WindowState> {
    return this.#apply(key, 'peek', options);
  }

  async reset(key: string): Promise<void> {
    this.#keys.delete(key);
  }

  async sweep(before: number): Promise<number> {
    let n = 0;
    for (const [key, list] of this.#keys) {
      if ((list[list.length - 1] ?? -Infinity) <= before) {
        this.#keys.delete(key);
        n++;
      }
    }
    return n;
  }

  async close(): Promise<void> {
    this.#keys.clear();
  }
}
