/**
 * Trend: what changed between two audits. Findings are matched by (check, subject): a finding that is new, one
 * that is gone, and one whose severity moved. Pure.
 */
import type { CheckResult, Finding, Severity } from './finding.ts';

export interface AuditChange {
  readonly kind: 'new' | 'resolved' | 'changed';
  readonly check: string;
  readonly subject: string;
  /** null for a new finding. */
  readonly from: Severity | null;
  /** null for a resolved finding. */
  readonly to: Severity | null;
  readonly summary: string;
}

export const findingKey = (f: Pick<Finding, 'check' | 'subject'>): string => `${f.check}\u0000${f.subject}`;

/**
 * The changes from `previous` to `checks`. Checks the previous report did not run are left out (a new check is not
 * news); with no previous report there is no change. A finding that only changed its check name within the same
 * subject and check group (e.g. 'relay.open' -> 'relay.closed') is one 'changed' entry.
 */
export function compareReports(previous: { readonly checks: readonly CheckResult[] } | null, checks: readonly CheckResult[]): AuditChange[] {
  if (previous === null) return [];
  const out: AuditChange[] = [];
  const prevByCheck = new Map(previous.checks.map((c) => [c.check, c]));
  for (const cur of checks) {
    const prev = prevByCheck.get(cur.check);
    if (prev === undefined) continue;
    // Per subject: a subject's finding may change its id (relay.closed -> relay.open).
    const before = new Map<string, Finding[]>();
    for (const f of prev.findings) before.set(f.subject, [...(before.get(f.subject) ?? []), f]);
    const matched = new Set<Finding>();
    for (const f of cur.findings) {
      const same = before.get(f.subject)?.find((p) => p.check === f.check && !matched.has(p));
      if (same) {
        matched.add(same);
        if (same.severity !== f.severity) out.push({ kind: 'changed', check: f.check, subject: f.subject, from: same.severity, to: f.severity, summary: f.summary });
        continue;
      }
      const group = f.check.split('.')[0];
      const other = before.get(f.subject)?.find((p) => !matched.has(p) && p.check.split('.')[0] === group && !cur.findings.some((c) => c.subject === p.subject && c.check === p.check));
      if (other) {
        matched.add(other);
        if (other.severity !== f.severity || other.check !== f.check) out.push({ kind: 'changed', check: f.check, subject: f.subject, from: other.severity, to: f.severity, summary: f.summary });
        continue;
      }
      out.push({ kind: 'new', check: f.check, subject: f.subject, from: null, to: f.severity, summary: f.summary });
    }
    for (const p of prev.findings) {
      if (!matched.has(p)) out.push({ kind: 'resolved', check: p.check, subject: p.subject, from: p.severity, to: null, summary: p.summary });
    }
  }
  return out;
}

/**
 * The previous state of every check from a history (newest first): for each check, its result in the newest
 * report that ran it (a partial audit, `relayguard audit --only relay`, does not hide the other checks' past).
 */
export function mergeHistory<R extends { readonly startedAt: number; readonly checks: readonly CheckResult[] }>(reports: readonly R[]): (R & { readonly checks: readonly CheckResult[] }) | null {
  const newest = reports[0];
  if (newest === undefined) return null;
  const seen = new Map<string, CheckResult>();
  for (const r of reports) for (const c of r.checks) if (!seen.has(c.check)) seen.set(c.check, c);
  return { ...newest, checks: [...seen.values()] };
}
