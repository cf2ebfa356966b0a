/**
 * The durable queue, receive half. A message is a body plus a commit record (its rows in the SQLite index); the
 * record is what makes it exist. A body up to `inlineMaxBytes` (default 64 KiB) is kept in memory while it
 * arrives and stored inline, in the same transaction as its record; a larger one spills to a spool file.
 * Commit order, per message and batch:
 *
 *   inline body:  body -> memory
 *   file body:    body -> spool/tmp/<id>.tmp (O_EXCL, streamed once past the inline limit) -> fsync(body)
 *                 -> close -> rename to spool/msg/<id>.eml
 *   [batch]       fsync(spool/msg) (only when the batch has a file body) -> BEGIN; INSERT records (+ inline
 *                 bodies); COMMIT (writes the WAL; synchronous = NORMAL, no fsync on the event loop)
 *                 -> fdatasync(queue.db-wal) on libuv's pool -> commit() resolves -> 250
 *
 * After the sync the batch is handed to the runner (RunnerPort.onWork), which may start delivering at once. Its
 * removals of finished messages ride on the next batch's transaction (RunnerPort.finishWithCommit).
 *
 * Concurrent commits share the directory fsync, the database transaction and the WAL fdatasync (group commit);
 * body fsyncs are per file and overlap. The WAL is append-only, so one fdatasync started after a COMMIT returned
 * makes that transaction and every earlier one durable (see wal-sync.ts for checkpoints and WAL restarts). Any
 * failure removes the message's data and rejects with ERR_QUEUE_NOSPACE (452 4.3.1) or ERR_QUEUE_WRITE
 * (451 4.3.0); the store keeps serving. If the WAL fdatasync fails, the batch's records are deleted again and
 * each message is retried alone (GroupCommit), so none gets a 250 without a successful sync after its COMMIT.
 *
 * Layout under dataDir: queue.db (+ -wal, -shm; table `bodies` holds inline bodies), receiver.lock, spool/tmp/,
 * spool/msg/.
 *
 * Three ways to open a store: receiving (QueueStore.open: the one process that receives and runs the queue, under
 * the receiver lock), admin (QueueStore.openAdmin: CLI hold/release/retry/flush/delete from another process, small
 * WAL transactions next to the receiver's, no lock, no recovery) and read-only (list/show).
 *
 * Admin delete removes the commit record first, then unlinks the body: a crash in between leaves an orphan body,
 * which the next recovery removes. A runner that is delivering the message at that moment keeps its open file
 * descriptor: the attempt under way finishes (it cannot be recalled), and its outcomes are dropped because the
 * record is gone.
 */
import { closeSync, existsSync, fsync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, unlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Readable, Writable } from 'node:stream';
import type { Clock } from '../core/clock.ts';
import { SYSTEM_CLOCK } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { PRIVATE_DIR_MODE, restrictMode } from '../core/file-modes.ts';
import type { Logger } from '../core/log.ts';
import { NULL_LOGGER } from '../core/log.ts';
import { newQueueId } from '../core/queue-id.ts';
import { ERR_QUEUE_BODY, openInlineBody, openSpoolBody } from './body-reader.ts';
import { GroupCommit } from './group-commit.ts';
import { IndexDb } from './index-db.ts';
import type {
  AdminResult, AttemptRecord, AttemptResult, ListFilter, MessageRecord, QueueCounts, QueuedMessageDetail, QueuedMessageSummary,
} from './index-db.ts';
import {
  ERR_QUEUE_CLOSED,
  ERR_QUEUE_OPEN,
  ERR_QUEUE_READONLY,
  ERR_QUEUE_STATE,
  toQueueWriteError,
} from './queue-errors.ts';
import { ReceiverLock } from './receiver-lock.ts';
import { BODY_SUFFIX, recoverSpool, TEMP_SUFFIX } from './recovery.ts';
import type { RecoveryReport } from './recovery.ts';
import { SpoolFile } from './spool-file.ts';
import { SpaceChecker } from './space.ts';
import type { SpaceVerdict } from './space.ts';

const fsyncAsync = promisify(fsync);

export type EsmtpParams = Readonly<Record<string, string | true>>;

