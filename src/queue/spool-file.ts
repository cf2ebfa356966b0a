/**
 * One message body on its way into the queue. A Writable (backpressure respected) that keeps the body in memory
 * while it fits the inline limit: such a body is committed inline, in the index transaction that commits its
 * record, and never touches the spool directory. A body that grows past the limit spills: a temp file is created
 * with O_EXCL, what was buffered is written to it, the rest streams after it (memory stays at one highWaterMark
 * plus the inline limit, whatever the size); when the body ends the file is fsynced and closed, and promote()
 * renames it to its final name. Any failure removes what was written.
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
  /** The whole body when it stayed within the inline limit (no file was written); null when it is a file. */
  readonly inline: Buffer | null;
}

export class SpoolFile {
  readonly tempPath: string;
  readonly finalPath: string;
  readonly body: Writable;
  readonly #inlineMax: number;
  /** The body so far while it is inline. */
  #chunks: Buffer[] = [];
  /** Set once the body spilled to a file (it stays set after close, to know what remove() must unlink). */
  #spilled = false;
  #fh: FileHandle | null = null;
  #phase: Phase = 'writing';
  #size = 0;
  #error: RelayguardError | null = null;
  readonly #sniffer = new MessageIdSniffer();
  readonly #synced: Promise<void>;
  #settleSynced!: (err?: RelayguardError) => void;

  /**
   * @param inlineMax largest body kept in memory and committed inline; 0 writes every body to a file. No I/O
   *   happens until the body passes this size.
   */
  constructor(tempPath: string, finalPath: string, inlineMax: number) {
    this.tempPath = tempPath;
    this.finalPath = finalPath;
    this.#inlineMax = inlineMax;
    this.#synced = new Promise<void>((resolve, reject) => {
      this.#settleSynced = (err) => (err === undefined ? resolve() : reject(err));
    });
    this.#synced.catch(() => {}); // observed through complete(); never an unhandled rejection
    this.body = new Writable({
      highWaterMark: HIGH_WATER_MARK,
      write: (chunk: Buffer, _enc, cb) => {
        if (this.#tryInline([chunk], chunk.length)) return cb();
        this.#write([chunk]).then(() => cb(), cb);
      },
      writev: (chunks, cb) => {
        const list = chunks.map((c) => c.chunk as Buffer);
        let total = 0;
        for (const c of list) total += c.length;
        if (this.#tryInline(list, total)) return cb();
        this.#write(list).then(() => cb(), cb);
      },
      final: (cb) => {
        this.#final().then(() => cb(), cb);
      },
      destroy: (err, cb) => {
        this.#onDestroy(err).then(() => cb(err), () => cb(err));
      },
    });
    // A write error must never crash the process for want of a listener; the owner sees it through its copy
    // loop or complete().
    this.body.on('error', () => {});
  }

  get size(): number {
    return this.#size;
  }

  /** True once the body spilled to a spool file. */
  get isFile(): boolean {
    return this.#spilled;
  }

  /** The first failure, if any (the temp data is then already being removed). */
  get error(): RelayguardError | null {
    return this.#error;
  }

  /** Waits until the body ended (and, as a file, is fsynced and closed). Rejects if the body failed or was never
   *  ended. */
  async complete(): Promise<SpoolFileResult> {
    if (this.#error !== null) throw this.#error;
    if (this.#phase === 'writing' && !this.body.writableEnded) {
      throw new RelayguardError(ERR_QUEUE_STATE, 'Message committed before its body ended');
    }
    await this.#synced;
    const inline = this.#spilled ? null : this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#size);
    return { size: this.#size, messageId: this.#sniffer.messageId, inline };
  }

  /** Renames a synced spool file to its final name (nothing to do for an inline body). The caller fsyncs the
   *  directory. */
  async promote(): Promise<void> {
    if (this.#phase !== 'synced') throw new RelayguardError(ERR_QUEUE_STATE, `Cannot rename a spool file in phase "${this.#phase}"`);
    if (!this.#spilled) return;
    try {
      await rename(this.tempPath, this.finalPath);
      this.#phase = 'renamed';
    } catch (err) {
      throw this.#fail(err, 'renaming the spool file');
    }
  }

  /**
   * Removes the temp file or the renamed file, whichever exists (and drops an inline body). Idempotent; never
   * rejects: resolves with the unlink error, if removing failed, so the caller can log it.
   */
  async remove(): Promise<unknown> {
    if (this.#phase === 'removed') return null;
    const renamed = this.#phase === 'renamed';
    this.#phase = 'removed';
    this.#chunks = [];
    if (!this.body.destroyed) this.body.destroy();
    this.#settleSynced(this.#error ?? new RelayguardError(ERR_QUEUE_STATE, 'Message aborted'));
    if (!this.#spilled) return null;
    await this.#closeQuietly();
    try {
      await unlinkQuietly(renamed ? this.finalPath : this.tempPath);
      return null;
    } catch (err) {
      return err;
    }
  }

  /** Keeps chunks in memory when the body stays within the inline limit. */
  #tryInline(chunks: readonly Buffer[], total: number): boolean {
    if (this.#spilled || this.#phase !== 'writing' || this.#size + total > this.#inlineMax) return false;
    for (const c of chunks) {
      this.#sniffer.push(c);
      this.#chunks.push(c);
    }
    this.#size += total;
    return true;
  }

  async #write(chunks: Buffer[]): Promise<void> {
    if (this.#phase !== 'writing') throw new RelayguardError(ERR_QUEUE_STATE, 'Spool file is closed');
    for (const c of chunks) this.#sniffer.push(c);
    let fh = this.#fh;
    let out = chunks;
    if (!this.#spilled) {
      // The body outgrew the inline limit: create the file and write what was buffered first.
      this.#spilled = true;
      try {
        fh = await open(this.tempPath, 'wx', 0o600);
      } catch (err) {
        throw this.#fail(err, 'creating the spool file');
      }
      if (this.#phase !== 'writing') {
        // Removed while the file was being created.
        await fh.close().catch(() => {});
        await unlinkQuietly(this.tempPath).catch(() => {});
        throw new RelayguardError(ERR_QUEUE_STATE, 'Spool file is closed');
      }
      this.#fh = fh;
      out = [...this.#chunks, ...chunks];
      this.#size -= this.#chunks.reduce((n, c) => n + c.length, 0);
      this.#chunks = [];
    }
    if (fh === null) throw new RelayguardError(ERR_QUEUE_STATE, 'Spool file is closed');
    try {
      let total = 0;
      for (const c of out) total += c.length;
      let written = (await fh.writev(out)).bytesWritten;
      // Short writes (a filling disk) continue chunk by chunk; the next write then reports the error.
      for (const c of out) {
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
    if (this.#phase !== 'writing') throw new RelayguardError(ERR_QUEUE_STATE, 'Spool file is closed');
    this.#sniffer.end();
    if (this.#spilled) {
      const fh = this.#fh;
      if (fh === null) throw new RelayguardError(ERR_QUEUE_STATE, 'Spool file is closed');
      try {
        await fh.sync();
        this.#fh = null;
        await fh.close();
      } catch (err) {
        throw this.#fail(err, 'syncing the spool file');
      }
    }
    this.#phase = 'synced';
    this.#settleSynced();
  }

  async #onDestroy(err: Error | null): Promise<void> {
    // After 'finish' (autoDestroy) the body is complete and the owner decides; after remove() nothing is left to do.
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
