/**
 * Reads a spool body for delivery or a bounce. The stream checks the byte count against the recorded size and
 * errors instead of ending when they differ, so a truncated or missing body can never look complete to the
 * SMTP client that sends it on (it must not send the final dot after an error).
 */
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import type { Readable } from 'node:stream';
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
