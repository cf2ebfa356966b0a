/**
 * Purpose: the durable mail queue (receive half): spool files for bodies, a SQLite index for envelopes and
 *   per-recipient delivery state, group commit, receive-side recovery, queue listing for the CLI and dashboard.
 * Trust: writes the spool under the data directory; trusts the envelope it is given (decided by policy);
 *   reads message bytes only to find the Message-ID header. Needs no privileges.
 * Standards: RFC 5321 section 4.1.1.4 and 6.1 (a 250 after DATA means the message is safe on disk).
 */
export { QueueStore } from './store.ts';
export type { EsmtpParams, IncomingEnvelope, IncomingMessage, QueueStats, QueueStoreOptions } from './store.ts';
export type {
  ListFilter,
  MessageState,
  QueuedMessageDetail,
  QueuedMessageSummary,
  QueuedRecipient,
  RecipientState,
} from './index-db.ts';
export type { RecoveryReport } from './recovery.ts';
export type { SpaceVerdict } from './space.ts';
export {
  ERR_QUEUE_CLOSED,
  ERR_QUEUE_LOCKED,
  ERR_QUEUE_NOSPACE,
  ERR_QUEUE_OPEN,
  ERR_QUEUE_READONLY,
  ERR_QUEUE_STATE,
  ERR_QUEUE_WRITE,
} from './queue-errors.ts';
