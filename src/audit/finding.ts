/**
 * The result shape of every self-audit check (issue 12): one CheckResult per check, made of findings, each with a
 * severity. 'unreachable' means the check could not get an answer (DNS timeout, connection refused): never clean;
 * 'broken' means the answer was garbage (a zone that lists the world, a record that cannot be read as DNS).
 */
export type Severity = 'ok' | 'warning' | 'critical' | 'unreachable' | 'broken';

export interface Finding {
  /** e.g. 'dns.spf' */
  readonly check: string;
  /** domain, address or listener */
  readonly subject: string;
  readonly severity: Severity;
  readonly summary: string;
  readonly detail?: Record<string, unknown>;
}

export interface CheckResult {
  readonly check: string;
  readonly findings: readonly Finding[];
  readonly durationMs: number;
}
