/**
 * The overview's per-minute history: a ring of samples of the node's counters (RelayMetrics.totals(), plain
 * numbers, no registry walk) and gauges (open connections, queue by state, the ORDB's DNS counters), taken once a
 * minute on a timer of its own, in memory only (a restart starts an empty history; Prometheus keeps the long one).
 * A query answers per-minute deltas of the counters and the sampled gauges, plus the minute in progress (counters
 * read now; the queue as last read: a request never waits for the queue, it starts a background read when the
 * counts are older than 10 s). Nothing on the SMTP path calls it.
 */
import type { OrdbDnsCounts, OverviewTotals, RelayMetrics } from './metrics.ts';

export interface Sample {
  /** Epoch ms when taken. */
  readonly at: number;
  readonly totals: OverviewTotals;
  /** Open SMTP connections (null: no relay attached). */
  readonly connections: number | null;
  /** Queue by state as last read (null: not read yet or the read failed). */
  readonly queue: Record<string, number> | null;
  /** ORDB DNS queries answered since its start (null: no ORDB on this node). */
  readonly ordbQueries: number | null;
}

export interface OverviewData {
  readonly node: string;
  readonly stepSeconds: number;
  /** End of each point's minute, epoch seconds; the last point is the minute in progress when `partial`. */
  readonly t: number[];
  readonly partial: boolean;
  readonly messages: { readonly in: number[]; readonly delivered: number[]; readonly deferred: number[]; readonly bounced: number[] };
  /** Refused recipients per minute by rule (only rules that refused something in the window). */
  readonly refusals: Record<string, number[]>;
  /** Messages in the queue by state (null where not sampled). */
  readonly queue: Record<string, (number | null)[]>;
  /** Per second, averaged over the point's minute: ORDB DNS queries answered and DNSBL lookups of the receive path. */
  readonly dns: { readonly ordbQueries: (number | null)[]; readonly dnsblLookups: number[] };
  /** Open SMTP connections at the sample, and sessions ended per minute. */
  readonly connections: { readonly open: (number | null)[]; readonly sessions: number[] };
}

export interface SeriesOptions {
  readonly node: string;
  readonly metrics: Pick<RelayMetrics, 'totals' | 'connectionsNow' | 'queueNow' | 'ordbDnsNow'>;
  /** Sample interval, ms. Default 60,000 (a point per minute). */
  readonly stepMs?: number;
  /** Samples kept. Default 1,440 (a day of minutes). */
  readonly capacity?: number;
  readonly now?: () => number;
  /**
   * How long json() reuses an answer, ms. Default 1,000: a dashboard polled by many browsers (or a script at
   * 50 requests/s) costs one computation a second per window length; the minute in progress lags at most that.
   */
  readonly cacheMs?: number;
}

const ordbTotal = (d: OrdbDnsCounts | null): number | null => (d === null ? null : d.answered);

export class OverviewSeries {
  readonly stepMs: number;
  readonly #o: SeriesOptions;
  readonly #capacity: number;
  readonly #now: () => number;
  /** Ring buffer of samples, oldest at #start. */
  readonly #ring: (Sample | undefined)[];
  #start = 0;
  #size = 0;
  #timer: NodeJS.Timeout | null = null;
  #lastQueue: Record<string, number> | null = null;
  #lastQueueAt = 0;
  #queueRefresh: Promise<void> | null = null;
  #sampling: Promise<void> | null = null;
  /** Answers as JSON by window length, each reused for up to `cacheMs` (and dropped when a sample is taken). */
  readonly #answers = new Map<number, { at: number; json: string }>();
  readonly #cacheMs: number;

  constructor(o: SeriesOptions) {
    this.#o = o;
    this.stepMs = o.stepMs ?? 60_000;
    this.#capacity = Math.max(2, o.capacity ?? 1440);
    this.#now = o.now ?? Date.now;
    this.#ring = new Array(this.#capacity);
    this.#cacheMs = o.cacheMs ?? 1000;
  }

