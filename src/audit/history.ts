/**
 * Where audit reports are kept (the trend): a port the CLI fills with the store's adapter (src/store: dataDir/audit.db
 * or PostgreSQL's audit_reports), and an in-memory one for tests and for `relayguard audit --no-store`.
 */
import type { AuditReport } from './run.ts';

export interface AuditHistory {
  save(report: AuditReport): Promise<void>;
  /** Newest first; node null: every node's. */
  list(node: string | null, limit: number): Promise<AuditReport[]>;
  close(): Promise<void>;
}

export class MemoryAuditHistory implements AuditHistory {
  readonly reports: AuditReport[] = [];
  async save(report: AuditReport): Promise<void> { this.reports.unshift(report); }
  async list(node: string | null, limit: number): Promise<AuditReport[]> {
    return this.reports.filter((r) => node === null || r.node === node).slice(0, limit);
  }
  async close(): Promise<void> {}
}
