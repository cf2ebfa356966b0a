/**
 * The queue runner (Postfix's qmgr): finds due messages in the index, hands each one with its due recipients to
 * the Deliverer, records the outcome per recipient, reports permanent failures to the Bouncer, and removes
 * messages with nothing left to try.
 *
 * - Bounded active window: a pass pages through due messages with a keyset cursor on (next_run_at, queue_id).
 *   At most `windowSize` queue ids are held (selected, waiting or in flight) and at most `concurrency`
 *   deliveries run, whatever the size of the queue. Only messages in flight are loaded in full.
 * - At least once: outcomes are recorded only after deliver() settles (attempts that finish together share one
 *   transaction, a group commit); a crash between a next hop's 250 and that record leaves the recipient open,
 *   and it is delivered again.
 * - Never a held or corrupt message: the due query selects `queued` messages and each message's state is read
 *   again just before its delivery starts. A body that turns out missing, short or long during delivery sets the
 *   message aside as corrupt (the body stream errors instead of ending, so no next hop gets half of it).
 * - Retry: a deferred recipient waits min(maximalBackoff, minimalBackoff * 2^(attempts-1)) (5 min doubling to
 *   4 h), less optional jitter, and never past the end of its lifetime, when it gets one last attempt; a deferral
 *   at or after the lifetime (5 days from receipt) becomes a bounce with status 4.4.7.
 * - Bounces: after each attempt, recipients that failed for good and were not reported yet go to the Bouncer at
 *   once (as Postfix does: the sender hears of a 5xx without waiting for the deferred recipients), and are marked
 *   reported once it resolves. A message with nothing left to try is removed (records first, body second); if
 *   the Bouncer failed it stays and is tried again after the minimal backoff. A message from <> is never
 *   bounced: its failures are logged and dropped (RFC 5321 section 6.1; Postfix would tell the postmaster).
 * - Delay warning (off by default): at the first attempt after `delayWarning` that still leaves recipients
 *   deferred, once per message.
 * - Wake-ups: after each pass the runner sleeps until the earliest next_run_at, at most `pollInterval`
 *   (default 1 s, one index probe), or until kick(). The store kicks it after every release and retry in this
 *   process; changes made by `relayguard queue` in another process are seen at the next poll.
 * - Hand-over (the embedded queue): after each group commit the store hands the batch to the runner, which takes
 *   it into the pass at once, without a due() scan (and get() answers each message's first call from the committed
 *   record after one state read). While messages keep arriving this way the runner still scans from the start at
 *   least every `pollInterval`, so retries that fell due meanwhile wait at most that long. An attempt that finishes
 *   its message (every recipient delivered) is recorded with one DELETE, on the next group commit's transaction.
 * - Backends: the runner works on the asynchronous RunnerBackend (port.ts), the same rules for the embedded SQLite
 *   queue and the shared PostgreSQL one. On PostgreSQL due() claims messages with leases, get() before delivery
 *   and every write after it are fenced on the lease: outcomes of a message another node took over are dropped
 *   and counted (stats().possibleDuplicates, a 'delivery outcome not recorded; possible duplicate' event).
 * All time decisions use the injected Clock; tests drive a pass with runOnce().
 */
import { timeoutSignal } from '../core/abort.ts';
import type { Readable } from 'node:stream';
import type { Clock } from '../core/clock.ts';
import { SYSTEM_CLOCK } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Reply } from '../core/reply.ts';
import { isTransientBodyError } from './body-reader.ts';
import type {
  Bouncer,
  DelayedRecipient,
  Deliverer,
  DeliveryJob,
  FailedRecipient,
  QueuedMessageView,
  RecipientOutcome,
} from './deliverer.ts';
import type { AttemptRecord, AttemptResult, DueEntry, QueuedMessageDetail, QueuedRecipient, RecipientUpdate } from './index-db.ts';
import { replyLine } from './index-db.ts';
import type { MailQueue, RunnerBackend } from './port.ts';
import { LEASE_LOST } from './port.ts';
import { ERR_QUEUE_STATE } from './queue-errors.ts';
import { sqliteRunnerBackend } from './sqlite-queue.ts';
import { QueueStore } from './store.ts';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export interface RetryPolicy {
  /** First retry delay; it doubles after each failed attempt. Default 5 min. */
  readonly minimalBackoffMs: number;
  /** Longest retry delay. Default 4 h. */
  readonly maximalBackoffMs: number;
  /** Time in the queue after which a deferral becomes a bounce (4.4.7). Default 5 days. */
  readonly lifetimeMs: number;
  /** Send one delay warning per message once it has been queued this long; null (default) sends none. */
  readonly delayWarningMs: number | null;
  /** Each delay is shortened by up to this fraction, at random (0 to 1). Default 0: exact, deterministic. */
  readonly jitter: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  minimalBackoffMs: 5 * MINUTE,
  maximalBackoffMs: 4 * HOUR,
  lifetimeMs: 5 * DAY,
  delayWarningMs: null,
  jitter: 0,
};

