/**
 * Receive-side recovery, run when a receiving store opens (under the receiver lock, so no other receiver is
 * writing): temp files are bodies whose DATA never finished and are deleted; bodies in the spool without a
 * commit record were never acknowledged with 250 and are deleted; commit records whose body is missing are
 * marked corrupt (never delivered half) and logged.
 */
import { existsSync, readdirSync, unlinkSync } from 'node:fs';
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
  for (const { queueId, bodyPath } of index.bodyPaths()) {
    if (existsSync(join(dataDir, bodyPath))) continue;
    index.markCorrupt(queueId, 'body file missing at recovery', now);
    missingBodies.push(queueId);
    logger.error('queued message has no body', { queue_id: queueId, body_path: bodyPath });
  }

  if (tempFilesRemoved + uncommittedBodiesRemoved + missingBodies.length > 0) {
    logger.info('spool recovered', {
      temp_files_removed: tempFilesRemoved,
      uncommitted_bodies_removed: uncommittedBodiesRemoved,
      missing_bodies: missingBodies.length,
    });
  }
  return { tempFilesRemoved, uncommittedBodiesRemoved, missingBodies };
}