export interface IncomingEnvelope {
  /** The reverse path, '' for the null sender <>. */
  readonly sender: string;
  readonly recipients: readonly { readonly address: string; readonly params?: EsmtpParams }[];
  readonly clientIp: string;
  readonly helo: string | null;
  /** The authenticated user, or null. */
  readonly user: string | null;
  /** The listener's name. */
  readonly listener: string;
  readonly mailParams?: EsmtpParams;
}

export interface IncomingMessage {
  readonly queueId: string;
  /** A Writable the SMTP layer pipes the body into (backpressure respected). Destroying it abandons the message. */
  readonly body: Writable;
  /** Call after the body ended. Resolves only when the message is durable; rejects (after removing the message's
   *  files) with ERR_QUEUE_NOSPACE or ERR_QUEUE_WRITE, or ERR_QUEUE_STATE when misused. */
  commit(envelope: IncomingEnvelope): Promise<void>;
  /** Removes the temp data; idempotent. After commit() has started, waits for it and leaves a committed message. */
  abort(reason?: unknown): Promise<void>;
}

export interface QueueStoreOptions {
  readonly dataDir: string;
  readonly logger?: Logger;
  readonly clock?: Clock;
  /** Open for reading only (CLI, dashboard): no lock, no recovery, no writes. Default false. */
  readonly readOnly?: boolean;
  /** Free bytes to keep beyond 1.5 x the message size in checkSpace (Postfix queue_minfree). Default 0. */
  readonly minFreeBytes?: number;
  /** Largest group-commit batch. Default 512. */
  readonly maxBatch?: number;
  /** Largest body stored inline in the index (buffered in memory while it arrives); larger bodies go to spool
   *  files. 0 puts every body in a file. Default 64 KiB. */
  readonly inlineMaxBytes?: number;
}

export const DEFAULT_INLINE_MAX_BYTES = 64 * 1024;

export interface QueueStats {
  readonly messagesCommitted: number;
  readonly messagesFailed: number;
  readonly messagesAborted: number;
  readonly bytesCommitted: number;
  /** Messages begun and not yet committed, failed or aborted. */
  readonly inFlight: number;
  /** Database transactions committed by group commit. */
  readonly dbCommits: number;
  /** fdatasyncs of the WAL (receive batches and background syncs after the runner's transactions). */
  readonly walSyncs: number;
  /** fsyncs of the spool directory (only batches with a spool-file body need one). */
  readonly dirSyncs: number;
  /** Messages committed with their body inline in the index. */
  readonly inlineBodies: number;
  /** Group-commit flushes attempted (failed batches are retried one message at a time). */
  readonly batches: number;
  readonly largestBatch: number;
}

/** What an admin command applies to: listed queue ids, or every message a filter selects (like postsuper ALL). */
export type AdminTarget = { readonly queueIds: readonly string[] } | { readonly filter: ListFilter };

/** Admin commands change at most this many messages per transaction, so the receiver never waits long. */
const ADMIN_CHUNK = 500;

/** What the queue runner (same module, not exported from index.ts) may use of a receiving store. */
export interface RunnerPort {
  readonly index: IndexDb;
  readonly logger: Logger;
  /** Absolute path of a body, from its path relative to the data directory. */
  bodyFile(bodyPath: string): string;
  /** A stream of exactly the message's body (inline or file); errors instead of ending, and tells onFault, when
   *  the body is missing, unreadable or not `size` bytes long. */
  openBody(detail: QueuedMessageDetail, onFault: (err: Error) => void): Readable;
  /**
   * Called whenever work may have become due (a commit, a release, a retry). After a commit the listener gets the
   * batch's records, durable and visible to due() from this moment (a hand-over: the runner may start their first
   * attempt without reading them back); other wake-ups pass nothing. Returns the unsubscribe function.
   */
  onWork(listener: (committed?: readonly MessageRecord[]) => void): () => void;
  /**
   * Records an attempt that finishes its message (AttemptRecord.finishes) in the next group commit's transaction
   * (the removal shares the intake's commit, WAL pages and fdatasync), or on its own when no commit comes within
   * RIDE_WAIT_MS. Resolves like IndexDb.recordAttempt, after the transaction (and, riding a group commit, after its
   * WAL sync); rejects when it could not be recorded.
   */
  finishWithCommit(record: AttemptRecord): Promise<AttemptResult | null>;
  /** Gives up the store's one runner slot. */
  detach(): void;
}

