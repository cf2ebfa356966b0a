/**
 * The counters port (policy/counters.ts) on PostgreSQL: every node's AUTH throttle counts in one table
 * (migrations/postgres/004_counters.sql). Each operation is one round trip: take/add call relayguard_counter_hit()
 * (an upsert that locks the key's row, so racing nodes cannot count past the limit), refund/reset/sweep are one
 * UPDATE/DELETE each. Connection trouble rejects with ERR_STORE_UNAVAILABLE.
 */
import type { Pool } from 'pg';
import type { Logger } from '../core/log.ts';
import { applyWindow, type CounterStore, type WindowOptions, type WindowState } from '../policy/counters.ts';
import { isDeadConnection, isUnavailable, unavailable } from './postgres-directory.ts';
import { openCheckedPool } from './postgres-pool.ts';
import type { Migration } from './postgres-schema.ts';

export interface PostgresCountersOptions {
  /** Connections in the pool. Default 4. */
  readonly poolSize?: number;
  /** Longest wait for a connection. Default 2000 ms (an AUTH waits on it). */
  readonly connectTimeoutMs?: number;
  /** Longest a statement may run. Default 2000 ms. */
  readonly queryTimeoutMs?: number;
  readonly logger?: Logger;
  readonly migrations?: readonly Migration[];
}

function toState(counted: boolean, events: readonly (string | number)[]): WindowState {
  const list = events.map(Number);
  return { counted, count: list.length, oldest: list[0] ?? null };
}

export class PostgresCounterStore implements CounterStore {
  readonly kind = 'postgres';
  readonly #pool: Pool;
  readonly #where: string;
  #closed: Promise<void> | null = null;

  private constructor(pool: Pool, where: string) {
    this.#pool = pool;
    this.#where = where;
  }

  /** Connects and checks the schema (as the directory store does). */
  static async open(url: string, options: PostgresCountersOptions = {}): Promise<PostgresCounterStore> {
    const { pool, where } = await openCheckedPool(url, {
      store: 'counters', poolSize: options.poolSize ?? 4, connectTimeoutMs: options.connectTimeoutMs ?? 2000, queryTimeoutMs: options.queryTimeoutMs ?? 2000,
      ...(options.migrations ? { migrations: options.migrations } : {}), ...(options.logger ? { logger: options.logger } : {}),
    });
    return new PostgresCounterStore(pool, where);
  }

  async #query<R extends Record<string, unknown>>(name: string, text: string, values: unknown[]): Promise<R[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return (await this.#pool.query<R>({ name, text, values })).rows;
      } catch (err) {
        // A pooled connection the server closed (restart): once more on a fresh one.
        if (attempt === 1 && isDeadConnection(err)) continue;
        throw isUnavailable(err) ? unavailable(err, this.#where) : err;
      }
    }
  }

  async #hit(key: string, o: WindowOptions, force: boolean): Promise<WindowState> {
    const rows = await this.#query<{ counted: boolean; events: string[] }>(
      'rg_counter_hit', 'SELECT counted, events FROM relayguard_counter_hit($1, $2, $3, $4, $5)',
      [key, o.now, o.windowMs, o.limit, force],
    );
    return toState(rows[0]!.counted, rows[0]!.events);
  }

  take(key: string, options: WindowOptions): Promise<WindowState> {
    return this.#hit(key, options, false);
  }

  add(key: string, options: WindowOptions): Promise<WindowState> {
    return this.#hit(key, options, true);
  }

  async refund(key: string, at: number): Promise<void> {
    await this.#query('rg_counter_refund',
      `UPDATE rate_counters SET events = events[1:array_position(events, $2::bigint) - 1] || events[array_position(events, $2::bigint) + 1:]
       WHERE key = $1 AND $2::bigint = ANY(events)`, [key, at]);
  }

  async peek(key: string, options: Omit<WindowOptions, 'limit'>): Promise<WindowState> {
    const rows = await this.#query<{ events: string[] }>('rg_counter_peek', 'SELECT events FROM rate_counters WHERE key = $1', [key]);
    return applyWindow((rows[0]?.events ?? []).map(Number), 'peek', options).state;
  }

  async reset(key: string): Promise<void> {
    await this.#query('rg_counter_reset', 'DELETE FROM rate_counters WHERE key = $1', [key]);
  }

  async sweep(before: number): Promise<number> {
    try {
      return (await this.#pool.query('DELETE FROM rate_counters WHERE newest <= $1', [before])).rowCount ?? 0;
    } catch (err) {
      throw isUnavailable(err) ? unavailable(err, this.#where) : err;
    }
  }

  close(): Promise<void> {
    this.#closed ??= this.#pool.end();
    return this.#closed;
  }
}