/** The wait after the n-th failed attempt (n >= 1): min(max, min * 2^(n-1)), less jitter. */
export function backoffDelay(failedAttempts: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const n = Math.max(1, Math.floor(failedAttempts));
  const base = Math.min(policy.maximalBackoffMs, policy.minimalBackoffMs * 2 ** Math.min(n - 1, 40));
  if (policy.jitter <= 0) return base;
  return Math.max(1, Math.round(base * (1 - Math.min(1, policy.jitter) * random())));
}

export interface QueueRunnerOptions {
  /** A receiving queue (QueueStore.open, or a MailQueue port: SQLite or PostgreSQL); one runner per queue object. */
  readonly store: QueueStore | MailQueue;
  readonly deliverer: Deliverer;
  readonly bouncer: Bouncer;
  readonly clock?: Clock;
  readonly logger?: Logger;
  readonly retry?: Partial<RetryPolicy>;
  /** Most queue ids held in memory at once (selected, waiting or in flight). Default 1000. */
  readonly windowSize?: number;
  /** Most deliveries in flight. Default 20. */
  readonly concurrency?: number;
  /** Longest sleep between looks at the index (how soon another process's flush is seen). Default 1000 ms. */
  readonly pollIntervalMs?: number;
  /** A delivery still running after this long is aborted (its signal fires). Default 1 h. */
  readonly jobTimeoutMs?: number;
  /** How long the runner pauses after an unexpected failure (an index write that failed, say). Default 30 s. */
  readonly errorPauseMs?: number;
  /** Random source for jitter (tests pass a fixed one). */
  readonly random?: () => number;
}

/** Counts for one pass (runOnce) or, in stats(), since the runner was made. Recipients unless said otherwise. */
export interface RunSummary {
  /** Messages handed to the deliverer. */
  messages: number;
  delivered: number;
  deferred: number;
  /** Includes the expired ones. */
  bounced: number;
  /** Deferrals turned into bounces because the lifetime was over. */
  expired: number;
  /** Messages set aside as corrupt during delivery. */
  corrupt: number;
  /** Messages that left the queue (all recipients delivered or bounced). */
  finished: number;
}

export interface RunnerStats extends RunSummary {
  readonly state: 'idle' | 'running' | 'stopping' | 'stopped';
  /** Queue ids held now, and the most ever held. */
  readonly window: number;
  readonly maxWindow: number;
  /** Deliveries in flight now, and the most ever. */
  readonly inFlight: number;
  readonly maxInFlight: number;
  readonly passes: number;
  /** Recipients a next hop accepted whose outcome could not be recorded (lease lost, database failing): they may
   *  be delivered again (at least once). */
  readonly possibleDuplicates: number;
  /** Messages whose lease this node lost before recording (PostgreSQL). */
  readonly leasesLost: number;
}

function emptySummary(): RunSummary {
  return { messages: 0, delivered: 0, deferred: 0, bounced: 0, expired: 0, corrupt: 0, finished: 0 };
}

function positiveInt(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}

const isOpen = (r: QueuedRecipient): boolean => r.state === 'pending' || r.state === 'deferred';

export class QueueRunner {
  readonly #port: RunnerBackend;
  readonly #deliverer: Deliverer;
  readonly #bouncer: Bouncer;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #policy: RetryPolicy;
  readonly #windowSize: number;
  readonly #concurrency: number;
  readonly #pollMs: number;
  readonly #jobTimeoutMs: number;
  readonly #errorPauseMs: number;
  readonly #random: () => number;
  readonly #unsubscribe: () => void;
  readonly #stopSignal = new AbortController();
  #state: RunnerStats['state'] = 'idle';
  #loop: Promise<void> | null = null;
  #pass: Promise<RunSummary> | null = null;
  /** A due() scan from the start is wanted (kick(), a timer, a pause, runOnce()). */
  #kicked = true;
  /** When the last scan from the start began (clock ms): under a steady flow of handed-over messages the runner
   *  rescans at least every pollInterval, so retries that fell due meanwhile are not left waiting. */
  #lastScanAt = Number.NEGATIVE_INFINITY;
  /** Messages the backend handed over at commit (onWork), not yet taken into a pass. */
  #handed: DueEntry[] = [];
  #wake: (() => void) | null = null;
  #pausedUntil = Number.NEGATIVE_INFINITY;
  #window = 0;
  #inFlight = 0;
  #maxWindow = 0;
  #maxInFlight = 0;
  #passes = 0;
  #possibleDuplicates = 0;
  #leasesLost = 0;
  readonly #totals = emptySummary();
  #records: { record: AttemptRecord; resolve: (r: AttemptResult | null | typeof LEASE_LOST) => void; reject: (err: unknown) => void }[] = [];
  #recordsScheduled = false;

