/**
 * The self-audit history on PostgreSQL (migrations/postgres/008_audit.sql): every node's reports in one table,
 * the report as JSONB. Same contract as sqlite-audit.ts (newest `keep` reports per node kept).
 * Connection trouble rejects with ERR_STORE_UNAVAILABLE.
 */
import type { Pool } from 'pg';
import type { Logger } from '../core/log.ts';
import { openCheckedPool, poolQuery } from './postgres-pool.ts';
import type { Migration } from './postgres-schema.ts';
import type { AuditReportStore, StoredAuditReport } from './sqlite-audit.ts';

export interface PostgresAuditOptions {
  readonly poolSize?: number;
  readonly keep?: number;
  readonly logger?: Logger;
  readonly migrations?: readonly Migration[];
}

export class PostgresAuditStore<T extends StoredAuditReport> implements AuditReportStore<T> {
  readonly #pool: Pool;
  readonly #where: string;
  readonly #keep: number;
  #closed: Promise<void> | null = null;

  private constructor(pool: Pool, where: string, keep: number) {
    this.#pool = pool;
    this.#where = where;
    this.#keep = keep;
  }

  static async open<T extends StoredAuditReport>(url: string, options: PostgresAuditOptions = {}): Promise<PostgresAuditStore<T>> {
    const { pool, where } = await openCheckedPool(url, {
      store: 'audit', poolSize: options.poolSize ?? 2, connectTimeoutMs: 2000, queryTimeoutMs: 10_000,
      ...(options.migrations ? { migrations: options.migrations } : {}), ...(options.logger ? { logger: options.logger } : {}),
    });
    return new PostgresAuditStore<T>(pool, where, Math.max(1, options.keep ?? 400));
  }

  async #q(text: string, values: unknown[] = []): Promise<Record<string, unknown>[]> {
    return (await poolQuery(this.#pool, this.#where, text, values)).rows;
  }

  async save(report: T): Promise<void> {
    await this.#q(
      `WITH ins AS (INSERT INTO audit_reports (node, started_at, exit_code, status, report) VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id)
       DELETE FROM audit_reports WHERE node = $1 AND id < (
         SELECT COALESCE(MIN(id), 0) FROM (SELECT id FROM audit_reports WHERE node = $1 ORDER BY id DESC LIMIT $6) AS newest)`,
      [report.node, report.startedAt, report.exitCode, report.status, JSON.stringify(report), this.#keep - 1],
    );
  }

  async list(node: string | null, limit: number): Promise<T[]> {
    const rows = node === null
      ? await this.#q('SELECT report FROM audit_reports ORDER BY id DESC LIMIT $1', [limit])
      : await this.#q('SELECT report FROM audit_reports WHERE node = $1 ORDER BY id DESC LIMIT $2', [node, limit]);
    return rows.map((r) => r['report'] as T);
  }

  close(): Promise<void> {
    this.#closed ??= this.#pool.end();
    return this.#closed;
  }
}