/** Longest a finished message's removal waits for a group commit to ride on before it commits on its own. */
const RIDE_WAIT_MS = 10;

interface Rider {
  readonly record: AttemptRecord;
  readonly resolve: (result: AttemptResult | null) => void;
  readonly reject: (err: unknown) => void;
}

const PORTS = new WeakMap<QueueStore, RunnerPort>();

/**
 * The runner's access to a receiving store. Only a receiving store (the holder of the receiver lock) may run the
 * queue, and only one runner at a time: two runners over one queue would deliver every message twice.
 */
export function attachRunner(store: QueueStore): RunnerPort {
  const port = PORTS.get(store);
  if (port === undefined) throw new RelayguardError(ERR_QUEUE_READONLY, 'Only a receiving queue store can run the queue');
  if (attachedRunners.has(store)) throw new RelayguardError(ERR_QUEUE_STATE, 'The queue already has a runner');
  attachedRunners.add(store);
  return port;
}

const attachedRunners = new WeakSet<QueueStore>();

interface Paths {
  readonly dataDir: string;
  readonly db: string;
  readonly lock: string;
  readonly spool: string;
  readonly tempDir: string;
  readonly bodyDir: string;
}

/** What a message in flight may ask of its store (exported for other queue backends: store/postgres-queue.ts). */
export interface StoreHooks {
  now(): number;
  commitRecord(record: MessageRecord): Promise<void>;
  /** After a failed commit: makes sure no commit record outlives the removed body. */
  forget(queueId: string): void;
  settle(msg: Incoming, outcome: 'committed' | 'failed' | 'aborted', fields: Record<string, unknown>): void;
}

interface Writer {
  readonly lock: ReceiverLock;
  readonly bodyDirFd: number;
  readonly groupCommit: GroupCommit<MessageRecord>;
  readonly inFlight: Set<Incoming>;
}

function pathsOf(dataDir: string): Paths {
  const abs = resolve(dataDir);
  const spool = join(abs, 'spool');
  return {
    dataDir: abs,
    db: join(abs, 'queue.db'),
    lock: join(abs, 'receiver.lock'),
    spool,
    tempDir: join(spool, 'tmp'),
    bodyDir: join(spool, 'msg'),
  };
}

export class QueueStore {
  readonly dataDir: string;
  /** What recovery found when this store opened (null when read-only). */
  readonly recovery: RecoveryReport | null;
  readonly #paths: Paths;
  readonly #index: IndexDb;
  readonly #writer: Writer | null;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #inlineMax: number;
  readonly #space: SpaceChecker;
  /** Admin commands allowed (receiving and admin stores). */
  readonly #canAdmin: boolean;
  readonly #workListeners = new Set<(committed?: readonly MessageRecord[]) => void>();
  #closed = false;
  #closing: Promise<void> | null = null;
  /** Finished messages waiting to be removed with the next group commit (RunnerPort.finishWithCommit). */
  #riders: Rider[] = [];
  #riderTimer: NodeJS.Timeout | null = null;
  #committed = 0;
  #failed = 0;
  #aborted = 0;
  #bytes = 0;
  #dirSyncs = 0;
  #inline = 0;
  readonly #hooks: StoreHooks = {
    now: () => this.#clock.now(),
    // Not refused while closing: close() waits for commits already under way.
    commitRecord: (record) => this.#writer!.groupCommit.submit(record),
    forget: (queueId) => {
      try {
        if (this.#index.has(queueId)) this.#index.delete(queueId);
      } catch (err) {
        this.#logger.error('commit record not removed after failed commit', { queue_id: queueId, error: String(err) });
      }
    },
    settle: (msg, outcome, fields) => {
      this.#writer?.inFlight.delete(msg);
      if (outcome === 'committed') {
        this.#committed++;
        this.#bytes += Number(fields.size ?? 0);
        // The receive path logs 'message accepted' for the same message; this one is for debugging the queue.
        this.#logger.debug('message queued', { queue_id: msg.queueId, ...fields });
      } else if (outcome === 'failed') {
        this.#failed++;
        this.#logger.warn('message not queued', { queue_id: msg.queueId, ...fields });
      } else {
        this.#aborted++;
        this.#logger.debug('message aborted', { queue_id: msg.queueId, ...fields });
      }
    },
  };

