/**
 * What the embedded SQLite stores share: opening a store's file (mode 0600 before the first write, WAL, the
 * durability and lock-wait settings the store asks for) and one short BEGIN IMMEDIATE transaction.
 */
import { DatabaseSync } from 'node:sqlite';
import { restrictSqliteFiles } from '../core/file-modes.ts';

export interface SqliteFileOptions {
  /** FULL for data that must survive power loss (accounts), NORMAL for data a crash may lose the last of. */
  readonly synchronous: 'FULL' | 'NORMAL';
  /** How long a writer waits for another process's lock, ms. */
  readonly busyTimeoutMs: number;
}

/**
 * Opens `database` (a path, ':memory:', or an open handle the caller owns: then nothing is changed) and returns the
 * handle and whether the store owns it (and so closes it).
 */
export function openSqliteFile(database: string | DatabaseSync, o: SqliteFileOptions): { db: DatabaseSync; owns: boolean } {
  if (typeof database !== 'string') return { db: database, owns: false };
  const db = new DatabaseSync(database);
  if (database !== ':memory:') {
    restrictSqliteFiles(database); // 0600 before the first write (-wal, -shm follow)
    db.exec(`PRAGMA busy_timeout = ${o.busyTimeoutMs}; PRAGMA journal_mode = WAL; PRAGMA synchronous = ${o.synchronous};`);
  }
  return { db, owns: true };
}

/** Runs fn in BEGIN IMMEDIATE ... COMMIT (rolled back and rethrown on failure). Never spans an await. */
export function immediate<T>(db: DatabaseSync, fn: () => T): T {
  db.exec('BEGIN IMMEDIATE');
  try {
    const r = fn();
    db.exec('COMMIT');
    return r;
  } catch (err) {
    db.exec('ROLLBACK');
    throw err;
  }
}
