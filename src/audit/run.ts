/**
 * The audit's frame: runs a pluggable list of checks at once, each under its own time budget; a check that throws
 * or outlives its budget is reported as one 'unreachable' finding and the others still run. The report says what
 * changed since the previous one (trend.ts) and carries the exit code of `relayguard audit`.
 *
 * Exit code: 0 clean; 1 a finding that makes the server abusable, listed, or that could not be checked
 * (critical, unreachable, broken); 2 warnings only.
 */
import { performance } from 'node:perf_hooks';
import { timeoutSignal } from '../core/abort.ts';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import type { CheckResult, Finding, Severity } from './finding.ts';
import { compareReports, type AuditChange } from './trend.ts';

/** One check of the audit: returns its findings (at least one, 'ok' when all is well). */
export interface AuditCheck {
  /** Stable name: 'config', 'relay', 'blocklist', 'dns', ... (the Prometheus label and the key of the trend). */
  readonly name: string;
  /** This check's budget, ms; default the run's. */
  readonly timeoutMs?: number;
  run(context: CheckContext): Promise<readonly Finding[]>;
}

export interface CheckContext {
  /** Aborted when the budget runs out or the run is cancelled: stop work and return. */
  readonly signal: AbortSignal;
  now(): number;
}

export interface AuditReport {
  readonly schema: 'relayguard-audit/1';
  readonly node: string;
  /** ms since the epoch. */
  readonly startedAt: number;
  readonly durationMs: number;
  /** What started it: 'cli', 'schedule', 'api' (with the actor), ... */
  readonly trigger: string;
  readonly exitCode: 0 | 1 | 2;
  /** The worst severity of any finding. */
  readonly status: Severity;
  readonly checks: readonly CheckResult[];
  /** Against the previous stored report (null: none). */
  readonly previousStartedAt: number | null;
  readonly changes: readonly AuditChange[];
}

export interface RunAuditOptions {
  readonly checks: readonly AuditCheck[];
  readonly node: string;
  readonly trigger?: string;
  /** Default budget of a check, ms. Default 300 000. */
  readonly timeoutMs?: number;
  readonly clock?: Clock;
  readonly signal?: AbortSignal;
  /** The previous report, for the trend. */
  readonly previous?: AuditReport | null;
}

/** Order of badness (for 'status' and the gauges). */
export const SEVERITY_RANK: Readonly<Record<Severity, number>> = { ok: 0, warning: 1, broken: 2, unreachable: 3, critical: 4 };

/** The findings that make `relayguard audit` exit 1. */
export function isBad(severity: Severity): boolean {
  return severity === 'critical' || severity === 'unreachable' || severity === 'broken';
}

export function worst(findings: readonly Finding[]): Severity {
  let w: Severity = 'ok';
  for (const f of findings) if (SEVERITY_RANK[f.severity] > SEVERITY_RANK[w]) w = f.severity;
  return w;
}

export function auditExitCode(checks: readonly CheckResult[]): 0 | 1 | 2 {
  const all = checks.flatMap((c) => c.findings);
  if (all.some((f) => isBad(f.severity))) return 1;
  if (all.some((f) => f.severity === 'warning')) return 2;
  return 0;
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Runs one check under its budget; never rejects. */
export async function runCheck(check: AuditCheck, budgetMs: number, clock: Clock, parent?: AbortSignal): Promise<CheckResult> {
  const started = performance.now();
  const { signal, release } = timeoutSignal(parent, budgetMs, `audit check ${check.name}`);
  let timer: NodeJS.Timeout | undefined;
  try {
    // The signal asks the check to stop; the race makes sure a check that ignores it cannot hold the audit.
    const hung = new Promise<never>((_, reject) => {
      const fail = (): void => reject(signal.reason instanceof Error ? signal.reason : new Error(`timed out after ${budgetMs} ms`));
      if (signal.aborted) fail();
      signal.addEventListener('abort', () => { timer = setTimeout(fail, 1000); timer.unref(); }, { once: true });
    });
    const findings = await Promise.race([check.run({ signal, now: () => clock.now() }), hung]);
    if (findings.length === 0) throw new Error('the check returned no finding');
    return { check: check.name, findings, durationMs: Math.round(performance.now() - started) };
  } catch (err) {
    const timedOut = signal.aborted && !parent?.aborted;
    return {
      check: check.name,
      findings: [{
        check: `${check.name}.failed`,
        subject: check.name,
        severity: 'unreachable',
        summary: timedOut ? `the ${check.name} check did not finish within ${Math.round(budgetMs / 1000)} s` : `the ${check.name} check failed: ${message(err)}`,
        detail: { error: message(err), code: (err as { code?: unknown })?.code ?? null, timedOut },
      }],
      durationMs: Math.round(performance.now() - started),
    };
  } finally {
    clearTimeout(timer);
    release();
  }
}

/** Runs every check at once; resolves with the report (never rejects). */
export async function runAudit(options: RunAuditOptions): Promise<AuditReport> {
  const clock = options.clock ?? SYSTEM_CLOCK;
  const startedAt = clock.now();
  const t0 = performance.now();
  const budget = options.timeoutMs ?? 300_000;
  const checks = await Promise.all(options.checks.map((c) => runCheck(c, c.timeoutMs ?? budget, clock, options.signal)));
  const all = checks.flatMap((c) => c.findings);
  const previous = options.previous ?? null;
  const report: Omit<AuditReport, 'changes'> = {
    schema: 'relayguard-audit/1',
    node: options.node,
    startedAt,
    durationMs: Math.round(performance.now() - t0),
    trigger: options.trigger ?? 'cli',
    exitCode: auditExitCode(checks),
    status: worst(all),
    checks,
    previousStartedAt: previous?.startedAt ?? null,
  };
  return { ...report, changes: compareReports(previous, checks) };
}