  private constructor(init: {
    paths: Paths;
    index: IndexDb;
    writer: Writer | null;
    recovery: RecoveryReport | null;
    logger: Logger;
    clock: Clock;
    minFreeBytes: number;
    canAdmin: boolean;
    inlineMaxBytes?: number;
  }) {
    this.#inlineMax = init.inlineMaxBytes ?? DEFAULT_INLINE_MAX_BYTES;
    this.#canAdmin = init.canAdmin;
    this.#paths = init.paths;
    this.dataDir = init.paths.dataDir;
    this.#index = init.index;
    this.#writer = init.writer;
    this.recovery = init.recovery;
    this.#logger = init.logger;
    this.#clock = init.clock;
    this.#space = new SpaceChecker(init.paths.spool, init.minFreeBytes);
    if (init.writer !== null) {
      PORTS.set(this, {
        index: init.index,
        logger: init.logger,
        bodyFile: (bodyPath) => join(this.#paths.dataDir, bodyPath),
        openBody: (detail, onFault) => this.#openBody(detail, onFault),
        onWork: (listener) => {
          this.#workListeners.add(listener);
          return () => this.#workListeners.delete(listener);
        },
        finishWithCommit: (record) => new Promise<AttemptResult | null>((resolve, reject) => {
          if (this.#closed) {
            reject(new RelayguardError(ERR_QUEUE_CLOSED, 'Queue store is closed'));
            return;
          }
          this.#riders.push({ record, resolve, reject });
          this.#riderTimer ??= setTimeout(() => this.#recordRiders(this.#takeRiders()), RIDE_WAIT_MS);
        }),
        detach: () => attachedRunners.delete(this),
      });
    }
  }

  /**
   * Opens the store. A receiving store creates the directories, takes the receiver lock (ERR_QUEUE_LOCKED if another
   * store has it), opens the index and runs receive-side recovery. Other failures throw ERR_QUEUE_OPEN.
   */
  static open(options: QueueStoreOptions): QueueStore {
    const paths = pathsOf(options.dataDir);
    const logger = options.logger ?? NULL_LOGGER;
    const clock = options.clock ?? SYSTEM_CLOCK;
    const common = { paths, logger, clock, minFreeBytes: options.minFreeBytes ?? 0 };
    if (options.readOnly === true) {
      if (!existsSync(paths.db)) throw new RelayguardError(ERR_QUEUE_OPEN, `No queue at "${paths.dataDir}"`);
      const index = wrapOpen(() => new IndexDb(paths.db, { readOnly: true }));
      return new QueueStore({ ...common, index, writer: null, recovery: null, canAdmin: false });
    }
    let lock: ReceiverLock | null = null;
    let index: IndexDb | null = null;
    let bodyDirFd: number | null = null;
    try {
      wrapOpen(() => {
        mkdirSync(paths.tempDir, { recursive: true, mode: PRIVATE_DIR_MODE });
        mkdirSync(paths.bodyDir, { recursive: true, mode: PRIVATE_DIR_MODE });
        // Also when they existed already (made by hand, or by an older version): mail lives in them.
        for (const dir of [paths.spool, paths.tempDir, paths.bodyDir]) restrictMode(dir, PRIVATE_DIR_MODE);
      });
      lock = ReceiverLock.acquire(paths.lock);
      const idx = wrapOpen(() => new IndexDb(paths.db, {
        durability: 'wal-async',
        onSyncError: (err) => logger.error('queue index WAL sync failed', { error: String(err) }),
      }));
      index = idx;
      const recovery = wrapOpen(() =>
        recoverSpool({ dataDir: paths.dataDir, tempDir: paths.tempDir, bodyDir: paths.bodyDir, index: idx, logger, now: clock.now() }),
      );
      const fd = wrapOpen(() => openSync(paths.bodyDir, 'r'));
      bodyDirFd = fd;
      // The directories themselves must survive a crash once we start acknowledging messages.
      wrapOpen(() => {
        for (const dir of [paths.tempDir, paths.bodyDir, paths.spool, paths.dataDir]) syncDirSync(dir);
      });
      let store: QueueStore | null = null;
      const groupCommit = new GroupCommit<MessageRecord>(
        (records) => store!.#flush(records),
        options.maxBatch === undefined ? {} : { maxBatch: options.maxBatch },
      );
      store = new QueueStore({
        ...common, index: idx, recovery, canAdmin: true, writer: { lock, bodyDirFd: fd, groupCommit, inFlight: new Set() },
        ...(options.inlineMaxBytes === undefined ? {} : { inlineMaxBytes: Math.max(0, options.inlineMaxBytes) }),
      });
      return store;
    } catch (err) {
      if (bodyDirFd !== null) closeSync(bodyDirFd);
      index?.close();
      lock?.release();
      throw err;
    }
  }

  /**
   * Opens an existing queue for admin commands (hold, release, retry, flush, delete) from a process other than the
   * receiver: no receiver lock, no recovery, no receiving. Its transactions are short (at most ADMIN_CHUNK
   * messages each) and wait for the receiver's (busy timeout); the receiver's runner picks the changes up at its
   * next poll. Throws ERR_QUEUE_OPEN when there is no queue.
   */
  static openAdmin(options: Pick<QueueStoreOptions, 'dataDir' | 'logger' | 'clock'>): QueueStore {
    const paths = pathsOf(options.dataDir);
    if (!existsSync(paths.db)) throw new RelayguardError(ERR_QUEUE_OPEN, `No queue at "${paths.dataDir}"`);
    const index = wrapOpen(() => new IndexDb(paths.db));
    return new QueueStore({
      paths, index, writer: null, recovery: null, canAdmin: true, minFreeBytes: 0,
      logger: options.logger ?? NULL_LOGGER, clock: options.clock ?? SYSTEM_CLOCK,
    });
  }

  /**
   * Reserves a queue id for a message. No I/O: the body stays in memory up to the inline limit, and only a larger
   * one creates its temp file (write errors then surface through the body stream and commit()).
   */
  async beginMessage(): Promise<IncomingMessage> {
    const w = this.#requireWriter();
    // 50 random bits per millisecond: a collision is a failed INSERT or O_EXCL create (451), never an overwrite.
    const queueId = newQueueId(this.#clock.now());
    const spool = new SpoolFile(
      join(this.#paths.tempDir, queueId + TEMP_SUFFIX),
      join(this.#paths.bodyDir, queueId + BODY_SUFFIX),
      this.#inlineMax,
    );
    const msg = new Incoming(queueId, spool, this.#hooks);
    w.inFlight.add(msg);
    return msg;
  }

  /** Messages in the queue, oldest first. */
  list(filter: ListFilter = {}): QueuedMessageSummary[] {
    this.#requireOpen();
    return this.#index.list(filter, this.#clock.now());
  }

  /** Messages by state and the oldest of each (IndexDb.counts). */
  counts(): QueueCounts {
    this.#requireOpen();
    return this.#index.counts(this.#clock.now());
  }

  get(queueId: string): QueuedMessageDetail | null {
    this.#requireOpen();
    return this.#index.get(queueId);
  }

  /** Puts queued messages on hold: the runner skips them until released. An attempt under way completes. */
  hold(target: AdminTarget): AdminResult {
    return this.#adminRun('hold', target, (ids, now) => this.#index.hold(ids, now));
  }

  /** Releases held messages; they keep their retry schedule (due ones go at once). */
  release(target: AdminTarget): AdminResult {
    return this.#adminRun('release', target, (ids, now) => this.#index.release(ids, now), true);
  }

  /** Makes every open recipient of the messages due now. */
  retry(target: AdminTarget): AdminResult {
    return this.#adminRun('retry', target, (ids, now) => this.#index.retry(ids, now), true);
  }

  /** Retries every queued message that is waiting for its next attempt (like `postqueue -f`). */
  flush(): AdminResult {
    this.#requireAdmin();
    return this.retry({ queueIds: this.#index.notDueIds(this.#clock.now()) });
  }

  /** Deletes messages (any state) without a bounce: the record first, then the body. */
  delete(target: AdminTarget): AdminResult {
    return this.#adminRun('delete', target, (ids) => {
      const r = this.#index.deleteMessages(ids);
      for (const p of r.bodyPaths) {
        try {
          unlinkSync(join(this.#paths.dataDir, p));
        } catch (err) {
          // An orphan body is removed by the next recovery.
          if ((err as { code?: unknown }).code !== 'ENOENT') this.#logger.warn('deleted message body not removed', { body_path: p, error: String(err) });
        }
      }
      return { changed: r.changed, unchanged: r.unchanged, missing: r.missing };
    });
  }

  /**
   * The header section of a message's body (up to the first empty line), at most maxBytes long, decoded as
   * UTF-8. Null when the message is unknown. Throws the file error when the body cannot be read.
   */
  readHeaders(queueId: string, maxBytes = 64 * 1024): { headers: string; truncated: boolean } | null {
    this.#requireOpen();
    const detail = this.#index.get(queueId);
    if (detail === null) return null;
    let bytes: Buffer;
    if (detail.bodyInline) {
      const body = this.#index.readBody(queueId) ?? Buffer.alloc(0);
      bytes = body.subarray(0, Math.min(maxBytes, detail.size));
    } else {
      const fd = openSync(join(this.#paths.dataDir, detail.bodyPath), 'r');
      try {
        const buf = Buffer.alloc(Math.min(maxBytes, detail.size));
        let len = 0;
        while (len < buf.length) {
          const n = readSync(fd, buf, len, buf.length - len, len);
          if (n === 0) break;
          len += n;
        }
        bytes = buf.subarray(0, len);
      } finally {
        closeSync(fd);
      }
    }
    const crlf = bytes.indexOf('\r\n\r\n');
    const lf = bytes.indexOf('\n\n');
    const ends = [crlf < 0 ? -1 : crlf + 2, lf < 0 ? -1 : lf + 1].filter((e) => e >= 0);
    if (ends.length > 0) return { headers: bytes.subarray(0, Math.min(...ends)).toString('utf8'), truncated: false };
    return { headers: bytes.toString('utf8'), truncated: bytes.length < detail.size };
  }

  /**
   * A queued message's whole body (inline or spool file), exactly as stored. Null when the message is unknown.
   * Throws when the body cannot be read. For tests and tools; delivery streams it (openBody).
   */
  readBody(queueId: string): Buffer | null {
    this.#requireOpen();
    const detail = this.#index.get(queueId);
    if (detail === null) return null;
    if (detail.bodyInline) {
      const body = this.#index.readBody(queueId);
      if (body === null) throw new RelayguardError(ERR_QUEUE_BODY, `Inline body of ${queueId} is missing`);
      return body;
    }
    return readFileSync(join(this.#paths.dataDir, detail.bodyPath));
  }

  /** The MAIL-time free-space check (one statfs): 'insufficient' means reply 452 4.3.1. Fails closed. */
  checkSpace(messageSize: number): SpaceVerdict {
    try {
      return this.#space.check(messageSize);
    } catch (err) {
      this.#logger.warn('queue free space check failed', { error_code: (err as { code?: unknown }).code });
      return 'insufficient';
    }
  }

  stats(): QueueStats {
    const gc = this.#writer?.groupCommit.stats();
    return {
      messagesCommitted: this.#committed,
      messagesFailed: this.#failed,
      messagesAborted: this.#aborted,
      bytesCommitted: this.#bytes,
      inFlight: this.#writer?.inFlight.size ?? 0,
      dbCommits: this.#index.commits,
      walSyncs: this.#index.walSyncs,
      dirSyncs: this.#dirSyncs,
      inlineBodies: this.#inline,
      batches: gc?.flushes ?? 0,
      largestBatch: gc?.largestBatch ?? 0,
    };
  }

  /** Aborts messages still receiving, waits for commits in flight, then releases everything. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    const w = this.#writer;
    if (w !== null) {
      await Promise.all([...w.inFlight].map((m) => m.abort(new RelayguardError(ERR_QUEUE_CLOSED, 'Queue store is closing'))));
      await w.groupCommit.idle();
      this.#recordRiders(this.#takeRiders());
      closeSync(w.bodyDirFd);
    }
    // Closing the last connection checkpoints the WAL into queue.db and syncs it (synchronous = NORMAL does).
    this.#index.close();
    w?.lock.release();
  }

  async #flush(records: readonly MessageRecord[]): Promise<void> {
    const w = this.#writer!;
    if (records.some((r) => r.bodyPath !== '')) {
      // One directory fsync makes every rename of the batch durable; it must precede the commit record.
      await fsyncAsync(w.bodyDirFd);
      this.#dirSyncs++;
    }
    const ids = records.map((r) => r.queueId);
    const riders = this.#takeRiders();
    let finished: (AttemptResult | null)[];
    try {
      finished = this.#index.insertBatch(records, riders.map((r) => r.record));
    } catch (err) {
      // Rolled back, the riders with it: they commit on their own (the batch is retried by GroupCommit).
      this.#recordRiders(riders);
      throw err;
    }
    // Committed, and visible to this connection: the runner must not pick the messages up before they are durable.
    this.#index.unsynced(ids);
    // COMMIT wrote the WAL; the fdatasync runs on the thread pool. It must be the first thing after the COMMIT.
    try {
      await this.#index.syncWal();
    } catch (err) {
      // Not durable: take the records back (GroupCommit then retries each message alone, with a fresh sync).
      for (const id of ids) {
        try {
          this.#index.delete(id);
        } catch (e) {
          this.#logger.error('commit record not removed after failed WAL sync', { queue_id: id, error: String(e) });
        }
      }
      // The riders' removals are committed but not known durable: their spool bodies stay (recovery removes an
      // orphan body), so a crash can never leave a record without its body.
      riders.forEach((r, i) => {
        const f = finished[i] ?? null;
        r.resolve(f !== null && f.removedBodyPath !== null && f.removedBodyPath !== '' ? { ...f, removedBodyPath: null } : f);
      });
      throw err;
    } finally {
      this.#index.synced(ids);
    }
    riders.forEach((r, i) => r.resolve(finished[i] ?? null));
    for (const r of records) if (r.bodyPath === '') this.#inline++;
    // Only now may the runner see the messages: nothing is delivered before it is durable.
    this.#notifyWork(records);
  }

  #takeRiders(): Rider[] {
    if (this.#riderTimer !== null) clearTimeout(this.#riderTimer);
    this.#riderTimer = null;
    return this.#riders.splice(0);
  }

  /** Riders on their own: one transaction, or one each when that fails (one bad record cannot sink the others). */
  #recordRiders(riders: readonly Rider[]): void {
    if (riders.length === 0) return;
    try {
      const results = this.#index.recordAttempts(riders.map((r) => r.record));
      riders.forEach((r, i) => r.resolve(results[i] ?? null));
      return;
    } catch (err) {
      if (riders.length === 1) {
        riders[0]!.reject(err);
        return;
      }
    }
    for (const r of riders) {
      try {
        r.resolve(this.#index.recordAttempts([r.record])[0] ?? null);
      } catch (e) {
        r.reject(e);
      }
    }
  }

  #openBody(detail: QueuedMessageDetail, onFault: (err: Error) => void): Readable {
    if (!detail.bodyInline) return openSpoolBody(join(this.#paths.dataDir, detail.bodyPath), detail.size, onFault);
    let body: Buffer | null = null;
    let error: unknown = null;
    try {
      body = this.#index.readBody(detail.queueId);
    } catch (err) {
      error = err;
    }
    return openInlineBody(body, error, detail.size, onFault);
  }

  #adminRun(action: string, target: AdminTarget, apply: (ids: readonly string[], now: number) => AdminResult, wakesRunner = false): AdminResult {
    this.#requireAdmin();
    const now = this.#clock.now();
    const ids = 'queueIds' in target ? [...new Set(target.queueIds)] : this.#index.ids(target.filter, now);
    const out: AdminResult = { changed: [], unchanged: [], missing: [] };
    for (let i = 0; i < ids.length; i += ADMIN_CHUNK) {
      const r = apply(ids.slice(i, i + ADMIN_CHUNK), now);
      out.changed.push(...r.changed);
      out.unchanged.push(...r.unchanged);
      out.missing.push(...r.missing);
    }
    if (out.changed.length > 0) {
      this.#logger.info(`queue ${action}`, { changed: out.changed.length, queue_ids: out.changed.slice(0, 100) });
      if (wakesRunner) this.#notifyWork();
    }
    return out;
  }

  #notifyWork(committed?: readonly MessageRecord[]): void {
    for (const l of this.#workListeners) {
      try {
        l(committed);
      } catch (err) {
        this.#logger.error('queue work listener failed', { error: String(err) });
      }
    }
  }

  #requireAdmin(): void {
    this.#requireOpen();
    if (!this.#canAdmin) throw new RelayguardError(ERR_QUEUE_READONLY, 'Queue store is open read-only');
  }

  #requireOpen(): void {
    if (this.#closed) throw new RelayguardError(ERR_QUEUE_CLOSED, 'Queue store is closed');
  }

  #requireWriter(): Writer {
    this.#requireOpen();
    if (this.#writer === null) throw new RelayguardError(ERR_QUEUE_READONLY, 'Queue store is open read-only');
    return this.#writer;
  }
}

type IncomingState = 'open' | 'committing' | 'committed' | 'failed' | 'aborted';

/** A message on its way into a queue: body into a SpoolFile, then commit() through the backend's hooks. */
export class Incoming implements IncomingMessage {
  readonly queueId: string;
  readonly body: Writable;
  readonly #spool: SpoolFile;
  readonly #hooks: StoreHooks;
  #state: IncomingState = 'open';
  #commit: Promise<void> | null = null;

  constructor(queueId: string, spool: SpoolFile, hooks: StoreHooks) {
    this.queueId = queueId;
    this.#spool = spool;
    this.#hooks = hooks;
    this.body = spool.body;
  }

  commit(envelope: IncomingEnvelope): Promise<void> {
    if (this.#state !== 'open') {
      const err = this.#spool.error ?? new RelayguardError(ERR_QUEUE_STATE, `Message ${this.queueId} is already ${this.#state}`);
      return Promise.reject(err);
    }
    this.#state = 'committing';
    this.#commit = this.#runCommit(envelope);
    return this.#commit;
  }

  async abort(reason?: unknown): Promise<void> {
    if (this.#state === 'committing' || this.#state === 'committed') {
      await this.#commit?.catch(() => {});
      return;
    }
    if (this.#state === 'open') {
      this.#state = 'aborted';
      const unlinkError = await this.#spool.remove();
      this.#hooks.settle(this, 'aborted', { reason: reason === undefined ? undefined : String(reason), unlink_error: errorField(unlinkError) });
      return;
    }
    await this.#spool.remove();
  }

  async #runCommit(envelope: IncomingEnvelope): Promise<void> {
    let recorded = false;
    try {
      const record = this.#record(envelope, await this.#spool.complete());
      await this.#spool.promote();
      recorded = true;
      await this.#hooks.commitRecord(record);
      this.#state = 'committed';
      this.#hooks.settle(this, 'committed', {
        size: record.size,
        nrcpt: record.recipients.length,
        message_id: record.messageId,
        client_ip: record.clientIp,
      });
    } catch (err) {
      this.#state = 'failed';
      const e = err instanceof RelayguardError ? err : toQueueWriteError(err, 'committing');
      const unlinkError = await this.#spool.remove();
      if (recorded) this.#hooks.forget(this.queueId);
      this.#hooks.settle(this, 'failed', { error_code: e.code, error: e.message, unlink_error: errorField(unlinkError) });
      throw e;
    }
  }

  #record(env: IncomingEnvelope, body: { size: number; messageId: string | null; inline: Buffer | null }): MessageRecord {
    if (typeof env.sender !== 'string') throw new RelayguardError(ERR_QUEUE_STATE, 'Envelope sender must be a string');
    if (env.recipients.length === 0) throw new RelayguardError(ERR_QUEUE_STATE, 'Envelope has no recipients');
    for (const r of env.recipients) {
      if (typeof r.address !== 'string' || r.address === '') throw new RelayguardError(ERR_QUEUE_STATE, 'Envelope recipient is empty');
    }
    return {
      queueId: this.queueId,
      receivedAt: this.#hooks.now(),
      sender: env.sender,
      size: body.size,
      bodyPath: body.inline === null ? `spool/msg/${this.queueId}${BODY_SUFFIX}` : '',
      body: body.inline,
      messageId: body.messageId,
      clientIp: env.clientIp,
      helo: env.helo,
      authUser: env.user,
      listener: env.listener,
      mailParams: { ...env.mailParams },
      recipients: env.recipients.map((r) => ({ address: r.address, params: { ...r.params } })),
    };
  }
}

function syncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function wrapOpen<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof RelayguardError) throw err;
    throw new RelayguardError(ERR_QUEUE_OPEN, `Cannot open the queue: ${(err as Error | null)?.message ?? String(err)}`, { cause: err });
  }
}

function errorField(err: unknown): string | undefined {
  return err === null || err === undefined ? undefined : String(err);
}