  /** Takes the first sample now and one every step (aligned to the step boundary), on an unref'd timer. */
  start(): void {
    if (this.#timer !== null) return;
    void this.sample();
    const next = this.stepMs - (this.#now() % this.stepMs);
    this.#timer = setTimeout(() => {
      void this.sample();
      this.#timer = setInterval(() => { void this.sample(); }, this.stepMs);
      this.#timer.unref();
    }, next);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** Takes one sample (the queue read may fail: the last good counts are kept and marked with null). */
  sample(): Promise<void> {
    this.#sampling ??= (async () => {
      const m = this.#o.metrics;
      let queue: Record<string, number> | null = null;
      try {
        queue = await m.queueNow();
      } catch {
        queue = null;
      }
      if (queue !== null) { this.#lastQueue = queue; this.#lastQueueAt = this.#now(); }
      this.#push({ at: this.#now(), totals: m.totals(), connections: m.connectionsNow(), queue, ordbQueries: ordbTotal(m.ordbDnsNow()) });
    })().finally(() => { this.#sampling = null; });
    return this.#sampling;
  }

  /** query(minutes) as JSON, from the cache when an answer of the same window is younger than cacheMs. */
  json(minutes: number): string {
    const now = this.#now();
    const hit = this.#answers.get(minutes);
    if (hit !== undefined && now - hit.at < this.#cacheMs && now >= hit.at) return hit.json;
    const json = JSON.stringify(this.query(minutes));
    if (this.#answers.size > 16) this.#answers.clear();
    this.#answers.set(minutes, { at: now, json });
    return json;
  }

  #push(s: Sample): void {
    this.#answers.clear();
    if (this.#size < this.#capacity) {
      this.#ring[(this.#start + this.#size) % this.#capacity] = s;
      this.#size++;
    } else {
      this.#ring[this.#start] = s;
      this.#start = (this.#start + 1) % this.#capacity;
    }
  }

  /** The samples of the last `minutes` steps, oldest first (plus the one before them, the base of the first delta). */
  #window(points: number): Sample[] {
    const n = Math.min(this.#size, points + 1);
    const out: Sample[] = [];
    for (let i = this.#size - n; i < this.#size; i++) out.push(this.#ring[(this.#start + i) % this.#capacity]!);
    return out;
  }

  /**
   * The queue of the minute in progress, read again in the background when older than QUEUE_FRESH_MS (a request
   * never waits for it: the next one sees it).
   */
  #refreshQueue(): void {
    if (this.#queueRefresh !== null || this.#now() - this.#lastQueueAt < QUEUE_FRESH_MS) return;
    this.#queueRefresh = (async () => {
      try {
        const q = await this.#o.metrics.queueNow();
        if (q !== null) { this.#lastQueue = q; this.#lastQueueAt = this.#now(); }
      } catch { /* keep the last counts */ }
    })().finally(() => { this.#queueRefresh = null; });
  }

  /** Per-minute points of the last `minutes` minutes, the minute in progress last. */
  query(minutes: number): OverviewData {
    const m = this.#o.metrics;
    this.#refreshQueue();
    const samples = this.#window(Math.max(1, minutes) - 1);
    const current: Sample = { at: this.#now(), totals: m.totals(), connections: m.connectionsNow(), queue: this.#lastQueue, ordbQueries: ordbTotal(m.ordbDnsNow()) };
    const all = [...samples, current];
    const t: number[] = [];
    const messages = { in: [] as number[], delivered: [] as number[], deferred: [] as number[], bounced: [] as number[] };
    const rules = new Set<string>();
    for (const s of all) for (const r of Object.keys(s.totals.refusedByRule)) rules.add(r);
    const refusals: Record<string, number[]> = {};
    const states = new Set<string>(['queued', 'deferred', 'hold', 'corrupt']);
    for (const s of all) for (const k of Object.keys(s.queue ?? {})) states.add(k);
    const queue: Record<string, (number | null)[]> = {};
    for (const k of states) queue[k] = [];
    const dns = { ordbQueries: [] as (number | null)[], dnsblLookups: [] as number[] };
    const connections = { open: [] as (number | null)[], sessions: [] as number[] };
    // A counter that went down (a restart of the metrics) counts from zero again.
    const delta = (a: number, b: number): number => (b >= a ? b - a : b);
    for (let i = 1; i < all.length; i++) {
      const a = all[i - 1]!;
      const b = all[i]!;
      const secs = Math.max(1, (b.at - a.at) / 1000);
      t.push(Math.round(b.at / 1000));
      messages.in.push(delta(a.totals.received, b.totals.received));
      messages.delivered.push(delta(a.totals.delivered, b.totals.delivered));
      messages.deferred.push(delta(a.totals.deferred, b.totals.deferred));
      messages.bounced.push(delta(a.totals.bounced, b.totals.bounced));
      for (const r of rules) {
        const d = delta(a.totals.refusedByRule[r] ?? 0, b.totals.refusedByRule[r] ?? 0);
        (refusals[r] ??= []).push(d);
      }
      for (const k of states) queue[k]!.push(b.queue === null ? null : (b.queue[k] ?? 0));
      dns.ordbQueries.push(a.ordbQueries === null || b.ordbQueries === null ? null : round(delta(a.ordbQueries, b.ordbQueries) / secs));
      dns.dnsblLookups.push(round(delta(a.totals.dnsblLookups, b.totals.dnsblLookups) / secs));
      connections.open.push(b.connections);
      connections.sessions.push(delta(a.totals.sessions, b.totals.sessions));
    }
    // Rules with no refusal in the window are left out (the chart stays readable).
    for (const r of Object.keys(refusals)) if (refusals[r]!.every((v) => v === 0)) delete refusals[r];
    return { node: this.#o.node, stepSeconds: this.stepMs / 1000, t, partial: t.length > 0, messages, refusals, queue, dns, connections };
  }
}

const round = (v: number): number => Math.round(v * 100) / 100;
/** How old the queue counts of the minute in progress may get before a query reads them again (in the background). */
const QUEUE_FRESH_MS = 10_000;
