/**
 * Makes SQLite's write-ahead log durable off the event loop. The receiving store runs its connection with
 * `synchronous = NORMAL`: a COMMIT writes its WAL frames (pwrite, on the event loop) but does not fsync them.
 * This class then fdatasyncs the WAL on libuv's thread pool; a transaction is durable once a sync that started
 * after its COMMIT returned has completed. The WAL is append-only between checkpoints, so one sync covers every
 * transaction committed before it started (group commit for free).
 *
 * Checkpoints and WAL restarts: SQLite (synchronous = NORMAL, WAL mode) syncs the WAL before it checkpoints and
 * the database file after, and syncs the new WAL header when it restarts the log, so checkpointed content is
 * durable without us. A restart rewrites the same file (same inode); the file is only unlinked when the last
 * connection closes, which cannot happen while the store's connection is open. Still, every sync first checks
 * (fstat, link count) that the open descriptor's file is still linked, and reopens the path (then also fsyncing
 * the directory, for the new directory entry) when it is not, so a sync always reaches the file that holds the
 * frames just written.
 *
 * Only the WAL file is opened here, never the database file: closing a descriptor of a file drops every POSIX
 * lock the process holds on it, and SQLite locks the database file and the -shm file, not the -wal file.
 */
import { closeSync, fdatasync, fdatasyncSync, fstatSync, fsync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';

const fdatasyncAsync = promisify(fdatasync);
const fsyncAsync = promisify(fsync);

export class WalSync {
  readonly #path: string;
  #fd: number | null = null;
  /** The directory must be fsynced with the next sync (a new WAL file was opened). */
  #dirPending = false;
  #inflight: Promise<void> | null = null;
  #next: Promise<void> | null = null;
  #syncs = 0;
  /** A background sync is scheduled (syncSoon). */
  #soon: NodeJS.Timeout | null = null;
  /** Syncs started so far: a background sync is skipped when another one started after it was requested. */
  #started = 0;
  #closed = false;

  /** @param walPath the `-wal` file of a database in WAL mode (it need not exist yet). */
  constructor(walPath: string) {
    this.#path = walPath;
  }

  /** fdatasyncs completed. */
  get syncs(): number {
    return this.#syncs;
  }

  /**
   * Resolves once everything committed before this call is on disk. Call it right after COMMIT returned, before
   * anything else can run on the event loop: the inode check is made now, the fdatasync runs on the pool. Syncs
   * are coalesced: at most one runs, and callers that arrive meanwhile share the one after it.
   */
  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('WAL sync is closed'));
    let fd: number;
    try {
      fd = this.#current();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#inflight === null) return this.#start(fd);
    // A sync is running, but it may have started before our frames were written: take the next one.
    this.#next ??= this.#inflight.then(
      () => undefined,
      () => undefined,
    ).then(() => {
      this.#next = null;
      if (this.#closed) throw new Error('WAL sync is closed');
      return this.#start(this.#current());
    });
    return this.#next;
  }

  /**
   * For transactions nothing waits on (the runner's outcomes, admin changes): makes sure a sync starts within
   * `delayMs`, and costs nothing when another one (a receive batch's) starts before then, as it covers them
   * too. Errors are reported to onError. Bounds how long such a transaction can be lost to a power failure.
   */
  syncSoon(onError: (err: unknown) => void, delayMs = 100): void {
    if (this.#soon !== null || this.#closed) return;
    const requested = this.#started;
    this.#soon = setTimeout(() => {
      this.#soon = null;
      if (this.#closed || this.#started !== requested) return;
      this.sync().catch(onError);
    }, delayMs);
    this.#soon.unref();
  }

  /** Synchronous fdatasync, on the event loop: for the rare commit that must be durable before the next step. */
  syncNow(): void {
    const fd = this.#current();
    if (this.#dirPending) this.#syncDirSync();
    fdatasyncSync(fd);
    this.#syncs++;
  }

  /** Refuses further syncs and closes the descriptor (after the sync under way, if any). */
  close(): void {
    this.#closed = true;
    if (this.#soon !== null) clearTimeout(this.#soon);
    this.#soon = null;
    const fd = this.#fd;
    this.#fd = null;
    if (fd === null) return;
    const running = this.#next ?? this.#inflight;
    if (running === null) closeSync(fd);
    else void running.catch(() => {}).finally(() => closeSync(fd));
  }

  #start(fd: number): Promise<void> {
    this.#started++;
    const dir = this.#dirPending;
    this.#dirPending = false;
    const run = async (): Promise<void> => {
      try {
        if (dir) await this.#syncDir();
        await fdatasyncAsync(fd);
        this.#syncs++;
      } catch (err) {
        if (dir) this.#dirPending = true;
        throw err;
      } finally {
        this.#inflight = null;
      }
    };
    const p = run();
    this.#inflight = p;
    return p;
  }

  /** The descriptor of the WAL file: the open one while it is still linked, else the path opened anew. */
  #current(): number {
    if (this.#fd !== null && fstatSync(this.#fd).nlink > 0) return this.#fd;
    // The old descriptor may still be in a sync on the pool: it is left open (one leaked fd per WAL replacement,
    // which only happens when another process deleted the file), never closed under a running fdatasync.
    this.#fd = openSync(this.#path, 'r');
    this.#dirPending = true;
    return this.#fd;
  }

  async #syncDir(): Promise<void> {
    const fd = openSync(dirname(this.#path), 'r');
    try {
      await fsyncAsync(fd);
    } finally {
      closeSync(fd);
    }
  }

  #syncDirSync(): void {
    const fd = openSync(dirname(this.#path), 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.#dirPending = false;
  }
}
