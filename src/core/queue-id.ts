/**
 * Queue IDs: sortable by arrival, unique across processes and restarts, safe as file names.
 * 12 characters of time (base32, ms) + 8 random characters, e.g. "01KBX0Z4M7QH3F9A2K7T".
 */
import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford base32, no I L O U

export function newQueueId(now: number = Date.now()): string {
  let time = '';
  let t = Math.floor(now);
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const rnd = randomBytes(10);
  let tail = '';
  for (let i = 0; i < 10; i++) tail += ALPHABET[rnd[i]! % 32];
  return time + tail;
}

export const QUEUE_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{20}$/;

export function isQueueId(s: string): boolean {
  return QUEUE_ID_PATTERN.test(s);
}
