/**
 * One message body on its way into the spool: a temp file created with O_EXCL, a Writable that streams into it
 * with backpressure (memory stays at one highWaterMark whatever the size), fsync + close when the body ends,
 * then an atomic rename to its final name. Any failure removes what was written.
 */
import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { MessageIdSniffer } from './message-id-sniffer.ts';
import { ERR_QUEUE_STATE, toQueueWriteError } from './queue-errors.ts';
import { RelayguardError } from '../core/errors.ts';

const HIGH_WATER_MARK = 64 * 1024;

type Phase = 'writing' | 'synced' | 'renamed' | 'failed' | 'removed';

export interface SpoolFileResult {
  readonly size: number;
  readonly messageId: string | null;
}

export class SpoolFile {
  readonly tempPath: string;
  readonly finalPath: string;
  readonly body: Writable;
  #fh: FileHandle | null;
  #phase: Phase = 'writing';
  #size = 0;
  #error: RelayguardError | null = null;
  readonly #sniffer = new MessageIdSniffer();
  readonly #synced: Promise<void>;
  #settleSynced!: (err?: RelayguardError) => void;

  private constructor(fh: FileHandle, tempPath: string, finalPath: string) {
    this.#fh = fh;
    this.tempPath = tempPath;
    this.finalPath = finalPath;
    this.#synced = new Promise<void>((resolve, reject) => {
      this.#settleSynced = (err) => (err === undefined ? resolve() : reject(err));
    });
    this.#synced.catch(() => {}); // observed through complete(); never an unhandled rejection
    this.body = new Writable({
      highWaterMark: HIGH_WATER_MARK,
      write: (chunk: Buffer, _enc, cb) => {
        this.#write([chunk]).then(() => cb(), cb);
      },
      writev: (chunks, cb) => {
        this.#write(chunks.map((c) => c.chunk as Buffer)).then(() => cb(), cb);
      },
      final: (cb) => {
        this.#final().then(() => cb(), cb);
      },
      destroy: (err, cb) => {
        this.#onDestroy(err).then(() => cb(err), () => cb(err));
      },
    });
    // A write error must never crash the process for want of a listener; the owner sees it via pipeline()
    // or complete().
    this.body.on('error', () => {});
  }

  /** Creates the temp file (O_EXCL, mode 0600). Rejects with a queue write error (EEXIST passes through). */
  static async create(tempPath: string, finalPath: string): Promise<SpoolFile> {
    let fh: FileHandle;
    try {
      fh = await open(tempPath, 'wx', 0o600);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'EEXIST') throw err;
      throw toQueueWriteError(err, 'creating the spool file');
    }
    return new SpoolFile(fh, tempPath, finalPath);
  }

  get size(): number {
    return this.#size;
  }

  /** The first failure, if any (the temp data is then already being removed). */
  get error(): RelayguardError | null {
    return this.#error;
  }

  /** Waits until the body ended and is fsynced and closed. Rejects if the body failed or was never ended. */
  async complete(): Promise<SpoolFileResult> {
    if (this.#error !== null) throw this.#error;
    if (this.#phase === 'writing' && !this.body.writableEnded) {
      throw new RelayguardError(ERR_QUEUE_STATE, 'Message committed before its body ended');
    }
    await this.#synced;
    return { size: this.#size, messageId: this.#sniffer.messageId };
  }

  /** Renames the synced temp file to its final name. The caller fsyncs the directory. */
  async promote(): Promise<void> {
    if (this.#phase !== 'synced') throw new RelayguardError(ERR_QUEUE_STATE, `Cannot rename a spool file in phase "${this.#phase}"`);
    try {
      await rename(this.tempPath, this.finalPath);
      this.#phase = 'renamed';
    } catch (err) {
      throw this.#fail(err, 'renaming the spool file');
    }
  }

  /**
   * Removes the temp file or the renamed file, whichever exists. Idempotent; never rejects: resolves with the
   * unlink error, if removing failed, so the caller can log it.
   */
  async remove(): Promise<unknown> {
    if (this.#phase === 'removed') return null;
    const renamed = this.#phase === 'renamed';
    this.#phase = 'removed';
    if (!this.body.destroyed) this.body.destroy();
    this.#settleSynced(this.#error ?? new RelayguardError(ERR_QUEUE_STATE, 'Message aborted'));
    await this.#closeQuietly();
    try {
      await unlinkQuietly(renamed ? this.finalPath : this.tempPath);
      return null;
    } catch (err) {
      return err;
    }
  }

  async #write(chunks: Buffer[]): Promise<void> {
    const fh = this.#fh;
    if (fh === null || this.#phase !== 'writing') throw new RelayguardError(ERR_QUEUE_STATE, 'Spool file is closed');
    for (const c of chunks) this.#sniffer.push(c);
    try {
      let total = 0;
      for (const c of chunks) total += c.length;
      let written = (await fh.writev(chunks)).bytesWritten;
      // Short writes (a filling disk) continue chunk by chunk; the next write then reports the error.
      for (const c of chunks) {
        if (written >= c.length) {
          written -= c.length;
          continue;
        }
        let off = written;
        written = 0;
        while (off < c.length) off += (await fh.write(c, off, c.length - off)).bytesWritten;
      }
      this.#size += total;
    } catch (err) {
      throw this.#fail(err, 'writing the spool file');
    }
  }

  async #final(): Promise<void> {
    const fh = this.#fh;
    if (fh === null || this.#phase !== 'writing') throw new RelayguardError(ERR_QUEUE_STATE, 'Spool file is closed');
    this.#sniffer.end();
    try {
      await fh.sync();
      this.#fh = null;
      await fh.close();
    } catch (err) {
      throw this.#fail(err, 'syncing the spool file');
    }
    this.#phase = 'synced';
    this.#settleSynced();
  }

  async #onDestroy(err: Error | null): Promise<void> {
    // After 'finish' (autoDestroy) the file is synced and the owner decides; after remove() nothing is left to do.
    if (this.#phase !== 'writing' && this.#phase !== 'failed') return;
    this.#fail(err ?? new RelayguardError(ERR_QUEUE_STATE, 'Message body destroyed before it ended'), 'receiving the body');
    await this.remove();
  }

  #fail(err: unknown, what: string): RelayguardError {
    const e = err instanceof RelayguardError && err.code === ERR_QUEUE_STATE ? err : toQueueWriteError(err, what);
    if (this.#error === null) this.#error = e;
    if (this.#phase === 'writing' || this.#phase === 'synced') this.#phase = 'failed';
    this.#settleSynced(this.#error);
    return this.#error;
  }

  async #closeQuietly(): Promise<void> {
    const fh = this.#fh;
    this.#fh = null;
    if (fh !== null) await fh.close().catch(() => {});
  }
}

async function unlinkQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
  }
}
