/**
 * Purpose: the ORDB's test jobs, kept in the listing store's database so that any number of tester workers (other
 * processes, other machines sharing the database) take them with leases.
 *
 *   dnsbl_jobs(id, address, kind submit|retest, state queued|running|done, run_after, created_at,
 *              lease_owner, lease_epoch, lease_expires, attempts, finished_at, result JSON)
 *
 * Protocol (one job per address open at a time: a unique index over the queued and running jobs):
 *   enqueueDue(now)     a job for every single-address listing of a tested category (open-relay, open-proxy) that is pending or listed and due
 *                       (next_retest <= now) and has no open job. Any worker may run it: it is idempotent.
 *   claim(owner, n)     in one write transaction (BEGIN IMMEDIATE: writers of the file queue up), takes up to n jobs
 *                       that are queued and due, or running under a lease that expired (the worker died): each
 *                       becomes running under this owner with lease_epoch + 1 and a new expiry. Two workers never
 *                       take one job: the second transaction sees the first one's update.
 *   heartbeat(lease)    pushes the expiry out; false when the lease is no longer this worker's (taken over).
 *   complete(lease, f)  one transaction: the job becomes done only if the lease is still this worker's (same owner,
 *                       same epoch, still running), and f (the workflow's store update) runs inside it. A worker whose
 *                       lease was taken over gets false and f never runs: a result is applied exactly once (fencing).
 *   release(lease)      gives a job back (the worker stops): queued again, the attempt not counted.
 *   claimAddress(...)   the job of one address, now, whatever its due time (an administrator's "test now"), unless
 *                       another worker is testing it under a live lease.
 * Times come from the clock (milliseconds). A PostgreSQL port keeps the same SQL except the claim's candidate
 * SELECT, which takes FOR UPDATE SKIP LOCKED (so claimers skip each other's rows instead of queueing).
 * Trust: the addresses come from the listing store (already vetted by the workflow at submission).
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import type { ListingStore } from './store.ts';
import { TESTED_CATEGORIES } from './workflow.ts';

export type JobKind = 'submit' | 'retest';
export type JobState = 'queued' | 'running' | 'done';

export interface Job {
  readonly id: number;
  readonly address: string;
  readonly kind: JobKind;
  readonly state: JobState;
  readonly runAfter: number;
  readonly createdAt: number;
  readonly leaseOwner: string | null;
  readonly leaseEpoch: number;
  readonly leaseExpires: number | null;
  /** Claims so far (a release gives one back). */
  readonly attempts: number;
  readonly finishedAt: number | null;
  readonly result: unknown;
}

/** What a worker holds: enough to prove it still owns the job. */
export interface JobLease {
  readonly id: number;
  readonly owner: string;
  readonly epoch: number;
}

export interface ClaimedJob {
  readonly job: Job;
  readonly lease: JobLease;
  /** The owner whose expired lease this claim took over, or null for a queued job. */
  readonly tookOverFrom: string | null;
}

