/**
 * The tester-run store port (policy/tester-runs.ts) on its own SQLite file, dataDir/tester-runs.db:
 *   tester_runs(seq PK autoincrement, id UNIQUE, node, actor, target, options JSON, addresses JSON, state, verdict,
 *               exit_code, error, report JSON, created_at, finished_at)   index: (node, state)
 * A few writes per run (create, finish), so plain synchronous SQLite on the caller's thread; synchronous = FULL:
 * a finished report survives a power loss. busy_timeout 1 s (only this node's serve writes the file).
 */
import { join } from 'node:path';
import type { DatabaseSync, SQLInputValue } from 'node:sqlite';
import type { NewTesterRun, TesterRunOutcome, TesterRunRecord, TesterRunState, TesterRunStore, TesterRunSummary } from '../policy/tester-runs.ts';
import { immediate, openSqliteFile } from './sqlite-common.ts';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS tester_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    node TEXT NOT NULL,
    actor TEXT NOT NULL,
    target TEXT NOT NULL,
    options TEXT NOT NULL,
    addresses TEXT NOT NULL,
    state TEXT NOT NULL,
    verdict TEXT,
    exit_code INTEGER,
    error TEXT,
    report TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
  );
  CREATE INDEX IF NOT EXISTS tester_runs_state ON tester_runs (node, state);
`;

const SUMMARY = 'seq, id, node, actor, target, options, addresses, state, verdict, exit_code, error, created_at, finished_at';

/** dataDir/tester-runs.db. */
export function sqliteTesterRunsPath(dataDir: string): string {
  return join(dataDir, 'tester-runs.db');
}

export class SqliteTesterRunStore implements TesterRunStore {
  readonly #db: DatabaseSync;
  readonly #owns: boolean;

  constructor(file: string | DatabaseSync) {
    const { db, owns } = openSqliteFile(file, { synchronous: 'FULL', busyTimeoutMs: 1000 });
    this.#db = db;
    this.#owns = owns;
    this.#db.exec(SCHEMA);
  }

  async create(r: NewTesterRun): Promise<void> {
    this.#db.prepare(`INSERT INTO tester_runs (id, node, actor, target, options, addresses, state, created_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?)`)
      .run(r.id, r.node, r.actor, r.target, JSON.stringify(r.options ?? null), JSON.stringify(r.addresses), r.createdAt);
  }

  async finish(id: string, o: TesterRunOutcome): Promise<boolean> {
    const res = this.#db.prepare(`UPDATE tester_runs SET state = ?, verdict = ?, exit_code = ?, error = ?, report = ?, finished_at = ? WHERE id = ? AND state = 'running'`)
      .run(o.state, o.verdict, o.exitCode, o.error, o.report === null || o.report === undefined ? null : JSON.stringify(o.report), o.finishedAt, id);
    return Number(res.changes) === 1;
  }

  async get(id: string): Promise<TesterRunRecord | null> {
    const row = this.#db.prepare(`SELECT ${SUMMARY}, report FROM tester_runs WHERE id = ?`).get(id) as Record<string, unknown> | undefined;
    if (!row) return null;
    return { ...toSummary(row), report: typeof row['report'] === 'string' ? JSON.parse(row['report']) : null };
  }

  async list(f: { limit: number; before?: number; state?: TesterRunState }): Promise<TesterRunSummary[]> {
    const where: string[] = [];
    const args: SQLInputValue[] = [];
    if (f.before !== undefined) { where.push('seq < ?'); args.push(f.before); }
    if (f.state !== undefined) { where.push('state = ?'); args.push(f.state); }
    const rows = this.#db.prepare(`SELECT ${SUMMARY} FROM tester_runs${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ?`)
      .all(...args, f.limit) as Record<string, unknown>[];
    return rows.map(toSummary);
  }

  async abortRunning(node: string, error: string, at: number): Promise<number> {
    const res = this.#db.prepare(`UPDATE tester_runs SET state = 'aborted', error = ?, finished_at = ? WHERE node = ? AND state = 'running'`).run(error, at, node);
    return Number(res.changes);
  }

  async prune(keep: number): Promise<number> {
    return immediate(this.#db, () => {
      const edge = this.#db.prepare('SELECT seq FROM tester_runs ORDER BY seq DESC LIMIT 1 OFFSET ?').get(keep) as { seq: number } | undefined;
      if (!edge) return 0;
      return Number(this.#db.prepare(`DELETE FROM tester_runs WHERE seq <= ? AND state <> 'running'`).run(edge.seq).changes);
    });
  }

  async close(): Promise<void> {
    if (this.#owns && this.#db.isOpen) this.#db.close();
  }
}

/** A row (SQLite or PostgreSQL column names) as a summary. */
export function toSummary(r: Record<string, unknown>): TesterRunSummary {
  const s = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
  const n = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  const json = (v: unknown): unknown => (typeof v === 'string' ? JSON.parse(v) : v);
  return {
    seq: Number(r['seq']), id: String(r['id']), node: String(r['node']), actor: String(r['actor']), target: String(r['target']),
    options: json(r['options']), addresses: json(r['addresses']) as string[], state: String(r['state']) as TesterRunState,
    verdict: s(r['verdict']), exitCode: n(r['exit_code']), error: s(r['error']), createdAt: Number(r['created_at']), finishedAt: n(r['finished_at']),
  };
}