  constructor(options: QueueRunnerOptions) {
    const policy = { ...DEFAULT_RETRY_POLICY, ...options.retry };
    for (const k of ['minimalBackoffMs', 'maximalBackoffMs', 'lifetimeMs'] as const) {
      if (!(policy[k] > 0)) throw new RangeError(`retry.${k} must be positive`);
    }
    if (policy.minimalBackoffMs > policy.maximalBackoffMs) throw new RangeError('retry.minimalBackoffMs exceeds retry.maximalBackoffMs');
    if (policy.delayWarningMs !== null && !(policy.delayWarningMs > 0)) throw new RangeError('retry.delayWarningMs must be positive or null');
    if (!(policy.jitter >= 0 && policy.jitter <= 1)) throw new RangeError('retry.jitter must be between 0 and 1');
    this.#policy = policy;
    this.#windowSize = positiveInt(options.windowSize, 1000, 'windowSize');
    this.#concurrency = Math.min(positiveInt(options.concurrency, 20, 'concurrency'), this.#windowSize);
    this.#pollMs = positiveInt(options.pollIntervalMs, 1000, 'pollIntervalMs');
    this.#jobTimeoutMs = positiveInt(options.jobTimeoutMs, HOUR, 'jobTimeoutMs');
    this.#errorPauseMs = positiveInt(options.errorPauseMs, 30_000, 'errorPauseMs');
    this.#deliverer = options.deliverer;
    this.#bouncer = options.bouncer;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#random = options.random ?? Math.random;
    this.#port = options.store instanceof QueueStore ? sqliteRunnerBackend(options.store) : options.store.attachRunner();
    this.#logger = (options.logger ?? this.#port.logger).child({ component: 'queue-runner' });
    this.#unsubscribe = this.#port.onWork((handed) => (handed === undefined ? this.kick() : this.#offer(handed)));
  }

  get policy(): RetryPolicy {
    return this.#policy;
  }

  /** Runs passes until stop(): each pass delivers what is due, then the runner sleeps until more is. */
  start(): void {
    if (this.#state !== 'idle') throw new RelayguardError(ERR_QUEUE_STATE, `Queue runner is ${this.#state}`);
    if (this.#pass !== null) throw new RelayguardError(ERR_QUEUE_STATE, 'Queue runner is in a pass (runOnce)');
    this.#state = 'running';
    this.#logger.info('queue runner started', {
      window_size: this.#windowSize, concurrency: this.#concurrency, minimal_backoff_ms: this.#policy.minimalBackoffMs,
      maximal_backoff_ms: this.#policy.maximalBackoffMs, lifetime_ms: this.#policy.lifetimeMs,
    });
    this.#loop = this.#run();
  }

  /** New work may be due: start a pass now (or refill the one under way). Cheap; call it as often as you like. */
  kick(): void {
    this.#kicked = true;
    this.#wakeUp();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Messages just committed, due now: taken into the pass without a due() scan (see RunnerBackend.onWork). */
  #offer(handed: readonly DueEntry[]): void {
    if (this.#handed.length + handed.length > this.#windowSize) {
      // Far behind: scan instead (the scan finds these too).
      this.#handed = [];
      this.kick();
      return;
    }
    for (const e of handed) this.#handed.push(e);
    this.#wakeUp();
  }

