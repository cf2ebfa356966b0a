/**
 * Queue IDs: sortable by arrival, unique across processes and restarts, safe as file names.
 * 12 characters of time (base32, ms) + 8 random characters, e.g. "01KBX0Z4M7QH3F9A2K7T".
 */
import { randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford base32, no I L O U

/** Random bytes from the CSPRNG, filled 4 KiB at a time (one call per ~400 IDs, not one per message); each used once. */
const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;

export function newQueueId(now: number = Date.now()): string {
  let time = '';
  let t = Math.floor(now);
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  if (poolAt + 10 > POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  let tail = '';
  for (let i = 0; i < 10; i++) tail += ALPHABET[POOL[poolAt + i]! % 32];
  poolAt += 10;
  return time + tail;
}

export const QUEUE_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{20}$/;

export function isQueueId(s: string): boolean {
  return QUEUE_ID_PATTERN.test(s);
}
