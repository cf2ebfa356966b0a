/**
 * The relay-decision store port (policy/decisions.ts) on its own SQLite file, dataDir/decisions.db (not
 * relayguard.db: the recorder's batches never wait on the directory's or the admin store's writers, nor they on it).
 *   relay_decisions(id PK autoincrement, at, node, session_id, client_ip, listener, helo, user, mail_from, rcpt,
 *                   action, rule, reason, reply)  indexes: at, (client_ip, id), (rcpt, id), (mail_from, id)
 * synchronous = NORMAL (WAL): a power loss may lose the last batches of a log-like table; never the queue's mail.
 * busy_timeout 100 ms: node:sqlite is synchronous, so a lock wait would stall the event loop (SMTP included); only
 * this process writes the file, so a wait means trouble, and the batch is dropped instead.
 * ThreadedSqliteDecisionStore (what serve uses) runs it in a worker thread: a batch insert (~25 ms for 500 rows with
 * the indexes) and a prune never block the event loop the SMTP sessions run on.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { RelayguardError } from '../core/errors.ts';
import type { DecisionFilter, DecisionRecord, DecisionStore, NewDecision, Retention } from '../policy/decisions.ts';
import { immediate, openSqliteFile } from './sqlite-common.ts';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS relay_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    node TEXT NOT NULL,
    session_id TEXT,
    client_ip TEXT NOT NULL,
    listener TEXT,
    helo TEXT,
    user TEXT,
    mail_from TEXT,
    rcpt TEXT NOT NULL,
    action TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT,
    reply TEXT
  );
  CREATE INDEX IF NOT EXISTS relay_decisions_at ON relay_decisions (at);
  CREATE INDEX IF NOT EXISTS relay_decisions_client ON relay_decisions (client_ip, id);
  CREATE INDEX IF NOT EXISTS relay_decisions_rcpt ON relay_decisions (rcpt, id);
  CREATE INDEX IF NOT EXISTS relay_decisions_sender ON relay_decisions (mail_from, id);
  CREATE INDEX IF NOT EXISTS relay_decisions_action ON relay_decisions (action, id);
  CREATE INDEX IF NOT EXISTS relay_decisions_rule ON relay_decisions (rule, id);
`;

const COLUMNS = 'id, at, node, session_id, client_ip, listener, helo, user, mail_from, rcpt, action, rule, reason, reply';

/** dataDir/decisions.db. */
export function sqliteDecisionsPath(dataDir: string): string {
  return join(dataDir, 'decisions.db');
}

export class SqliteDecisionStore implements DecisionStore {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;

  constructor(file: string) {
    this.#db = openSqliteFile(file, { synchronous: 'NORMAL', busyTimeoutMs: 100 }).db;
    this.#db.exec(SCHEMA);
    this.#insert = this.#db.prepare(`INSERT INTO relay_decisions (${COLUMNS.slice(4)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  }

  async append(rows: readonly NewDecision[]): Promise<void> {
    if (rows.length === 0) return;
    immediate(this.#db, () => {
      for (const r of rows) {
        this.#insert.run(r.at, r.node, r.sessionId, r.clientIp, r.listener, r.helo, r.user, r.mailFrom, r.rcpt, r.action, r.rule, r.reason, r.reply);
      }
    });
  }

  async search(f: DecisionFilter): Promise<DecisionRecord[]> {
    const where: string[] = [];
    const args: SQLInputValue[] = [];
    const eq = (col: string, v: string | number | undefined, op = '='): void => {
      if (v === undefined) return;
      where.push(`${col} ${op} ?`);
      args.push(v);
    };
    eq('client_ip', f.clientIp);
    eq('mail_from', f.sender?.toLowerCase());
    eq('rcpt', f.rcpt?.toLowerCase());
    eq('action', f.action);
    eq('rule', f.rule);
    eq('at', f.since, '>=');
    eq('at', f.until, '<');
    eq('id', f.before, '<');
    const sql = `SELECT ${COLUMNS} FROM relay_decisions${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    const rows = this.#db.prepare(sql).all(...args, f.limit) as Record<string, unknown>[];
    return rows.map(toRecord);
  }

  async prune(r: Retention, now: number): Promise<number> {
    let n = Number(this.#db.prepare('DELETE FROM relay_decisions WHERE at < ?').run(now - r.maxAgeMs).changes);
    // Ids only grow and rows leave from the bottom: the newest maxRows are the ids above MAX(id) - maxRows (no walk).
    const top = this.#db.prepare('SELECT MAX(id) AS id FROM relay_decisions').get() as { id: number | null } | undefined;
    if (top?.id != null && top.id > r.maxRows) n += Number(this.#db.prepare('DELETE FROM relay_decisions WHERE id <= ?').run(top.id - r.maxRows).changes);
    return n;
  }

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }
}

export function toRecord(r: Record<string, unknown>): DecisionRecord {
  const s = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
  return {
    id: Number(r['id']), at: Number(r['at']), node: String(r['node']), sessionId: s(r['session_id']), clientIp: String(r['client_ip']),
    listener: s(r['listener']), helo: s(r['helo']), user: s(r['user']), mailFrom: s(r['mail_from']), rcpt: String(r['rcpt']),
    action: String(r['action']), rule: String(r['rule']), reason: s(r['reason']), reply: s(r['reply']),
  };
}

/** The store in a worker thread (sqlite-decisions-thread.ts): same contract, no synchronous SQLite on the caller's thread. */
export class ThreadedSqliteDecisionStore implements DecisionStore {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  #next = 1;
  #failed: Error | null = null;
  #closed: Promise<void> | null = null;

  constructor(file: string) {
    this.#worker = new Worker(new URL('./sqlite-decisions-thread.ts', import.meta.url), { workerData: { file } });
    this.#worker.unref();
    this.#worker.on('message', (m: { id: number; ok: boolean; result?: unknown; message?: string; code?: string | null }) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new RelayguardError(m.code ?? 'ERR_DECISIONS_STORE', m.message ?? 'decision store failed'));
    });
    const fail = (err: Error): void => {
      this.#failed = new RelayguardError('ERR_DECISIONS_STORE', `decision store thread stopped: ${err.message}`, { cause: err });
      for (const p of this.#pending.values()) p.reject(this.#failed);
      this.#pending.clear();
    };
    this.#worker.on('error', fail);
    this.#worker.on('exit', (code) => { if (this.#closed === null) fail(new Error(`exit code ${code}`)); });
  }

  #call<T>(op: 'append' | 'search' | 'prune' | 'close', args: unknown[]): Promise<T> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#closed !== null && op !== 'close') return Promise.reject(new RelayguardError('ERR_DECISIONS_STORE', 'decision store closed'));
    return new Promise<T>((resolve, reject) => {
      const id = this.#next++;
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.ref(); // while a request is open
      this.#worker.postMessage({ id, op, args });
    }).finally(() => { if (this.#pending.size === 0) this.#worker.unref(); });
  }

  append(rows: readonly NewDecision[]): Promise<void> {
    return rows.length === 0 ? Promise.resolve() : this.#call('append', [rows]);
  }

  search(filter: DecisionFilter): Promise<DecisionRecord[]> {
    return this.#call('search', [filter]);
  }

  prune(retention: Retention, now: number): Promise<number> {
    return this.#call('prune', [retention, now]);
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      if (this.#failed === null) await this.#call('close', []).catch(() => {});
      await this.#worker.terminate();
    })();
    return this.#closed;
  }
}