  /**
   * One pass over everything due now; resolves when those deliveries, records and bounces are done. For tests
   * and one-shot use; refused while start()ed or while another pass runs.
   */
  runOnce(): Promise<RunSummary> {
    if (this.#state !== 'idle') return Promise.reject(new RelayguardError(ERR_QUEUE_STATE, `Queue runner is ${this.#state}`));
    if (this.#pass !== null) return Promise.reject(new RelayguardError(ERR_QUEUE_STATE, 'Queue runner is already in a pass'));
    this.#kicked = true; // a pass over everything due, not only what was handed over
    return this.#runPass();
  }

  /** Stops: no new deliveries, in-flight ones are aborted (their signal fires) and awaited. Idempotent. */
  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    const wasRunning = this.#state === 'running';
    this.#state = 'stopping';
    this.#stopSignal.abort(new RelayguardError('ERR_QUEUE_STOPPING', 'Queue runner is stopping'));
    this.kick();
    await this.#loop;
    await this.#pass?.catch(() => {});
    this.#unsubscribe();
    await this.#port.detach();
    this.#state = 'stopped';
    if (wasRunning) this.#logger.info('queue runner stopped', {});
  }

  stats(): RunnerStats {
    return {
      ...this.#totals,
      state: this.#state,
      window: this.#window,
      maxWindow: this.#maxWindow,
      inFlight: this.#inFlight,
      maxInFlight: this.#maxInFlight,
      passes: this.#passes,
      possibleDuplicates: this.#possibleDuplicates,
      leasesLost: this.#leasesLost,
    };
  }

  async #run(): Promise<void> {
    while (this.#state === 'running') {
      let handled = 0;
      try {
        handled = (await this.#runPass()).messages;
      } catch (err) {
        this.#logger.error('queue pass failed', { error: String(err) });
        this.#pause();
      }
      if (this.#state !== 'running') break;
      if (this.#workWaiting()) continue;
      await this.#sleep(await this.#sleepMs(handled));
    }
  }

  async #sleepMs(handled: number): Promise<number> {
    let next: number | null = null;
    try {
      next = await this.#port.nextDue();
    } catch (err) {
      this.#logger.error('queue index not readable', { error: String(err) });
    }
    const now = this.#clock.now();
    let ms = next === null ? this.#pollMs : Math.min(this.#pollMs, Math.max(0, next - now));
    // Something due that the pass just skipped (paused, or changed under it): poll rather than spin.
    if (ms === 0 && handled === 0) ms = this.#pollMs;
    if (now < this.#pausedUntil) ms = Math.max(ms, Math.min(this.#pollMs, this.#pausedUntil - now));
    return ms;
  }

  #sleep(ms: number): Promise<void> {
    if (ms <= 0) this.#kicked = true; // something is due now: look for it
    if (this.#workWaiting()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = null;
        resolve();
      };
      const timer = setTimeout(() => {
        this.#kicked = true; // the time something falls due, or the poll: scan
        done();
      }, ms);
      this.#wake = done;
    });
  }

