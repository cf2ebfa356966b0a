/**
 * Reads a queued body (a spool file, or an inline body from the index) for delivery or a bounce. The stream
 * checks the byte count against the recorded size and errors instead of ending when they differ, so a truncated
 * or missing body can never look complete to the SMTP client that sends it on (it must not send the final dot
 * after an error).
 */
import { createReadStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { RelayguardError } from '../core/errors.ts';

export const ERR_QUEUE_BODY = 'ERR_QUEUE_BODY';

/** Errors that say nothing about the file itself (try again later rather than set the message aside). */
const TRANSIENT = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN', 'EINTR', 'EBUSY']);

export function isTransientBodyError(err: unknown): boolean {
  return TRANSIENT.has(String((err as { code?: unknown } | null)?.code));
}

/**
 * Opens `path` as a stream of exactly `size` bytes. `onFault` is told about every failure that came from the file
 * (not from the consumer destroying the stream): missing, unreadable, shorter or longer than `size`.
 */
export function openSpoolBody(path: string, size: number, onFault: (err: Error) => void): Readable {
  let seen = 0;
  let faulted = false;
  const fault = (err: Error): Error => {
    if (!faulted) {
      faulted = true;
      onFault(err);
    }
    return err;
  };
  const sizeError = (what: string): Error =>
    new RelayguardError(ERR_QUEUE_BODY, `Spool body ${what}: expected ${size} bytes, read ${seen}`);
  const out = new Transform({
    highWaterMark: 64 * 1024,
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > size) return cb(fault(sizeError('is too long')));
      cb(null, chunk);
    },
    flush(cb) {
      if (seen !== size) return cb(fault(sizeError('is truncated')));
      cb();
    },
  });
  const file = createReadStream(path, { highWaterMark: 64 * 1024 });
  file.on('error', (err) => {
    out.destroy(fault(err));
  });
  out.on('close', () => file.destroy());
  file.pipe(out);
  return out;
}

/**
 * A stream of an inline body read from the index (`body`, or null when its row is missing). A missing body or one
 * whose length is not `size` is a fault (onFault, then the stream errors). `readError` (the index could not be
 * read) errors the stream without a fault: the attempt is deferred, the message is not set aside.
 */
export function openInlineBody(body: Buffer | null, readError: unknown, size: number, onFault: (err: Error) => void): Readable {
  let sent = false;
  return new Readable({
    highWaterMark: 64 * 1024,
    read() {
      if (sent) return;
      sent = true;
      if (readError !== null && readError !== undefined) {
        this.destroy(readError instanceof Error ? readError : new Error(String(readError)));
        return;
      }
      const seen = body?.length ?? 0;
      const what = body === null ? 'is missing' : seen < size ? 'is truncated' : seen > size ? 'is too long' : null;
      if (what !== null) {
        const err = new RelayguardError(ERR_QUEUE_BODY, `Inline body ${what}: expected ${size} bytes, read ${seen}`);
        onFault(err);
        this.destroy(err);
        return;
      }
      for (let off = 0; off < seen; off += 64 * 1024) this.push(body!.subarray(off, off + 64 * 1024));
      this.push(null);
    },
  });
}
