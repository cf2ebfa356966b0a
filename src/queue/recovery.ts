/**
 * Receive-side recovery, run when a receiving store opens (under the receiver lock, so no other receiver is
 * writing): temp files are bodies whose DATA never finished and are deleted; bodies in the spool without a
 * commit record were never acknowledged with 250 and are deleted; commit records whose body file is missing, or
 * whose body file's size differs from the recorded one (truncated, overwritten), are set aside as corrupt (never
 * delivered half) and logged. One stat per message with a spool file; inline bodies are committed in the same
 * transaction as their record and need no check (a damaged one is still caught by its size while it is read for
 * delivery).
 */
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../core/log.ts';
import { isQueueId } from '../core/queue-id.ts';
import type { IndexDb } from './index-db.ts';

export const BODY_SUFFIX = '.eml';
export const TEMP_SUFFIX = '.tmp';

export interface RecoveryReport {
  readonly tempFilesRemoved: number;
  readonly uncommittedBodiesRemoved: number;
  /** Queue ids whose commit record has no body; they are now in state `corrupt`. */
  readonly missingBodies: readonly string[];
  /** Queue ids whose body's size differs from the recorded size; they are now in state `corrupt`. */
  readonly badBodies: readonly string[];
}

export function recoverSpool(options: {
  dataDir: string;
  tempDir: string;
  bodyDir: string;
  index: IndexDb;
  logger: Logger;
  now: number;
}): RecoveryReport {
  const { dataDir, tempDir, bodyDir, index, logger, now } = options;
  let tempFilesRemoved = 0;
  for (const entry of readdirSync(tempDir, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    unlinkSync(join(tempDir, entry.name));
    tempFilesRemoved++;
    logger.debug('temp spool file removed', { file: entry.name });
  }

  let uncommittedBodiesRemoved = 0;
  for (const entry of readdirSync(bodyDir, { withFileTypes: true })) {
    const id = entry.name.endsWith(BODY_SUFFIX) ? entry.name.slice(0, -BODY_SUFFIX.length) : '';
    if (!entry.isFile() || !isQueueId(id)) {
      logger.warn('unexpected file in spool', { file: entry.name });
      continue;
    }
    if (index.has(id)) continue;
    unlinkSync(join(bodyDir, entry.name));
    uncommittedBodiesRemoved++;
    logger.info('uncommitted spool file removed', { queue_id: id });
  }

  const missingBodies: string[] = [];
  const badBodies: string[] = [];
  for (const { queueId, bodyPath, size } of index.bodyPaths()) {
    let actual: number;
    try {
      actual = statSync(join(dataDir, bodyPath)).size;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
      index.markCorrupt(queueId, 'body file missing at recovery', now);
      missingBodies.push(queueId);
      logger.error('queued message has no body', { queue_id: queueId, body_path: bodyPath });
      continue;
    }
    if (actual === size) continue;
    index.markCorrupt(queueId, `body file has ${actual} bytes, ${size} were queued`, now);
    badBodies.push(queueId);
    logger.error('queued message body has the wrong size', { queue_id: queueId, body_path: bodyPath, size, actual_size: actual });
  }

  if (tempFilesRemoved + uncommittedBodiesRemoved + missingBodies.length + badBodies.length > 0) {
    logger.info('spool recovered', {
      temp_files_removed: tempFilesRemoved,
      uncommitted_bodies_removed: uncommittedBodiesRemoved,
      missing_bodies: missingBodies.length,
      bad_bodies: badBodies.length,
    });
  }
  return { tempFilesRemoved, uncommittedBodiesRemoved, missingBodies, badBodies };
}