  /** A pass should start now: kicked, or handed-over messages wait (unless paused: they wait for the pause). */
  #workWaiting(): boolean {
    return this.#kicked || (this.#handed.length > 0 && this.#clock.now() >= this.#pausedUntil);
  }

  #pause(): void {
    this.#pausedUntil = this.#clock.now() + this.#errorPauseMs;
    this.#kicked = true; // what the paused pass let go is found again by a scan
  }

  #runPass(): Promise<RunSummary> {
    const p = this.#passBody();
    this.#pass = p;
    const clear = (): void => {
      if (this.#pass === p) this.#pass = null;
    };
    p.then(clear, clear);
    return p;
  }

  async #passBody(): Promise<RunSummary> {
    this.#passes++;
    const summary = emptySummary();
    const ready: DueEntry[] = [];
    const windowIds = new Set<string>(); // selected in this pass: waiting or in flight
    const running = new Set<Promise<void>>();
    let cursor: DueEntry | null = null;
    // No scan unless kicked or the last one is pollInterval old (a pass for handed-over messages only scans not).
    let exhausted = true;
    try {
      for (;;) {
        const now = this.#clock.now();
        const halted = this.#state === 'stopping' || this.#state === 'stopped' || now < this.#pausedUntil;
        if (this.#kicked || (exhausted && now - this.#lastScanAt >= this.#pollMs)) {
          this.#kicked = false;
          this.#lastScanAt = now;
          exhausted = false;
          // Arrival stamps are taken before the group commit, so new work can sort before the cursor: scan from
          // the start again (windowIds skips what this pass holds already).
          cursor = null;
        }
        // Handed-over messages first: they are due now and never attempted (a scan that finds them later skips
        // them, as they are in windowIds; one taken again after its attempt is read afresh by get()).
        while (!halted && this.#handed.length > 0 && windowIds.size < this.#windowSize) {
          const e = this.#handed.shift()!;
          if (windowIds.has(e.queueId)) continue;
          windowIds.add(e.queueId);
          ready.push(e);
        }
        const room = this.#windowSize - windowIds.size;
        if (!halted && !exhausted && ready.length < this.#concurrency && room > 0) {
          const page = await this.#port.due(this.#clock.now(), cursor, room);
          if (page.length < room) exhausted = true;
          for (const e of page) {
            cursor = e;
            if (windowIds.has(e.queueId)) continue; // re-scheduled while in this pass (a retry)
            windowIds.add(e.queueId);
            ready.push(e);
          }
        }
        while (!halted && running.size < this.#concurrency && ready.length > 0) {
          const e = ready.shift()!;
          this.#inFlight++;
          const p: Promise<void> = this.#attempt(e.queueId, summary).finally(() => {
            this.#inFlight--;
            running.delete(p);
            windowIds.delete(e.queueId);
            this.#window = windowIds.size;
            this.#wakeUp();
          });
          running.add(p);
        }
        this.#window = windowIds.size;
        this.#maxWindow = Math.max(this.#maxWindow, windowIds.size);
        this.#maxInFlight = Math.max(this.#maxInFlight, running.size);
        if (running.size === 0 && (halted || (exhausted && ready.length === 0 && this.#handed.length === 0))) break;
        if (running.size === 0) continue;
        // Woken by an attempt that ends, a kick or a hand-over (one waiter, not a race over every attempt).
        await new Promise<void>((resolve) => { this.#wake = resolve; });
        this.#wake = null;
      }
    } finally {
      this.#window = 0;
      for (const k of Object.keys(summary) as (keyof RunSummary)[]) this.#totals[k] += summary[k];
      // Selected but never started (the pass stopped or paused): give them back (PostgreSQL: their leases).
      await Promise.all(ready.splice(0).map((e) => this.#port.release(e.queueId)));
    }
    return summary;
  }

  /** One message: never rejects. */
  async #attempt(queueId: string, summary: RunSummary): Promise<void> {
    try {
      const now = this.#clock.now();
      const detail = await this.#port.get(queueId);
      if (detail === null || detail.state !== 'queued') return; // deleted, held, set aside or taken over meanwhile
      const open = detail.recipients.filter(isOpen);
      if (open.length === 0) {
        await this.#settle(detail, summary);
        return;
      }
      const due = open.filter((r) => (r.nextAttemptAt ?? 0) <= now);
      if (due.length === 0) {
        await this.#port.refreshNextRun(queueId, now);
        return;
      }
      summary.messages++;
      await this.#deliver(detail, due, summary);
    } catch (err) {
      // Most likely the index refused a write: pause rather than deliver the same message again and again.
      this.#logger.error('queue run failed for a message', { queue_id: queueId, error: String(err) });
      this.#pause();
    } finally {
      await this.#port.release(queueId);
    }
  }

  async #deliver(detail: QueuedMessageDetail, due: readonly QueuedRecipient[], summary: RunSummary): Promise<void> {
    const queueId = detail.queueId;
    let bodyFault: Error | null = null;
    const streams = new Set<Readable>();
    const view = this.#view(detail, streams, (err) => {
      bodyFault ??= err;
    });
    const job: DeliveryJob = {
      ...view,
      recipients: due.map((r) => ({ address: r.address, params: r.params, attempts: r.attempts })),
      attempt: Math.max(...due.map((r) => r.attempts)) + 1,
    };
    // Not AbortSignal.any() with AbortSignal.timeout(): that pinned every job's signal for the job timeout (LK).
    const jobAbort = timeoutSignal(this.#stopSignal.signal, this.#jobTimeoutMs, 'Delivery job');
    let outcomes: readonly RecipientOutcome[] | null = null;
    let failure: unknown = null;
    try {
      const got = await this.#deliverer.deliver(job, jobAbort.signal);
      if (!Array.isArray(got)) throw new TypeError('The deliverer returned no outcome list');
      outcomes = got;
    } catch (err) {
      failure = err;
    } finally {
      jobAbort.release();
      for (const s of streams) s.destroy();
    }
    if (failure !== null && this.#stopSignal.signal.aborted) {
      // Stopping: we do not know what happened, so nothing is recorded; the next start tries again.
      this.#logger.info('delivery interrupted by stop', { queue_id: queueId });
      return;
    }
    if (failure !== null) {
      this.#logger.error('deliverer failed', { queue_id: queueId, error: String(failure) });
    }
    const now = this.#clock.now();
    const updates = this.#updates(detail, due, outcomes, failure, now);
    const fault = bodyFault as Error | null;
    const corrupt = fault !== null && !isTransientBodyError(fault) ? `body unreadable during delivery: ${fault.message}` : null;
    let after: AttemptResult | null | typeof LEASE_LOST;
    try {
      after = await this.#record({ queueId, updates, now, corruptReason: corrupt, finishes: corrupt === null && finishes(detail, due, updates) });
    } catch (err) {
      this.#unrecorded(queueId, updates, `outcomes not recorded: ${String(err)}`);
      throw err;
    }
    if (after === LEASE_LOST) {
      this.#leasesLost++;
      this.#unrecorded(queueId, updates, 'lease lost to another node during delivery');
      return;
    }
    if (after === null) {
      this.#logger.warn('message deleted during delivery; outcomes dropped', { queue_id: queueId });
      return;
    }
    this.#logOutcomes(detail, due, updates, now, summary, outcomes);
    if (corrupt !== null) {
      summary.corrupt++;
      this.#logger.error('queued message body is corrupt; set aside', { queue_id: queueId, error: fault?.message });
      return;
    }
    if (after.removedBodyPath !== null) {
      await this.#removed(detail, after.removedBodyPath, summary);
      return;
    }
    if (after.state !== 'queued') return;
    const fresh = await this.#port.get(queueId);
    if (fresh !== null) await this.#settle(fresh, summary);
  }

  /**
   * Group commit for outcomes: attempts that finish in the same turn of the event loop are recorded in one
   * transaction (one WAL fsync). If that transaction fails, each is tried alone so one bad record cannot sink
   * the others.
   */
  #record(record: AttemptRecord): Promise<AttemptResult | null | typeof LEASE_LOST> {
    return new Promise((resolve, reject) => {
      this.#records.push({ record, resolve, reject });
      if (this.#recordsScheduled) return;
      this.#recordsScheduled = true;
      setImmediate(async () => {
        const batch = this.#records;
        this.#records = [];
        this.#recordsScheduled = false;
        try {
          const results = await this.#port.recordAttempts(batch.map((b) => b.record));
          batch.forEach((b, i) => b.resolve(results[i] ?? null));
        } catch (err) {
          if (batch.length === 1) {
            batch[0]!.reject(err);
            return;
          }
          for (const b of batch) {
            try {
              b.resolve((await this.#port.recordAttempts([b.record]))[0] ?? null);
            } catch (e) {
              b.reject(e);
            }
          }
        }
      });
    });
  }

  /** A delivery whose outcomes were not recorded: its delivered recipients may get the message again. */
  #unrecorded(queueId: string, updates: readonly RecipientUpdate[], reason: string): void {
    const delivered = updates.filter((u) => u.state === 'delivered').length;
    this.#possibleDuplicates += delivered;
    this.#logger.warn('delivery outcome not recorded; possible duplicate', { queue_id: queueId, delivered, reason });
  }

  #updates(detail: QueuedMessageDetail, due: readonly QueuedRecipient[], outcomes: readonly RecipientOutcome[] | null,
    failure: unknown, now: number): RecipientUpdate[] {
    const pool = new Map<string, RecipientOutcome[]>();
    for (const o of outcomes ?? []) {
      if (o === null || typeof o !== 'object' || typeof o.address !== 'string') continue;
      const list = pool.get(o.address);
      if (list === undefined) pool.set(o.address, [o]);
      else list.push(o);
    }
    const updates: RecipientUpdate[] = [];
    for (const r of due) {
      const o = pool.get(r.address)?.shift();
      let state: RecipientUpdate['state'];
      let reply: Reply | null = null;
      let diagnostic: string | null = null;
      let remoteMta: string | null = null;
      if (o === undefined) {
        state = 'deferred';
        diagnostic = failure !== null
          ? `delivery failed: ${(failure as Error | null)?.message ?? String(failure)}`
          : 'no outcome reported by the deliverer';
      } else {
        state = o.outcome === 'delivered' || o.outcome === 'bounced' ? o.outcome : 'deferred';
        reply = validReply(o.reply);
        diagnostic = typeof o.diagnostic === 'string' ? o.diagnostic : null;
        remoteMta = typeof o.remoteMta === 'string' ? o.remoteMta : null;
        if (o.outcome !== state) diagnostic = `unknown outcome ${JSON.stringify(o.outcome)} from the deliverer`;
      }
      if (state === 'delivered') {
        updates.push({ index: r.index, state, nextAttemptAt: null, reply, remoteMta, diagnostic, dsnStatus: statusOf(reply, '2', '2.0.0') });
        continue;
      }
      if (state === 'bounced') {
        updates.push({ index: r.index, state, nextAttemptAt: null, reply, remoteMta, diagnostic, dsnStatus: statusOf(reply, '5', '5.0.0') });
        continue;
      }
      const expiresAt = detail.receivedAt + this.#policy.lifetimeMs;
      if (now >= expiresAt) {
        const last = replyLine(reply, diagnostic);
        updates.push({
          index: r.index, state: 'bounced', nextAttemptAt: null, reply, remoteMta, dsnStatus: '4.4.7',
          diagnostic: `delivery time expired after ${r.attempts + 1} attempts${last === null ? '' : `; last error: ${last}`}`,
        });
        continue;
      }
      const next = Math.min(now + backoffDelay(r.attempts + 1, this.#policy, this.#random), expiresAt);
      updates.push({ index: r.index, state, nextAttemptAt: next, reply, remoteMta, diagnostic, dsnStatus: statusOf(reply, '4', '4.0.0') });
    }
    for (const [address, left] of pool) {
      if (left.length > 0) this.#logger.warn('deliverer reported an unknown recipient', { queue_id: detail.queueId, rcpt: address });
    }
    return updates;
  }

  #logOutcomes(detail: QueuedMessageDetail, due: readonly QueuedRecipient[], updates: readonly RecipientUpdate[], now: number,
    summary: RunSummary, outcomes: readonly RecipientOutcome[] | null): void {
    const byIndex = new Map(due.map((r) => [r.index, r]));
    // The destination class the deliverer reported (local, smarthost, mx), by address; absent: 'unknown'.
    const routeOf = new Map<string, string>();
    for (const o of outcomes ?? []) if (typeof o?.route === 'string' && typeof o.address === 'string') routeOf.set(o.address, o.route);
    for (const u of updates) {
      const r = byIndex.get(u.index);
      const fields = {
        queue_id: detail.queueId,
        rcpt: r?.address,
        status: u.dsnStatus,
        relay: u.remoteMta ?? undefined,
        reply: replyLine(u.reply, u.diagnostic) ?? undefined,
        attempts: (r?.attempts ?? 0) + 1,
        delay_ms: now - detail.receivedAt,
        route: (r !== undefined ? routeOf.get(r.address) : undefined) ?? 'unknown',
      };
      if (u.state === 'delivered') {
        summary.delivered++;
        this.#logger.info('recipient delivered', fields);
      } else if (u.state === 'deferred') {
        summary.deferred++;
        this.#logger.info('recipient deferred', { ...fields, next_attempt_at: u.nextAttemptAt });
      } else {
        summary.bounced++;
        if (u.dsnStatus === '4.4.7') summary.expired++;
        this.#logger.info(u.dsnStatus === '4.4.7' ? 'recipient expired' : 'recipient bounced', fields);
      }
    }
  }

  /**
   * After an attempt, or for a message found with no open recipient: reports the bounces not yet reported (never
   * for a sender of <>), then removes the message if nothing is left to try, else maybe sends a delay warning.
   */
  async #settle(detail: QueuedMessageDetail, summary: RunSummary): Promise<void> {
    const queueId = detail.queueId;
    const open = detail.recipients.some(isOpen);
    const unreported = detail.recipients.filter((r) => r.state === 'bounced' && r.notifiedAt === null);
    if (unreported.length > 0 && detail.sender === '') {
      this.#logger.warn('bounce of a bounce discarded', { queue_id: queueId, rcpts: unreported.map((r) => r.address) });
      await this.#port.markNotified(queueId, unreported.map((r) => r.index), this.#clock.now());
    } else if (unreported.length > 0) {
      const streams = new Set<Readable>();
      try {
        await this.#bouncer.bounce(this.#view(detail, streams, () => {}), unreported.map(failedRecipient));
      } catch (err) {
        // Kept unreported: tried again at the message's next attempt, or after the minimal backoff when none is left.
        const retryAt = this.#clock.now() + this.#policy.minimalBackoffMs;
        if (!open) await this.#port.setNextRun(queueId, retryAt);
        this.#logger.error('bounce not queued; will try again', { queue_id: queueId, error: String(err), next_attempt_at: open ? undefined : retryAt });
        return;
      } finally {
        for (const s of streams) s.destroy();
      }
      await this.#port.markNotified(queueId, unreported.map((r) => r.index), this.#clock.now());
      this.#logger.info('bounce queued', { queue_id: queueId, rcpts: unreported.length });
    }
    if (open) {
      await this.#maybeWarn(detail, this.#clock.now());
      return;
    }
    const bodyPath = await this.#port.removeFinished(queueId);
    if (bodyPath !== null) await this.#removed(detail, bodyPath, summary);
  }

  async #removed(detail: QueuedMessageDetail, bodyPath: string, summary: RunSummary): Promise<void> {
    try {
      await this.#port.removeBody(bodyPath); // '' (or a database body): gone with the record
    } catch (err) {
      // The next recovery removes an orphan body.
      if ((err as { code?: unknown }).code !== 'ENOENT') this.#logger.warn('spool body not removed', { queue_id: detail.queueId, error: String(err) });
    }
    summary.finished++;
    // Debug: the message's last 'recipient delivered' (or 'bounce queued') line already says it is done.
    this.#logger.debug('message removed', { queue_id: detail.queueId });
  }

  async #maybeWarn(detail: QueuedMessageDetail, now: number): Promise<void> {
    const after = this.#policy.delayWarningMs;
    if (after === null || detail.sender === '' || detail.delayWarnedAt !== null || now - detail.receivedAt < after) return;
    const expiresAt = detail.receivedAt + this.#policy.lifetimeMs;
    const delayed: DelayedRecipient[] = detail.recipients
      .filter((r) => r.state === 'deferred')
      .map((r) => ({ ...failedRecipient(r), nextAttemptAt: r.nextAttemptAt ?? now, expiresAt }));
    if (delayed.length === 0) return;
    const streams = new Set<Readable>();
    try {
      await this.#bouncer.delayed(this.#view(detail, streams, () => {}), delayed);
      await this.#port.markDelayWarned(detail.queueId, this.#clock.now());
      this.#logger.info('delay warning queued', { queue_id: detail.queueId, rcpts: delayed.length });
    } catch (err) {
      this.#logger.warn('delay warning not queued; will try at the next attempt', { queue_id: detail.queueId, error: String(err) });
    } finally {
      for (const s of streams) s.destroy();
    }
  }

  #view(detail: QueuedMessageDetail, streams: Set<Readable>, onFault: (err: Error) => void): QueuedMessageView {
    return {
      queueId: detail.queueId,
      sender: detail.sender,
      mailParams: detail.mailParams,
      receivedAt: detail.receivedAt,
      size: detail.size,
      messageId: detail.messageId,
      clientIp: detail.clientIp,
      helo: detail.helo,
      authUser: detail.authUser,
      listener: detail.listener,
      openBody: () => {
        const s = this.#port.openBody(detail, onFault);
        streams.add(s);
        s.once('close', () => streams.delete(s));
        return s;
      },
    };
  }
}

