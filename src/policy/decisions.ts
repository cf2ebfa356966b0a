/**
 * Relay decisions as data: the store port for the recipient decisions the receive path logs ('relay decision'
 * events), and the batching recorder that feeds it off the SMTP hot path.
 * Purpose: answer "why was this refused?" and search recent decisions (by client address, sender, recipient,
 * action, rule, time) from a bounded table instead of log files.
 * Trust: the rows hold what clients sent (addresses, HELO names): values only, rendered escaped by the web layer.
 *
 *   DecisionStore     the port (store/sqlite-decisions.ts: dataDir/decisions.db; store/postgres-decisions.ts:
 *                     table relay_decisions, migration 006).
 *   DecisionRecorder  buffers decisions in memory and writes them in batches (every `flushMs` or `batchRows` rows,
 *                     one transaction per batch); applies retention (age and row limits) at most once a minute.
 *                     A failed write never reaches SMTP: the batch is dropped, counted, and logged (ERR_DECISIONS_WRITE);
 *                     past `maxBuffered` rows waiting (a slow store), new decisions are dropped and counted too.
 * Addresses (sender, recipient) are stored lower-cased without angle brackets, so filters match case-insensitively.
 */
import { errorCode } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';

export const ERR_DECISIONS_WRITE = 'ERR_DECISIONS_WRITE';
export const ERR_DECISIONS_PRUNE = 'ERR_DECISIONS_PRUNE';

export interface NewDecision {
  /** Epoch ms. */
  readonly at: number;
  readonly node: string;
  readonly sessionId: string | null;
  readonly clientIp: string;
  readonly listener: string | null;
  readonly helo: string | null;
  readonly user: string | null;
  /** Lower-cased, no angle brackets; '' for the null sender; null before MAIL (never for a RCPT decision). */
  readonly mailFrom: string | null;
  /** Lower-cased canonical recipient, no angle brackets. */
  readonly rcpt: string;
  /** reject, local or relay. */
  readonly action: string;
  readonly rule: string;
  readonly reason: string | null;
  /** The refusal's reply line ("554 5.7.1 ..."), null when accepted. */
  readonly reply: string | null;
}

export interface DecisionRecord extends NewDecision {
  /** Increasing per store: the paging cursor. */
  readonly id: number;
}

export interface DecisionFilter {
  readonly clientIp?: string;
  /** Exact address, any case ('' finds the null sender). */
  readonly sender?: string;
  readonly rcpt?: string;
  readonly action?: string;
  readonly rule?: string;
  /** Epoch ms, inclusive. */
  readonly since?: number;
  /** Epoch ms, exclusive. */
  readonly until?: number;
  /** Only rows with id < before (the cursor of the previous page). */
  readonly before?: number;
  readonly limit: number;
}

export interface Retention {
  /** Rows older than this (ms) are deleted. */
  readonly maxAgeMs: number;
  /** At most this many rows are kept (the newest). */
  readonly maxRows: number;
}

export interface DecisionStore {
  /** Writes the rows in one transaction (all or none). */
  append(rows: readonly NewDecision[]): Promise<void>;
  /** Matching rows, newest first (id descending). */
  search(filter: DecisionFilter): Promise<DecisionRecord[]>;
  /** Deletes rows past the retention limits; returns how many. */
  prune(retention: Retention, now: number): Promise<number>;
  close(): Promise<void>;
}

/** A decision from the fields of a 'relay decision' log event (receive-handler.ts), or null when it is not one. */
export function decisionFromEvent(fields: Readonly<Record<string, unknown>> | undefined, node: string, at: number): NewDecision | null {
  if (!fields) return null;
  const str = (k: string): string | null => (typeof fields[k] === 'string' ? (fields[k] as string) : null);
  const rcpt = str('rcpt_canonical') ?? str('rcpt');
  const action = str('action');
  const clientIp = str('client_ip');
  if (rcpt === null || action === null || clientIp === null) return null;
  const mailFrom = str('mail_from');
  const sid = fields['session_id'];
  return {
    at, node,
    sessionId: typeof sid === 'string' || typeof sid === 'number' ? String(sid) : null,
    clientIp,
    listener: str('listener'),
    helo: clip(str('helo'), 255),
    user: clip(str('user'), 255),
    mailFrom: mailFrom === null ? null : address(mailFrom),
    rcpt: address(rcpt),
    action,
    rule: str('rule') ?? 'none',
    reason: clip(str('reason'), 1000),
    reply: clip(str('reply'), 1000),
  };
}

