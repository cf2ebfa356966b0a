/**
 * The contract between the queue runner and the delivery module. The queue defines it; delivery implements it
 * (importing these types only). The runner hands a Deliverer one message with all its due recipients; the
 * Deliverer routes them (groups by next hop, one transaction per destination) and answers with one outcome per
 * recipient. The runner records outcomes only after deliver() settles, so a crash between a next hop's 250 and
 * that record redelivers the recipient: at least once, never lost.
 *
 * A Bouncer turns failed recipients into RFC 3464 reports and queues them (from <>) through the store's normal
 * receive path; the runner never calls it for a message whose own sender is <> (a bounce is never bounced).
 */
import type { Readable } from 'node:stream';
import type { Reply } from '../core/reply.ts';
import type { EsmtpParams } from './store.ts';

/** A queued message as delivery and bounce code see it. */
export interface QueuedMessageView {
  readonly queueId: string;
  /** The reverse path, '' for the null sender <>. */
  readonly sender: string;
  /** MAIL FROM parameters as received (BODY, SMTPUTF8, RET, ENVID, ...). */
  readonly mailParams: EsmtpParams;
  /** Ms since the epoch. */
  readonly receivedAt: number;
  /** Body size in bytes, exactly what openBody() yields. */
  readonly size: number;
  readonly messageId: string | null;
  readonly clientIp: string;
  readonly helo: string | null;
  readonly authUser: string | null;
  readonly listener: string;
  /**
   * A fresh stream of the spool body (the message as received: headers, blank line, body, CRLF line ends, not
   * dot-stuffed). Call it as often as needed (one per next hop). The stream errors, and never ends, if the body is
   * missing, unreadable or not exactly `size` bytes long: the caller must then abandon the transaction and never
   * send the final dot, so no next hop receives half a message. The runner sets such a message aside as corrupt.
   * Streams still open when deliver() or bounce() settles are destroyed: read the body before resolving.
   */
  openBody(): Readable;
}

export interface DeliveryRecipient {
  readonly address: string;
  /** RCPT TO parameters as received (NOTIFY, ORCPT, ...). */
  readonly params: EsmtpParams;
  /** Attempts already made for this recipient (0 on the first one). */
  readonly attempts: number;
}

export interface DeliveryJob extends QueuedMessageView {
  /** The message's open recipients that are due now, in envelope order. Never empty. */
  readonly recipients: readonly DeliveryRecipient[];
  /** 1 on the first attempt: one more than the most attempts of any recipient in the job. */
  readonly attempt: number;
}

export type DeliveryOutcome = 'delivered' | 'deferred' | 'bounced';

export interface RecipientOutcome {
  /** Exactly as in the job (outcomes are matched to job recipients by address, in order). */
  readonly address: string;
  /** delivered: a next hop accepted it (2xx). deferred: try again later (4xx, connection or DNS trouble).
   *  bounced: permanent failure (5xx, NXDOMAIN, null MX, loop). */
  readonly outcome: DeliveryOutcome;
  /** The next hop's reply, when there was one. */
  readonly reply?: Reply;
  /** Which host answered, e.g. "mx1.example.net [192.0.2.7]". */
  readonly remoteMta?: string;
  /** What happened when there was no reply ("connect to mx1.example.net[192.0.2.7]:25: Connection refused"). */
  readonly diagnostic?: string;
  /** The destination class the deliverer routed it by (local, smarthost, mx): logged with the outcome, for metrics. */
  readonly route?: string;
}

export interface Deliverer {
  /**
   * Delivers one message to the given recipients. Resolve with an outcome per recipient; a recipient without one
   * is deferred. Rejecting defers every recipient of the job (unless the runner is stopping and `signal` is
   * aborted: then nothing is recorded and the next start tries again). Honour `signal` promptly: it aborts when
   * the runner stops or the job exceeds the runner's job timeout.
   */
  deliver(job: DeliveryJob, signal: AbortSignal): Promise<readonly RecipientOutcome[]>;
}

/** A recipient the queue gave up on, as a DSN reports it. */
export interface FailedRecipient {
  readonly address: string;
  readonly params: EsmtpParams;
  /** The RFC 3463 status for the DSN: the next hop's enhanced code, "4.4.7" when the queue lifetime expired. */
  readonly status: string;
  readonly reply: Reply | null;
  readonly remoteMta: string | null;
  readonly diagnostic: string | null;
  readonly attempts: number;
  readonly lastAttemptAt: number | null;
}

/** A recipient still being retried, for a delay warning (a DSN with Action: delayed). */
export interface DelayedRecipient extends FailedRecipient {
  /** When the queue tries again. */
  readonly nextAttemptAt: number;
  /** When the queue gives up (receivedAt + lifetime). */
  readonly expiresAt: number;
}

export interface Bouncer {
  /**
   * Reports recipients that failed for good (DSN with Action: failed, from <>), once per message, when no
   * recipient of it is left to try. Applying NOTIFY (RFC 3461) is the bouncer's part: it receives every failed
   * recipient. Resolve once the report is queued durably; rejecting keeps the message, and the runner calls
   * again after the minimal backoff (a crash after the report was queued may send it twice).
   * Never called for a message whose sender is <>.
   */
  bounce(message: QueuedMessageView, recipients: readonly FailedRecipient[]): Promise<void>;
  /**
   * Reports recipients still deferred after the delay-warning time (Action: delayed), at most once per message
   * (only when the runner's delayWarning is set). Never called for a sender of <>.
   */
  delayed(message: QueuedMessageView, recipients: readonly DelayedRecipient[]): Promise<void>;
}
