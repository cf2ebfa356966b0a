/**
 * The tester-run store port (policy/tester-runs.ts) on PostgreSQL (migrations/postgres/007_tester_runs.sql): the
 * runs of every node in one table (the dashboard of any node lists them all; each node aborts only its own).
 * Connection trouble rejects with ERR_STORE_UNAVAILABLE.
 */
import type { Pool } from 'pg';
import type { Logger } from '../core/log.ts';
import type { NewTesterRun, TesterRunOutcome, TesterRunRecord, TesterRunState, TesterRunStore, TesterRunSummary } from '../policy/tester-runs.ts';
import { openCheckedPool, poolQuery } from './postgres-pool.ts';
import type { Migration } from './postgres-schema.ts';
import { toSummary } from './sqlite-tester-runs.ts';

export interface PostgresTesterRunOptions {
  readonly poolSize?: number;
  readonly logger?: Logger;
  readonly migrations?: readonly Migration[];
}

const SUMMARY = 'seq, id, node, actor, target, options, addresses, state, verdict, exit_code, error, created_at, finished_at';

export class PostgresTesterRunStore implements TesterRunStore {
  readonly #pool: Pool;
  readonly #where: string;
  #closed: Promise<void> | null = null;

  private constructor(pool: Pool, where: string) {
    this.#pool = pool;
    this.#where = where;
  }

  static async open(url: string, options: PostgresTesterRunOptions = {}): Promise<PostgresTesterRunStore> {
    const { pool, where } = await openCheckedPool(url, {
      store: 'tester-runs', poolSize: options.poolSize ?? 2, connectTimeoutMs: 2000, queryTimeoutMs: 10_000,
      ...(options.migrations ? { migrations: options.migrations } : {}), ...(options.logger ? { logger: options.logger } : {}),
    });
    return new PostgresTesterRunStore(pool, where);
  }

  #q(text: string, values: unknown[] = []): Promise<{ rows: Record<string, unknown>[]; rowCount: number }> {
    return poolQuery(this.#pool, this.#where, text, values);
  }

  async create(r: NewTesterRun): Promise<void> {
    await this.#q(
      `INSERT INTO tester_runs (id, node, actor, target, options, addresses, state, created_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, 'running', $7)`,
      [r.id, r.node, r.actor, r.target, JSON.stringify(r.options ?? null), JSON.stringify(r.addresses), r.createdAt],
    );
  }

  async finish(id: string, o: TesterRunOutcome): Promise<boolean> {
    const r = await this.#q(
      `UPDATE tester_runs SET state = $1, verdict = $2, exit_code = $3, error = $4, report = $5::jsonb, finished_at = $6 WHERE id = $7 AND state = 'running'`,
      [o.state, o.verdict, o.exitCode, o.error, o.report === null || o.report === undefined ? null : JSON.stringify(o.report), o.finishedAt, id],
    );
    return r.rowCount === 1;
  }

  async get(id: string): Promise<TesterRunRecord | null> {
    const r = await this.#q(`SELECT ${SUMMARY}, report FROM tester_runs WHERE id = $1`, [id]);
    const row = r.rows[0];
    if (!row) return null;
    return { ...toSummary(row), report: row['report'] ?? null };
  }

  async list(f: { limit: number; before?: number; state?: TesterRunState }): Promise<TesterRunSummary[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.before !== undefined) { args.push(f.before); where.push(`seq < $${args.length}`); }
    if (f.state !== undefined) { args.push(f.state); where.push(`state = $${args.length}`); }
    args.push(f.limit);
    const r = await this.#q(`SELECT ${SUMMARY} FROM tester_runs${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT $${args.length}`, args);
    return r.rows.map(toSummary);
  }

  async abortRunning(node: string, error: string, at: number): Promise<number> {
    return (await this.#q(`UPDATE tester_runs SET state = 'aborted', error = $1, finished_at = $2 WHERE node = $3 AND state = 'running'`, [error, at, node])).rowCount;
  }

  async prune(keep: number): Promise<number> {
    const edge = await this.#q('SELECT seq FROM tester_runs ORDER BY seq DESC LIMIT 1 OFFSET $1', [keep]);
    if (edge.rows.length === 0) return 0;
    return (await this.#q(`DELETE FROM tester_runs WHERE seq <= $1 AND state <> 'running'`, [edge.rows[0]!['seq']])).rowCount;
  }

  async close(): Promise<void> {
    this.#closed ??= this.#pool.end();
    return this.#closed;
  }
}
