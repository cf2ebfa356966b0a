/**
 * Purpose: the durable mail queue: a SQLite index for envelopes, per-recipient delivery state and bodies up to
 *   64 KiB (inline, committed with their record), spool files for larger bodies, group commit (one WAL fdatasync
 *   off the event loop per batch, before any 250), recovery, the queue runner (bounded active window, backoff,
 *   lifetime, bounces, delay warnings), admin commands (hold, release, retry, flush, delete) and queue listing for
 *   the CLI and web.
 *   Defines the asynchronous MailQueue port (port.ts) that the receive path, the runner and the CLI use, with its
 *   embedded implementation (SqliteMailQueue, a wrapper of the synchronous QueueStore; the PostgreSQL one lives in
 *   store/), and the Deliverer and Bouncer interfaces that the delivery module implements.
 * Trust: writes the spool under the data directory; trusts the envelope it is given (decided by policy);
 *   reads message bytes only to find the Message-ID header and to hand bodies to the deliverer. Needs no privileges.
 * Standards: RFC 5321 sections 4.1.1.4 and 6.1 (a 250 after DATA means the message is safe on disk; a bounce is
 *   never bounced), 4.5.4.1 (retry strategy); RFC 3463 (4.4.7 delivery time expired).
 */
export { QueueStore, Incoming } from './store.ts';
export type { StoreHooks } from './store.ts';
export { SpoolFile } from './spool-file.ts';
export { SqliteMailQueue } from './sqlite-queue.ts';
export { LEASE_LOST } from './port.ts';
export type { MailQueue, NodeDetail, NodeSummary, RunnerBackend } from './port.ts';
export { clip, clipReply, groupDeferred, recipientDomain, replyLine } from './index-db.ts';
export type { AttemptRecord, AttemptResult, DueEntry, MessageRecord, RecipientUpdate } from './index-db.ts';
export { GroupCommit } from './group-commit.ts';
export type { AdminTarget, EsmtpParams, IncomingEnvelope, IncomingMessage, QueueStats, QueueStoreOptions } from './store.ts';
export { DEFAULT_INLINE_MAX_BYTES } from './store.ts';
export { QueueRunner, backoffDelay, DEFAULT_RETRY_POLICY } from './runner.ts';
export type { QueueRunnerOptions, RetryPolicy, RunSummary, RunnerStats } from './runner.ts';
export type {
  Bouncer,
  DelayedRecipient,
  Deliverer,
  DeliveryJob,
  DeliveryOutcome,
  DeliveryRecipient,
  FailedRecipient,
  QueuedMessageView,
  RecipientOutcome,
} from './deliverer.ts';
export type {
  AdminResult,
  CountedState,
  DeferredReason,
  ListFilter,
  MessageState,
  QueuedMessageDetail,
  QueuedMessageSummary,
  QueuedRecipient,
  QueueCounts,
  RecipientState,
  StateCount,
} from './index-db.ts';
export { COUNTED_STATES, MESSAGE_STATES, RECIPIENT_STATES, queueCounts } from './index-db.ts';
export type { RecoveryReport } from './recovery.ts';
export type { SpaceVerdict } from './space.ts';
export { ERR_QUEUE_BODY } from './body-reader.ts';
export {
  ERR_QUEUE_CLOSED,
  ERR_QUEUE_LOCKED,
  ERR_QUEUE_NOSPACE,
  ERR_QUEUE_OPEN,
  ERR_QUEUE_READONLY,
  ERR_QUEUE_STATE,
  ERR_QUEUE_WRITE,
} from './queue-errors.ts';
export { toQueueWriteError } from './queue-errors.ts';
export { openInlineBody } from './body-reader.ts';
