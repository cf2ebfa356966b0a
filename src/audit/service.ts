/**
 * The periodic self-audit inside `relayguard serve`: runs the audit every `intervalMs` on an injected clock (the
 * scheduler looks at the clock every tickMs; the first audit is due at once when the history has none for this
 * node, else one interval after the last), on demand (runNow: the API), one run at a time (a second request joins
 * the running one). Each report is saved to the history, handed to onReport (the metrics), and compared with the
 * previous one: a finding that turned bad (critical, unreachable or broken where it was not) is logged once as an
 * error event with err_code ERR_AUDIT_<CHECK> (blocklist.listed -> ERR_AUDIT_BLOCKLIST_LISTED), a new warning as a
 * warn event, a bad finding that went away as an info event; a finding that stays bad is not logged again.
 *
 * Never blocks the relay: it runs off the SMTP path (timers, async I/O), each check within its budget, and a
 * failing history or check is logged, never thrown into serve.
 */
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import type { Logger } from '../core/log.ts';
import type { Finding } from './finding.ts';
import type { AuditHistory } from './history.ts';
import { isBad, runAudit, type AuditCheck, type AuditReport } from './run.ts';
import { findingKey, mergeHistory } from './trend.ts';

export interface AuditServiceOptions {
  readonly node: string;
  /** The checks, built for each run (they read the running configuration and listeners). */
  readonly checks: () => readonly AuditCheck[];
  readonly history: AuditHistory;
  readonly intervalMs: number;
  /** Default budget of a check. */
  readonly timeoutMs: number;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** How often the scheduler looks at the clock, ms. Default min(60 s, intervalMs). */
  readonly tickMs?: number;
  /** Run on schedule (false: on demand only). Default true. */
  readonly schedule?: boolean;
  /** Each finished report (metrics). */
  readonly onReport?: (report: AuditReport) => void;
}

/** ERR_AUDIT_<CHECK>: 'blocklist.listed' -> ERR_AUDIT_BLOCKLIST_LISTED. */
export function auditErrorCode(check: string): string {
  return `ERR_AUDIT_${check.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}`;
}

/** The findings of `report` that turned bad since `previous` (all bad ones when there is none). */
export function turnedBad(previous: AuditReport | null, report: AuditReport): Finding[] {
  const before = new Set((previous?.checks ?? []).flatMap((c) => c.findings).filter((f) => isBad(f.severity)).map(findingKey));
  return report.checks.flatMap((c) => c.findings).filter((f) => isBad(f.severity) && !before.has(findingKey(f)));
}

export class AuditService {
  readonly #o: AuditServiceOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<AuditReport> | null = null;
  #abort: AbortController | null = null;
  #last: AuditReport | null = null;
  #loaded: Promise<void> | null = null;
  #stopped = false;

  constructor(options: AuditServiceOptions) {
    this.#o = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#log = options.logger;
  }

  get running(): boolean { return this.#running !== null; }
  get intervalMs(): number { return this.#o.intervalMs; }

  /** Loads the last report (gauges at start, the trend) and starts the schedule. */
  start(): Promise<void> {
    this.#loaded ??= (async () => {
      try {
        this.#last = mergeHistory(await this.#o.history.list(this.#o.node, 20));
        if (this.#last) this.#o.onReport?.(this.#last);
      } catch (err) {
        this.#log.warn('audit history unavailable', { err_code: 'ERR_AUDIT_HISTORY', err: (err as Error).message });
      }
    })();
    if (this.#o.schedule !== false && this.#timer === null) {
      this.#timer = setInterval(() => { void this.tick(); }, this.#o.tickMs ?? Math.min(60_000, this.#o.intervalMs));
      this.#timer.unref();
    }
    return this.#loaded;
  }

  /** When the next scheduled audit is due (ms since the epoch). */
  nextDue(): number {
    return this.#last === null ? this.#clock.now() : this.#last.startedAt + this.#o.intervalMs;
  }

  /** Runs the audit when it is due; resolves with the report, or null when nothing was due. */
  async tick(): Promise<AuditReport | null> {
    if (this.#stopped || this.#running) return null;
    await this.start();
    if (this.#clock.now() < this.nextDue()) return null;
    return this.runNow('schedule').catch(() => null);
  }

  /** Runs an audit now, or joins the one running. */
  runNow(trigger: string): Promise<AuditReport> {
    if (this.#running) return this.#running;
    const abort = new AbortController();
    this.#abort = abort;
    const p = (async () => {
      await this.start();
      const previous = this.#last;
      this.#log.info('audit started', { trigger });
      const report = await runAudit({
        checks: this.#o.checks(), node: this.#o.node, trigger, timeoutMs: this.#o.timeoutMs, clock: this.#clock, signal: abort.signal, previous,
      });
      this.#last = report;
      try {
        await this.#o.history.save(report);
      } catch (err) {
        this.#log.warn('audit report not stored', { err_code: 'ERR_AUDIT_HISTORY', err: (err as Error).message });
      }
      this.#announce(previous, report);
      try {
        this.#o.onReport?.(report);
      } catch { /* metrics never fail the audit */ }
      return report;
    })().finally(() => {
      this.#running = null;
      this.#abort = null;
    });
    this.#running = p;
    return p;
  }

  #announce(previous: AuditReport | null, report: AuditReport): void {
    for (const f of turnedBad(previous, report)) {
      this.#log.error('audit finding turned bad', { err_code: auditErrorCode(f.check), check: f.check, subject: f.subject, severity: f.severity, finding: f.summary });
    }
    const before = new Map((previous?.checks ?? []).flatMap((c) => c.findings).map((f) => [findingKey(f), f]));
    const now = new Set(report.checks.flatMap((c) => c.findings).map(findingKey));
    for (const f of report.checks.flatMap((c) => c.findings)) {
      const old = before.get(findingKey(f));
      if (f.severity === 'warning' && old?.severity !== 'warning') this.#log.warn('audit warning', { check: f.check, subject: f.subject, finding: f.summary });
    }
    for (const [key, f] of before) {
      if (isBad(f.severity) && !now.has(key)) this.#log.info('audit finding resolved', { check: f.check, subject: f.subject });
    }
    this.#log.info('audit finished', {
      trigger: report.trigger, exit_code: report.exitCode, status: report.status, duration_ms: report.durationMs, changes: report.changes.length,
    });
  }

  latest(): Promise<AuditReport | null> {
    return this.#o.history.list(this.#o.node, 1).then((r) => r[0] ?? this.#last, () => this.#last);
  }

  history(limit: number): Promise<AuditReport[]> {
    return this.#o.history.list(this.#o.node, limit);
  }

  /** Stops the schedule, cancels a running audit and waits for it. The history is the caller's to close. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#abort?.abort(new Error('stopping'));
    await this.#running?.catch(() => undefined);
  }
}