/** An address as stored and searched: no angle brackets, lower case, at most 320 characters. */
export function address(s: string): string {
  const t = s.trim();
  return (t.startsWith('<') && t.endsWith('>') ? t.slice(1, -1) : t).toLowerCase().slice(0, 320);
}

const clip = (s: string | null, n: number): string | null => (s === null ? null : s.length > n ? s.slice(0, n) : s);

export interface RecorderOptions {
  readonly store: DecisionStore;
  readonly logger: Logger;
  readonly retention: Retention;
  /** Default 250 ms. */
  readonly flushMs?: number;
  /** Default 500. */
  readonly batchRows?: number;
  /** Rows waiting beyond this are dropped (default 20,000). */
  readonly maxBuffered?: number;
  /** Retention runs at most this often (default 60 s). */
  readonly pruneEveryMs?: number;
  readonly now?: () => number;
}

export class DecisionRecorder {
  readonly #o: Required<Omit<RecorderOptions, 'now'>> & { now: () => number };
  #buffer: NewDecision[] = [];
  #timer: NodeJS.Timeout | null = null;
  #writing: Promise<void> | null = null;
  #lastPrune = 0;
  #closed = false;
  /** Rows written, and rows dropped (failed batches and buffer overflow). */
  written = 0;
  dropped = 0;

  constructor(options: RecorderOptions) {
    this.#o = { flushMs: 250, batchRows: 500, maxBuffered: 20_000, pruneEveryMs: 60_000, now: Date.now, ...options };
  }

  get store(): DecisionStore {
    return this.#o.store;
  }

  /** Buffers one decision (synchronous, no I/O). */
  record(d: NewDecision): void {
    if (this.#closed) return;
    if (this.#buffer.length >= this.#o.maxBuffered) {
      this.dropped++;
      if (this.dropped === 1 || this.dropped % 1000 === 0) {
        this.#o.logger.error('decisions dropped', { err_code: ERR_DECISIONS_WRITE, rows: 1, dropped_total: this.dropped, reason: 'buffer full' });
      }
      return;
    }
    this.#buffer.push(d);
    if (this.#buffer.length >= this.#o.batchRows && this.#writing === null) this.#kick(0);
    else if (this.#timer === null && this.#writing === null) this.#kick(this.#o.flushMs);
  }

  #kick(delay: number): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => { this.#timer = null; void this.#write(); }, delay);
    this.#timer.unref();
  }

  /** Writes what is buffered now (batch by batch); resolves when written or dropped. */
  async flush(): Promise<void> {
    if (this.#timer !== null) { clearTimeout(this.#timer); this.#timer = null; }
    while (this.#writing !== null) await this.#writing;
    while (this.#buffer.length > 0) await this.#write();
  }

  #write(): Promise<void> {
    if (this.#writing !== null) return this.#writing;
    const batch = this.#buffer.splice(0, this.#o.batchRows);
    if (batch.length === 0) return Promise.resolve();
    const p = (async () => {
      try {
        await this.#o.store.append(batch);
        this.written += batch.length;
      } catch (err) {
        this.dropped += batch.length;
        this.#o.logger.error('decisions dropped', {
          err_code: ERR_DECISIONS_WRITE, cause_code: errorCode(err), error: String((err as Error)?.message ?? err).slice(0, 300),
          rows: batch.length, dropped_total: this.dropped,
        });
      }
      const now = this.#o.now();
      if (now - this.#lastPrune >= this.#o.pruneEveryMs) {
        this.#lastPrune = now;
        try {
          const n = await this.#o.store.prune(this.#o.retention, now);
          if (n > 0) this.#o.logger.info('decisions pruned', { rows: n });
        } catch (err) {
          this.#o.logger.error('decisions prune failed', { err_code: ERR_DECISIONS_PRUNE, error: String((err as Error)?.message ?? err).slice(0, 300) });
        }
      }
    })().finally(() => {
      this.#writing = null;
      if (this.#buffer.length > 0 && !this.#closed) this.#kick(this.#buffer.length >= this.#o.batchRows ? 0 : this.#o.flushMs);
    });
    this.#writing = p;
    return p;
  }

  /** Writes what is buffered, then closes the store. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#closed = true;
    if (this.#timer !== null) { clearTimeout(this.#timer); this.#timer = null; }
    await this.#o.store.close();
  }
}