/** True when the attempt delivered every recipient it was for and no other is open or waits for its bounce: the
 *  message is done (AttemptRecord.finishes). */
function finishes(detail: QueuedMessageDetail, due: readonly QueuedRecipient[], updates: readonly RecipientUpdate[]): boolean {
  if (updates.length !== due.length) return false;
  for (const u of updates) if (u.state !== 'delivered') return false;
  if (due.length === detail.recipients.length) return true; // every recipient was due, and is delivered
  const attempted = new Set(due.map((d) => d.index));
  for (const r of detail.recipients) {
    if (r.state === 'delivered' || (r.state === 'bounced' && r.notifiedAt !== null)) continue;
    if (!attempted.has(r.index)) return false;
  }
  return true;
}

function failedRecipient(r: QueuedRecipient): FailedRecipient {
  return {
    address: r.address,
    params: r.params,
    status: r.dsnStatus ?? (r.state === 'deferred' ? '4.0.0' : '5.0.0'),
    reply: r.reply,
    remoteMta: r.remoteMta,
    diagnostic: r.diagnostic,
    attempts: r.attempts,
    lastAttemptAt: r.lastAttemptAt,
  };
}

/** The enhanced code of a reply when its class fits the outcome, else the generic one. */
function statusOf(reply: Reply | null, cls: '2' | '4' | '5', generic: string): string {
  const e = reply?.enhanced;
  return typeof e === 'string' && /^[245]\.\d{1,3}\.\d{1,3}$/.test(e) && e.startsWith(`${cls}.`) ? e : generic;
}

function validReply(r: unknown): Reply | null {
  if (r === null || typeof r !== 'object') return null;
  const x = r as Partial<Reply>;
  if (typeof x.code !== 'number' || !Number.isInteger(x.code) || x.code < 200 || x.code > 599) return null;
  const text = typeof x.text === 'string' ? x.text : Array.isArray(x.text) ? x.text.map(String) : '';
  return { code: x.code, enhanced: typeof x.enhanced === 'string' ? x.enhanced : undefined, text };
}
