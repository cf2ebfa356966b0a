/**
 * Purpose: an ORDB tester worker: takes test jobs from the job queue (jobs.ts) with leases and runs them through
 * the workflow (OrdbWorkflow.runJob: same tests, same decisions), up to `concurrency` at once. Any number of
 * workers share one listing store: `relayguard dnsbl worker` processes, and the one inside `serve`.
 *
 *   start()   every pollMs: queue the due listings as jobs (idempotent), claim jobs for the free slots, run them;
 *             a finished job frees its slot and the worker claims again at once (a long queue never waits for the
 *             poll). Leases are renewed every heartbeatMs; a lease found taken over aborts that test (its result
 *             could not be recorded anyway).
 *   drain()   the same until nothing is claimable and nothing runs; returns the outcomes (serve's runDue, tests).
 *   runNow()  one address's job now, whatever its due time (the workflow's testNow: admin "retest now", --now);
 *             refused (null) while another worker tests that address.
 *   stop()    stops claiming, aborts the running tests and gives their jobs back (queued again, the attempt not
 *             counted), waits for them to end. A worker killed without stop() (kill -9) leaves its leases to expire:
 *             then any worker takes the jobs over, and a late result of the dead one is fenced off.
 * Trust: runs the tester against submitted addresses (the workflow vetted them at submission).
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import type { ClaimedJob, JobQueue } from './jobs.ts';
import type { OrdbWorkflow, TestOutcome } from './workflow.ts';

export interface OrdbWorkerOptions {
  readonly jobs: JobQueue;
  readonly workflow: Pick<OrdbWorkflow, 'runJob'>;
  /** Who holds the leases (unique per worker). Default hostname:pid:random. */
  readonly owner?: string | undefined;
  /** Tests at once. Default 2. */
  readonly concurrency?: number | undefined;
  /** Lease length. Default 60 s. */
  readonly leaseMs?: number | undefined;
  /** Lease renewal. Default a third of the lease. */
  readonly heartbeatMs?: number | undefined;
  /** How often an idle worker looks for work. Default 2 s. */
  readonly pollMs?: number | undefined;
  /** Done jobs are deleted after this long (checked hourly). Default 7 days; 0 keeps them. */
  readonly keepDoneMs?: number | undefined;
  readonly clock?: Clock | undefined;
  readonly logger?: Logger | undefined;
}

export interface WorkerStats {
  readonly owner: string;
  readonly running: number;
  readonly completed: number;
  /** Jobs whose lease was taken over while this worker ran them (their results were not recorded). */
  readonly leasesLost: number;
  /** Jobs taken over from a worker whose lease had expired. */
  readonly takenOver: number;
  /** Jobs given back at stop(). */
  readonly released: number;
}

interface Running {
  readonly claimed: ClaimedJob;
  readonly abort: AbortController;
  readonly done: Promise<TestOutcome | null>;
  lost: boolean;
}

const HOUR = 3_600_000;

export class OrdbWorker {
  readonly owner: string;
  readonly #jobs: JobQueue;
  readonly #workflow: Pick<OrdbWorkflow, 'runJob'>;
  readonly #concurrency: number;
  readonly #leaseMs: number;
  readonly #heartbeatMs: number;
  readonly #pollMs: number;
  readonly #keepDoneMs: number;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #running = new Map<number, Running>();
  readonly #listeners = new Set<(o: TestOutcome) => void>();
  #poll: NodeJS.Timeout | null = null;
  #beat: NodeJS.Timeout | null = null;
  #stopping = false;
  #lastPrune = 0;
  #lastEnqueue = Number.NEGATIVE_INFINITY;
  #completed = 0;
  #leasesLost = 0;
  #takenOver = 0;
  #released = 0;

  constructor(options: OrdbWorkerOptions) {
    this.owner = options.owner ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    this.#jobs = options.jobs;
    this.#workflow = options.workflow;
    this.#concurrency = Math.max(1, options.concurrency ?? 2);
    this.#leaseMs = Math.max(100, options.leaseMs ?? 60_000);
    this.#heartbeatMs = Math.max(20, Math.min(options.heartbeatMs ?? Math.floor(this.#leaseMs / 3), this.#leaseMs / 2));
    this.#pollMs = Math.max(10, options.pollMs ?? 2000);
    this.#keepDoneMs = options.keepDoneMs ?? 7 * 24 * HOUR;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#log = options.logger ?? NULL_LOGGER;
  }

  stats(): WorkerStats {
    return {
      owner: this.owner, running: this.#running.size, completed: this.#completed, leasesLost: this.#leasesLost,
      takenOver: this.#takenOver, released: this.#released,
    };
  }

