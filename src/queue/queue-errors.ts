/**
 * The queue's error codes, and the mapping from an I/O or SQLite failure to them. Write failures carry the SMTP
 * reply the client must see (never a 250): ERR_QUEUE_NOSPACE -> 452 4.3.1, ERR_QUEUE_WRITE -> 451 4.3.0.
 */
import { RelayguardError, SmtpReplyError } from '../core/errors.ts';

export const ERR_QUEUE_WRITE = 'ERR_QUEUE_WRITE';
export const ERR_QUEUE_NOSPACE = 'ERR_QUEUE_NOSPACE';
export const ERR_QUEUE_STATE = 'ERR_QUEUE_STATE';
export const ERR_QUEUE_LOCKED = 'ERR_QUEUE_LOCKED';
export const ERR_QUEUE_CLOSED = 'ERR_QUEUE_CLOSED';
export const ERR_QUEUE_READONLY = 'ERR_QUEUE_READONLY';
export const ERR_QUEUE_OPEN = 'ERR_QUEUE_OPEN';

const SQLITE_FULL = 13;

/** True for "no space" failures: ENOSPC, EDQUOT, and SQLite's SQLITE_FULL (which it reports for ENOSPC). */
export function isNoSpace(err: unknown): boolean {
  const e = err as { code?: unknown; errcode?: unknown } | null;
  if (e === null || typeof e !== 'object') return false;
  if (e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === ERR_QUEUE_NOSPACE) return true;
  return typeof e.errcode === 'number' && (e.errcode & 0xff) === SQLITE_FULL;
}

/** Wraps a failure while storing a message; an error that is already a queue write error passes through. */
export function toQueueWriteError(err: unknown, what: string): RelayguardError {
  if (err instanceof RelayguardError && (err.code === ERR_QUEUE_WRITE || err.code === ERR_QUEUE_NOSPACE)) return err;
  const e = isNoSpace(err)
    ? new SmtpReplyError({ code: 452, enhanced: '4.3.1', text: 'Insufficient system storage' }, { code: ERR_QUEUE_NOSPACE, cause: err })
    : new SmtpReplyError({ code: 451, enhanced: '4.3.0', text: 'Error: queue file write error' }, { code: ERR_QUEUE_WRITE, cause: err });
  e.message = `Queue write failed while ${what}: ${(err as Error | null)?.message ?? String(err)}`;
  return e;
}