export interface JobCounts {
  readonly queued: number;
  readonly running: number;
  readonly done: number;
  /** Running jobs whose lease has expired (their worker is gone or stuck). */
  readonly expired: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS dnsbl_jobs (
  id INTEGER PRIMARY KEY,
  address TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('submit', 'retest')),
  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
  run_after INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  lease_owner TEXT,
  lease_epoch INTEGER NOT NULL DEFAULT 0,
  lease_expires INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  finished_at INTEGER,
  result TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS dnsbl_jobs_open ON dnsbl_jobs (address) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS dnsbl_jobs_queued ON dnsbl_jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS dnsbl_jobs_leases ON dnsbl_jobs (lease_expires) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS dnsbl_jobs_done ON dnsbl_jobs (finished_at) WHERE state = 'done';
`;

interface Row {
  id: number;
  address: string;
  kind: string;
  state: string;
  run_after: number;
  created_at: number;
  lease_owner: string | null;
  lease_epoch: number;
  lease_expires: number | null;
  attempts: number;
  finished_at: number | null;
  result: string | null;
}

function toJob(r: Row): Job {
  let result: unknown = null;
  if (r.result !== null) {
    try { result = JSON.parse(r.result); } catch { result = r.result; }
  }
  return {
    id: Number(r.id), address: r.address, kind: r.kind as JobKind, state: r.state as JobState, runAfter: Number(r.run_after),
    createdAt: Number(r.created_at), leaseOwner: r.lease_owner, leaseEpoch: Number(r.lease_epoch),
    leaseExpires: r.lease_expires === null ? null : Number(r.lease_expires), attempts: Number(r.attempts),
    finishedAt: r.finished_at === null ? null : Number(r.finished_at), result,
  };
}

/** The longest result kept with a job (characters of JSON). */
const MAX_RESULT = 16 * 1024;

export class JobQueue {
  readonly #store: ListingStore;
  readonly #db: DatabaseSync;
  readonly #clock: Clock;
  readonly #enqueueDue: StatementSync;
  readonly #candidates: StatementSync;
  readonly #heartbeat: StatementSync;
  readonly #finish: StatementSync;
  readonly #release: StatementSync;

  constructor(store: ListingStore, options: { clock?: Clock | undefined } = {}) {
    this.#store = store;
    this.#db = store.database;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#db.exec(SCHEMA);
    // Single addresses of the tested categories only (workflow.ts TESTED_CATEGORIES): a network or a honeypot
    // listing is not the tester's to judge.
    this.#enqueueDue = this.#db.prepare(`INSERT INTO dnsbl_jobs (address, kind, state, run_after, created_at)
      SELECT l.network, CASE l.state WHEN 'pending' THEN 'submit' ELSE 'retest' END, 'queued', l.next_retest, ?
      FROM dnsbl_listings l
      WHERE l.state IN ('pending', 'listed') AND l.next_retest IS NOT NULL AND l.next_retest <= ?
        AND l.category IN (${TESTED_CATEGORIES.map((c) => `'${c}'`).join(', ')}) AND l.prefix = CASE l.family WHEN 4 THEN 32 ELSE 128 END
        AND NOT EXISTS (SELECT 1 FROM dnsbl_jobs j WHERE j.address = l.network AND j.state IN ('queued', 'running'))
      ORDER BY l.next_retest, l.id LIMIT ?
      ON CONFLICT DO NOTHING`);
    // Each branch walks its own partial index and stops at the limit (no sort of the whole queue).
    this.#candidates = this.#db.prepare(`SELECT id, state, lease_owner FROM (
        SELECT * FROM (SELECT id, state, lease_owner, run_after FROM dnsbl_jobs
                       WHERE state = 'running' AND lease_expires <= ? ORDER BY lease_expires LIMIT ?)
        UNION ALL
        SELECT * FROM (SELECT id, state, lease_owner, run_after FROM dnsbl_jobs
                       WHERE state = 'queued' AND run_after <= ? ORDER BY run_after, id LIMIT ?))
      ORDER BY run_after, id LIMIT ?`);
    this.#heartbeat = this.#db.prepare(`UPDATE dnsbl_jobs SET lease_expires = ?
      WHERE id = ? AND lease_owner = ? AND lease_epoch = ? AND state = 'running' RETURNING id`);
    this.#finish = this.#db.prepare(`UPDATE dnsbl_jobs SET state = 'done', finished_at = ?, lease_expires = NULL
      WHERE id = ? AND lease_owner = ? AND lease_epoch = ? AND state = 'running' RETURNING id`);
    this.#release = this.#db.prepare(`UPDATE dnsbl_jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL,
      attempts = MAX(attempts - 1, 0) WHERE id = ? AND lease_owner = ? AND lease_epoch = ? AND state = 'running' RETURNING id`);
  }

  /** Queues a job for one address (a no-op returning null when it has one open already). */
  enqueue(address: string, kind: JobKind, runAfter?: number): Job | null {
    const now = this.#clock.now();
    const r = this.#db.prepare(`INSERT INTO dnsbl_jobs (address, kind, state, run_after, created_at) VALUES (?, ?, 'queued', ?, ?)
      ON CONFLICT DO NOTHING RETURNING *`).get(address, kind, Math.floor(runAfter ?? now), now) as Row | undefined;
    return r ? toJob(r) : null;
  }

  /** Queues a job for each due listing without one (at most `limit`); returns how many were queued. */
  enqueueDue(limit = 1000): number {
    const now = this.#clock.now();
    return Number(this.#enqueueDue.run(now, now, Math.max(1, limit)).changes);
  }

  /**
   * Takes up to n jobs for `owner`: queued and due, or running under an expired lease. The lease lasts leaseMs
   * (heartbeat() renews it).
   */
  claim(owner: string, n: number, leaseMs: number): ClaimedJob[] {
    if (n <= 0) return [];
    return this.#store.atomically(() => {
      const now = this.#clock.now();
      const cands = this.#candidates.all(now, n, now, n, n) as { id: number; state: string; lease_owner: string | null }[];
      if (cands.length === 0) return [];
      const prev = new Map(cands.map((c) => [Number(c.id), c.state === 'running' ? c.lease_owner : null]));
      const rows = this.#db.prepare(`UPDATE dnsbl_jobs SET state = 'running', lease_owner = ?, lease_epoch = lease_epoch + 1,
          lease_expires = ?, attempts = attempts + 1
          WHERE id IN (${cands.map(() => '?').join(',')}) RETURNING *`)
        .all(owner, now + leaseMs, ...cands.map((c) => c.id)) as unknown as Row[];
      return rows
        .map(toJob)
        .sort((a, b) => a.runAfter - b.runAfter || a.id - b.id)
        .map((job) => ({ job, lease: { id: job.id, owner, epoch: job.leaseEpoch }, tookOverFrom: prev.get(job.id) ?? null }));
    });
  }

  /**
   * Takes the job of one address now, whatever its due time (an administrator's "test now"): queues one when the
   * address has none open, takes it when it is queued or its lease expired. 'busy' when another worker holds a
   * live lease on it (it is being tested right now).
   */
  claimAddress(owner: string, address: string, kind: JobKind, leaseMs: number): ClaimedJob | 'busy' {
    return this.#store.atomically(() => {
      const now = this.#clock.now();
      this.#db.prepare(`INSERT INTO dnsbl_jobs (address, kind, state, run_after, created_at) VALUES (?, ?, 'queued', ?, ?)
        ON CONFLICT DO NOTHING`).run(address, kind, now, now);
      const c = this.#db.prepare(`SELECT id, state, lease_owner FROM dnsbl_jobs WHERE address = ?
        AND (state = 'queued' OR (state = 'running' AND lease_expires <= ?))`).get(address, now) as { id: number; state: string; lease_owner: string | null } | undefined;
      if (c === undefined) return 'busy';
      const r = this.#db.prepare(`UPDATE dnsbl_jobs SET state = 'running', lease_owner = ?, lease_epoch = lease_epoch + 1,
          lease_expires = ?, attempts = attempts + 1 WHERE id = ? RETURNING *`).get(owner, now + leaseMs, c.id) as unknown as Row;
      const job = toJob(r);
      return { job, lease: { id: job.id, owner, epoch: job.leaseEpoch }, tookOverFrom: c.state === 'running' ? c.lease_owner : null };
    });
  }

  /** Renews a lease; false when it is no longer this worker's (taken over, or the job is done or released). */
  heartbeat(lease: JobLease, leaseMs: number): boolean {
    return this.#heartbeat.get(this.#clock.now() + leaseMs, lease.id, lease.owner, lease.epoch) !== undefined;
  }

  /**
   * Finishes a job and applies its result in one transaction, if the lease is still this worker's; else (taken
   * over) neither happens and the answer is false. `apply` returns the result kept with the job (JSON).
   */
  complete(lease: JobLease, apply: () => unknown): boolean {
    return this.#store.atomically(() => {
      if (this.#finish.get(this.#clock.now(), lease.id, lease.owner, lease.epoch) === undefined) return false;
      const result = apply();
      let json = result === undefined ? null : JSON.stringify(result) ?? null;
      if (json !== null && json.length > MAX_RESULT) json = JSON.stringify({ truncated: true, text: json.slice(0, MAX_RESULT) });
      this.#db.prepare('UPDATE dnsbl_jobs SET result = ? WHERE id = ?').run(json, lease.id);
      return true;
    });
  }

  /** Gives a job back to the queue (the worker stops before it finished). False when the lease was not held. */
  release(lease: JobLease): boolean {
    return this.#release.get(lease.id, lease.owner, lease.epoch) !== undefined;
  }

  get(id: number): Job | null {
    const r = this.#db.prepare('SELECT * FROM dnsbl_jobs WHERE id = ?').get(id) as Row | undefined;
    return r ? toJob(r) : null;
  }

  /** Jobs, newest first (optionally of one state or one address). */
  list(filter: { state?: JobState; address?: string; limit?: number } = {}): Job[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (filter.state !== undefined) { where.push('state = ?'); args.push(filter.state); }
    if (filter.address !== undefined) { where.push('address = ?'); args.push(filter.address); }
    const rows = this.#db.prepare(`SELECT * FROM dnsbl_jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY id DESC LIMIT ?`).all(...args, Math.max(0, Math.min(filter.limit ?? 1000, 1_000_000))) as unknown as Row[];
    return rows.map(toJob);
  }

  counts(): JobCounts {
    const now = this.#clock.now();
    const rows = this.#db.prepare('SELECT state, COUNT(*) AS n FROM dnsbl_jobs GROUP BY state').all() as { state: string; n: number }[];
    const n = (s: string): number => Number(rows.find((r) => r.state === s)?.n ?? 0);
    const expired = Number((this.#db.prepare("SELECT COUNT(*) AS n FROM dnsbl_jobs WHERE state = 'running' AND lease_expires <= ?").get(now) as { n: number }).n);
    return { queued: n('queued'), running: n('running'), done: n('done'), expired };
  }

  /** Deletes done jobs finished before `before`; returns how many. */
  prune(before: number): number {
    return Number(this.#db.prepare("DELETE FROM dnsbl_jobs WHERE state = 'done' AND finished_at < ?").run(before).changes);
  }
}