  /** Runs in the background until stop(). */
  start(): void {
    if (this.#poll !== null || this.#stopping) return;
    this.#poll = setInterval(() => this.#fill(true), this.#pollMs);
    this.#poll.unref();
    this.#ensureBeat();
    this.#log.info('dnsbl worker started', { owner: this.owner, concurrency: this.#concurrency, lease_ms: this.#leaseMs, poll_ms: this.#pollMs });
    this.#fill(true);
  }

  /**
   * Tests one address now as its job (an administrator's "test now"; OrdbWorkflow's testNowVia), outside the
   * concurrency limit, whatever its due time. Null when another worker is testing it right now.
   */
  async runNow(address: string, kind: 'submit' | 'retest'): Promise<TestOutcome | null> {
    if (this.#stopping) return null;
    const c = this.#jobs.claimAddress(this.owner, address, kind, this.#leaseMs);
    if (c === 'busy') return null;
    this.#ensureBeat();
    return this.#start(c, true).done;
  }

  /** Queues the due work and runs jobs until nothing is claimable and nothing runs; the outcomes, in finishing order. */
  async drain(): Promise<TestOutcome[]> {
    const out: TestOutcome[] = [];
    const collect = (o: TestOutcome): void => { out.push(o); };
    this.#listeners.add(collect);
    this.#ensureBeat();
    try {
      this.#fill(true);
      while (this.#running.size > 0) {
        await Promise.race([...this.#running.values()].map((r) => r.done));
        this.#fill();
      }
    } finally {
      this.#listeners.delete(collect);
    }
    return out;
  }

  /** Stops claiming, aborts the running tests, gives their jobs back and waits for them. */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#poll) clearInterval(this.#poll);
    this.#poll = null;
    const running = [...this.#running.values()];
    for (const r of running) r.abort.abort();
    await Promise.allSettled(running.map((r) => r.done));
    if (this.#beat) clearInterval(this.#beat);
    this.#beat = null;
    this.#log.info('dnsbl worker stopped', { owner: this.owner, completed: this.#completed, released: this.#released });
  }

  /**
   * Claims jobs for the free slots. Due listings are queued as jobs at most once per poll (the query reads every due
   * listing), or when the queue runs short of what the free slots could take.
   */
  #fill(forceEnqueue = false): void {
    if (this.#stopping) return;
    try {
      const now = this.#clock.now();
      if (this.#keepDoneMs > 0 && now - this.#lastPrune > HOUR) {
        this.#lastPrune = now;
        this.#jobs.prune(now - this.#keepDoneMs);
      }
      let enqueued = false;
      const enqueue = (): void => { this.#jobs.enqueueDue(); this.#lastEnqueue = now; enqueued = true; };
      if (forceEnqueue || now - this.#lastEnqueue >= this.#pollMs) enqueue();
      const free = this.#concurrency - this.#running.size;
      if (free <= 0) return;
      let got = this.#jobs.claim(this.owner, free, this.#leaseMs);
      if (got.length < free && !enqueued) {
        enqueue();
        got = [...got, ...this.#jobs.claim(this.owner, free - got.length, this.#leaseMs)];
      }
      for (const c of got) this.#start(c);
    } catch (err) {
      // A busy or broken database: try again at the next poll.
      this.#log.warn('dnsbl worker could not take jobs', { err_code: 'ERR_DNSBL_JOBS', owner: this.owner, error: (err as Error).message });
    }
  }

  #start(claimed: ClaimedJob, force = false): Running {
    const { job, lease, tookOverFrom } = claimed;
    if (tookOverFrom !== null) {
      this.#takenOver++;
      this.#log.warn('dnsbl job taken over', { err_code: 'ERR_DNSBL_LEASE_EXPIRED', job: job.id, ip: job.address, from: tookOverFrom, owner: this.owner, attempts: job.attempts });
    }
    const abort = new AbortController();
    let committed = false;
    const entry: Running = {
      claimed, abort, lost: false,
      done: this.#workflow.runJob(job.address, {
        signal: abort.signal,
        force,
        commit: (apply) => {
          const ok = this.#jobs.complete(lease, apply);
          committed = ok;
          if (!ok) entry.lost = true;
          return ok;
        },
      }).then((o) => {
        if (committed) {
          this.#completed++;
          for (const l of this.#listeners) l(o);
          this.#log.info('dnsbl job done', { job: job.id, ip: job.address, kind: job.kind, action: o.action, verdict: o.verdict, owner: this.owner });
        } else if (entry.lost) {
          this.#leasesLost++;
          this.#log.warn('dnsbl job lease lost', { err_code: 'ERR_DNSBL_LEASE_LOST', job: job.id, ip: job.address, owner: this.owner });
        } else {
          // Stopped (or aborted) before a result: give the job back for another worker.
          if (this.#jobs.release(lease)) this.#released++;
        }
        return o;
      }).catch((err: unknown) => {
        this.#log.error('dnsbl job failed', { err_code: 'ERR_DNSBL_JOB', job: job.id, ip: job.address, error: (err as Error)?.message ?? String(err) });
        try { if (!committed && this.#jobs.release(lease)) this.#released++; } catch { /* the lease expires */ }
        return null;
      }).finally(() => {
        this.#running.delete(job.id);
        if (this.#poll !== null) setImmediate(() => this.#fill());
      }),
    };
    this.#running.set(job.id, entry);
    return entry;
  }

  /** Lease renewal runs from the first job until stop(). */
  #ensureBeat(): void {
    if (this.#beat !== null || this.#stopping) return;
    this.#beat = setInterval(() => this.#heartbeat(), this.#heartbeatMs);
    this.#beat.unref();
  }

  #heartbeat(): void {
    for (const r of this.#running.values()) {
      if (r.lost) continue;
      try {
        if (!this.#jobs.heartbeat(r.claimed.lease, this.#leaseMs)) {
          // Taken over (this worker stalled past its lease): the result could not be recorded, stop the test.
          r.lost = true;
          r.abort.abort();
        }
      } catch (err) {
        this.#log.warn('dnsbl job heartbeat failed', { err_code: 'ERR_DNSBL_JOBS', job: r.claimed.job.id, error: (err as Error).message });
      }
    }
  }
}
