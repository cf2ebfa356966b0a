/**
 * The counters port (policy/counters.ts) on a SQLite file, for several worker processes of one machine (serve with
 * workers on the embedded database): every worker opens the same file (dataDir/counters.db), so the AUTH throttle
 * holds across them. Each operation is one short BEGIN IMMEDIATE transaction (the file lock serializes racing
 * workers, so a take never counts past the limit); busy_timeout makes a worker wait for another's transaction.
 *
 * A file of its own, not relayguard.db: counters are written on every AUTH attempt and are short-lived, so they
 * use synchronous=NORMAL (a power cut may forget the last failures, never corrupt the file) and never make a
 * directory write wait. node:sqlite is synchronous: an operation finishes before its promise settles.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { applyWindow, refundWindow, type CounterStore, type WindowOptions, type WindowState } from '../policy/counters.ts';
import { immediate, openSqliteFile } from './sqlite-common.ts';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS rate_counters (
    key TEXT PRIMARY KEY NOT NULL,
    events TEXT NOT NULL,        -- JSON array of ms times, oldest first
    newest INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS rate_counters_newest ON rate_counters(newest);
`;

export class SqliteCounterStore implements CounterStore {
  readonly kind = 'sqlite';
  readonly #db: DatabaseSync;
  readonly #get: StatementSync;
  readonly #put: StatementSync;
  readonly #del: StatementSync;

  /** `file`: a path (shared by the processes that must count together) or ":memory:". */
  constructor(file: string) {
    this.#db = openSqliteFile(file, { synchronous: 'NORMAL', busyTimeoutMs: 5000 }).db;
    this.#db.exec(SCHEMA);
    this.#get = this.#db.prepare('SELECT events FROM rate_counters WHERE key = ?');
    this.#put = this.#db.prepare('INSERT INTO rate_counters (key, events, newest) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET events = excluded.events, newest = excluded.newest');
    this.#del = this.#db.prepare('DELETE FROM rate_counters WHERE key = ?');
  }

  #events(key: string): number[] {
    const row = this.#get.get(key);
    return row === undefined ? [] : (JSON.parse(String(row['events'])) as number[]);
  }

  #write(key: string, events: readonly number[]): void {
    if (events.length === 0) this.#del.run(key);
    else this.#put.run(key, JSON.stringify(events), events[events.length - 1]!);
  }

  #transaction<T>(fn: () => T): T {
    return immediate(this.#db, fn);
  }

  #hit(key: string, o: WindowOptions, op: 'take' | 'add'): WindowState {
    return this.#transaction(() => {
      const r = applyWindow(this.#events(key), op, o);
      if (r.state.counted) this.#write(key, r.events);
      return r.state;
    });
  }

  async take(key: string, options: WindowOptions): Promise<WindowState> {
    return this.#hit(key, options, 'take');
  }

  async add(key: string, options: WindowOptions): Promise<WindowState> {
    return this.#hit(key, options, 'add');
  }

  async refund(key: string, at: number): Promise<void> {
    this.#transaction(() => {
      const events = this.#events(key);
      if (events.includes(at)) this.#write(key, refundWindow(events, at));
    });
  }

  async peek(key: string, options: Omit<WindowOptions, 'limit'>): Promise<WindowState> {
    return applyWindow(this.#events(key), 'peek', options).state;
  }

  async reset(key: string): Promise<void> {
    this.#del.run(key);
  }

  async sweep(before: number): Promise<number> {
    return Number(this.#db.prepare('DELETE FROM rate_counters WHERE newest <= ?').run(before).changes);
  }

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }
}
