/**
 * The free-space check made at MAIL time (Postfix: free space below 1.5 x the message size limit, or the
 * announced SIZE plus queue_minfree, gives 452 4.3.1 Insufficient system storage). One statfs call, or none: a
 * recent result (SpaceChecker, 100 ms) is reused while it shows room to spare many times over, so a busy server
 * does not statfs on every MAIL; close to the limit every check asks the kernel again. (A disk that fills up
 * anyway is caught when the message is stored: 452/451, never 250.)
 */
import { statfsSync } from 'node:fs';

export type SpaceVerdict = 'ok' | 'insufficient';

/** Fewer free inodes than this counts as full (each message needs a body file, the index may grow). */
const MIN_FREE_INODES = 16;

export function checkSpace(path: string, messageSize: number, minFreeBytes = 0): SpaceVerdict {
  const s = statfsSync(path);
  return verdict(s.bavail * s.bsize, s.files, s.ffree, messageSize, minFreeBytes);
}

function verdict(free: number, files: number, ffree: number, messageSize: number, minFreeBytes: number): SpaceVerdict {
  if (free < 1.5 * Math.max(0, messageSize) + minFreeBytes) return 'insufficient';
  if (files > 0 && ffree < MIN_FREE_INODES) return 'insufficient';
  return 'ok';
}

/** Reuse a statfs result for this long ... */
const REUSE_MS = 100;
/** ... only while it shows at least this much more than a check needs (bytes, and inodes). */
const REUSE_MARGIN_BYTES = 256 * 1024 * 1024;
const REUSE_MARGIN_INODES = 4096;

export class SpaceChecker {
  readonly #path: string;
  readonly #minFreeBytes: number;
  readonly #now: () => number;
  #last: { at: number; free: number; files: number; ffree: number } | null = null;

  constructor(path: string, minFreeBytes = 0, now: () => number = () => performance.now()) {
    this.#path = path;
    this.#minFreeBytes = minFreeBytes;
    this.#now = now;
  }

  /** Throws the statfs error (the caller fails closed). */
  check(messageSize: number): SpaceVerdict {
    const need = 1.5 * Math.max(0, messageSize) + this.#minFreeBytes;
    const now = this.#now();
    const l = this.#last;
    if (l !== null && now - l.at < REUSE_MS && l.free >= 2 * need + REUSE_MARGIN_BYTES && (l.files === 0 || l.ffree >= REUSE_MARGIN_INODES)) {
      return 'ok';
    }
    const s = statfsSync(this.#path);
    const free = s.bavail * s.bsize;
    this.#last = { at: now, free, files: s.files, ffree: s.ffree };
    return verdict(free, s.files, s.ffree, messageSize, this.#minFreeBytes);
  }
}
