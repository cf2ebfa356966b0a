/**
 * The free-space check made at MAIL time (Postfix: free space below 1.5 x the message size limit, or the
 * announced SIZE plus queue_minfree, gives 452 4.3.1 Insufficient system storage). One statfs call.
 */
import { statfsSync } from 'node:fs';

export type SpaceVerdict = 'ok' | 'insufficient';

/** Fewer free inodes than this counts as full (each message needs a body file, the index may grow). */
const MIN_FREE_INODES = 16;

export function checkSpace(path: string, messageSize: number, minFreeBytes = 0): SpaceVerdict {
  const s = statfsSync(path);
  const free = s.bavail * s.bsize;
  if (free < 1.5 * Math.max(0, messageSize) + minFreeBytes) return 'insufficient';
  if (s.files > 0 && s.ffree < MIN_FREE_INODES) return 'insufficient';
  return 'ok';
}
