/**
 * The audit report for people: one block per check, one line per finding (severity, subject, summary), then what
 * changed since the previous audit. ANSI colour when asked (the CLI asks on a terminal). Pure.
 */
import type { Severity } from './finding.ts';
import type { AuditReport } from './run.ts';

const COLOUR: Readonly<Record<Severity, string>> = { ok: '32', warning: '33', critical: '1;31', unreachable: '35', broken: '35' };
const LABEL: Readonly<Record<Severity, string>> = { ok: 'ok', warning: 'WARNING', critical: 'CRITICAL', unreachable: 'UNREACHABLE', broken: 'BROKEN' };
const VERDICT = { 0: 'clean', 1: 'PROBLEMS FOUND', 2: 'warnings' } as const;

const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
/** Strips control characters a DNS TXT or an SMTP reply might carry (the report goes to a terminal). */
const clean = (s: string): string => s.replace(/[\x00-\x1f\x7f-\x9f]/g, '?');

export function renderAuditText(report: AuditReport, options: { colour?: boolean; hostname?: string } = {}): string {
  const paint = (sev: Severity, text: string): string => (options.colour ? `\x1b[${COLOUR[sev]}m${text}\x1b[0m` : text);
  const lines: string[] = [];
  const overall: Severity = report.exitCode === 1 ? 'critical' : report.exitCode === 2 ? 'warning' : 'ok';
  lines.push(`relayguard audit${options.hostname ? ` of ${options.hostname}` : ''} (node ${report.node}) at ${iso(report.startedAt)}, ${(report.durationMs / 1000).toFixed(1)} s: ${paint(overall, VERDICT[report.exitCode])} (exit ${report.exitCode})`);
  for (const c of report.checks) {
    lines.push('', `${c.check} (${(c.durationMs / 1000).toFixed(1)} s)`);
    for (const f of c.findings) {
      lines.push(`  ${paint(f.severity, LABEL[f.severity].padEnd(11))} ${clean(f.subject)}: ${clean(f.summary)}`);
    }
  }
  lines.push('');
  if (report.previousStartedAt === null) {
    lines.push('No earlier audit of this node: nothing to compare with.');
  } else if (report.changes.length === 0) {
    lines.push(`No change since the audit of ${iso(report.previousStartedAt)}.`);
  } else {
    lines.push(`Changes since the audit of ${iso(report.previousStartedAt)}:`);
    for (const ch of report.changes) {
      const to = ch.to === null ? 'gone' : paint(ch.to, LABEL[ch.to]);
      const from = ch.from === null ? 'new' : LABEL[ch.from];
      lines.push(`  ${ch.kind.padEnd(8)} ${ch.check} ${clean(ch.subject)}: ${from} -> ${to}${ch.kind === 'resolved' ? '' : `: ${clean(ch.summary)}`}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
