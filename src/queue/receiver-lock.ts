/**
 * One receiving store per data directory. Recovery deletes temp and uncommitted spool files, which would destroy
 * the in-flight messages of another live receiver, so a receiver holds an exclusive lock for its lifetime.
 * The lock is SQLite's own (fcntl) lock on a small file held in locking_mode=EXCLUSIVE: the kernel drops it when
 * the process dies (kill -9 included), and SQLite makes it conflict within one process too.
 */
import { DatabaseSync } from 'node:sqlite';
import { RelayguardError } from '../core/errors.ts';
import { restrictSqliteFiles } from '../core/file-modes.ts';
import { ERR_QUEUE_LOCKED } from './queue-errors.ts';

export class ReceiverLock {
  readonly #db: DatabaseSync;

  private constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /** Takes the lock or throws ERR_QUEUE_LOCKED at once if another store holds it. */
  static acquire(path: string): ReceiverLock {
    const db = new DatabaseSync(path, { timeout: 0 });
    try {
      restrictSqliteFiles(path);
      db.exec('PRAGMA locking_mode = EXCLUSIVE');
      db.exec('BEGIN EXCLUSIVE');
      db.exec('COMMIT');
    } catch (err) {
      db.close();
      const busy = (err as { errcode?: unknown }).errcode === 5 || (err as { errcode?: unknown }).errcode === 6;
      if (busy) throw new RelayguardError(ERR_QUEUE_LOCKED, `Queue is in use by another process or store: "${path}" is locked`, { cause: err });
      throw err;
    }
    return new ReceiverLock(db);
  }

  release(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}
