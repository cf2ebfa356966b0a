/**
 * The self-audit history (src/audit history port AuditHistory) on the embedded SQLite database dataDir/audit.db (its
 * own file: reports are written by `serve`'s periodic job and by `relayguard audit` from another process):
 *   audit_reports(id PK autoincrement, node, started_at, exit_code, status, report JSON)
 * The newest `keep` reports of each node are kept; older ones are deleted when a report is saved.
 * The store knows a report only as JSON with the few fields it indexes (StoredAuditReport), so it needs nothing of
 * src/audit (the import rules: store does not import audit).
 */
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { immediate, openSqliteFile } from './sqlite-common.ts';

/** What the store reads of a report (src/audit's AuditReport has these fields). */
export interface StoredAuditReport {
  readonly node: string;
  readonly startedAt: number;
  readonly exitCode: number;
  readonly status: string;
}

/** The history port as the store implements it (structurally src/audit's AuditHistory). */
export interface AuditReportStore<T extends StoredAuditReport> {
  save(report: T): Promise<void>;
  /** Newest first. */
  list(node: string | null, limit: number): Promise<T[]>;
  close(): Promise<void>;
}

export const sqliteAuditPath = (dataDir: string): string => join(dataDir, 'audit.db');

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS audit_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    exit_code INTEGER NOT NULL,
    status TEXT NOT NULL,
    report TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS audit_reports_node ON audit_reports (node, id);
`;

export class SqliteAuditStore<T extends StoredAuditReport> implements AuditReportStore<T> {
  readonly #db: DatabaseSync;
  readonly #owns: boolean;
  readonly #keep: number;

  constructor(database: string | DatabaseSync, options: { keep?: number } = {}) {
    ({ db: this.#db, owns: this.#owns } = openSqliteFile(database, { synchronous: 'NORMAL', busyTimeoutMs: 5000 }));
    this.#db.exec(SCHEMA);
    this.#keep = Math.max(1, options.keep ?? 400);
  }

  async save(report: T): Promise<void> {
    immediate(this.#db, () => {
      this.#db.prepare('INSERT INTO audit_reports (node, started_at, exit_code, status, report) VALUES (?, ?, ?, ?, ?)')
        .run(report.node, report.startedAt, report.exitCode, report.status, JSON.stringify(report));
      this.#db.prepare(`DELETE FROM audit_reports WHERE node = ? AND id NOT IN (SELECT id FROM audit_reports WHERE node = ? ORDER BY id DESC LIMIT ?)`)
        .run(report.node, report.node, this.#keep);
    });
  }

  async list(node: string | null, limit: number): Promise<T[]> {
    const rows = node === null
      ? this.#db.prepare('SELECT report FROM audit_reports ORDER BY id DESC LIMIT ?').all(limit)
      : this.#db.prepare('SELECT report FROM audit_reports WHERE node = ? ORDER BY id DESC LIMIT ?').all(node, limit);
    return rows.map((r) => JSON.parse(String((r as { report: string }).report)) as T);
  }

  async close(): Promise<void> {
    if (this.#owns && this.#db.isOpen) this.#db.close();
  }
}
