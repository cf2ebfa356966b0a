/**
 * Renderers for the open-proxy battery (pure): text lines for the readable report and JUnit test suites, called
 * by ../report.ts. OPEN attempts show the proof: the egress address the sink saw, the tested address, and the
 * safe SMTP exchange through the tunnel (banner, EHLO, QUIT).
 */
import type { Verdict } from '../verdict.ts';
import type { ProxyAttemptResult, ProxyPortResult, ProxyTargetResult } from './result.ts';
import { PROXY_REASON_TEXT } from './verdict.ts';

export type Paint = (what: 'red' | 'green' | 'yellow' | 'dim' | 'bold' | 'reset', s: string) => string;

function pad(s: string, n: number): string {
  return s.length >= n ? `${s} ` : s + ' '.repeat(n - s.length);
}

function counts(c: ProxyTargetResult['counts']): string {
  const parts: string[] = [];
  if (c.OPEN) parts.push(`${c.OPEN} open`);
  if (c.INCONCLUSIVE) parts.push(`${c.INCONCLUSIVE} inconclusive`);
  if (c.CLOSED) parts.push(`${c.CLOSED} closed`);
  if (c['N/A']) parts.push(`${c['N/A']} n/a`);
  return parts.join(', ');
}

/** Text lines for one proxy target. */
export function renderProxyTarget(t: ProxyTargetResult, options: { verbose?: boolean }, p: Paint, v: (x: Verdict | 'N/A') => string): string[] {
  const out: string[] = [];
  out.push(`${p('bold', t.address)}${t.input !== t.address ? ` (${t.input})` : ''}  ${p('dim', `open-proxy battery${t.sourceAddress ? `, from ${t.sourceAddress}` : ''}`)}`);
  out.push(`  verdict ${v(t.verdict)}  ${PROXY_REASON_TEXT[t.reason]}`);
  if (t.egress.length > 0) out.push(`  ${pad('egress', 9)}${t.egress.join(', ')} (the sink saw connections from these; tested address ${t.address})`);
  for (const port of t.ports) out.push(...renderPort(port, options, p, v));
  return out;
}

function renderPort(port: ProxyPortResult, options: { verbose?: boolean }, p: Paint, v: (x: Verdict | 'N/A') => string): string[] {
  const out: string[] = [];
  const speaks = port.protocols.length > 0 ? port.protocols.join('+') : 'no proxy protocol';
  out.push(`  ${p('bold', `port ${port.port}`)} ${speaks}  ${v(port.verdict)}  ${PROXY_REASON_TEXT[port.reason]}  ${p('dim', `${counts(port.counts)}; ${port.durationMs} ms`)}`);
  if (port.verdict !== 'OPEN' && port.reason !== 'no-service') out.push(`    ${p('dim', port.detail)}`);
  for (const a of port.attempts) {
    if (!options.verbose && (a.verdict === 'N/A' || (a.verdict === 'CLOSED' && port.verdict !== 'CLOSED') || (port.reason === 'no-service'))) continue;
    out.push(...renderAttempt(a, p, v));
  }
  for (const f of port.findings) {
    const mark = f.severity === 'error' ? p('red', 'ERROR') : f.severity === 'warning' ? p('yellow', 'warn ') : p('dim', 'note ');
    out.push(`    ${mark} ${f.id}: ${f.message}`);
    if (f.remediation) out.push(`          ${p('bold', 'fix:')} ${f.remediation}`);
  }
  return out;
}

function renderAttempt(a: ProxyAttemptResult, p: Paint, v: (x: Verdict | 'N/A') => string): string[] {
  const dest = a.destination ? `${a.destination.host.includes(':') ? `[${a.destination.host}]` : a.destination.host}:${a.destination.port}` : '-';
  const out = [`    ${pad(a.id, 4)}${pad(a.title, 44)}${v(a.verdict)}  ${a.detail}`];
  out.push(`         ${p('dim', `asked for ${dest} (${a.destination?.kind ?? 'none'}), ${a.ms} ms`)}`);
  if (a.verdict === 'OPEN' && a.proof) {
    out.push(`         proof: the sink saw "${a.proof.sinkLine ?? ''}" from ${a.proof.egressAddress ?? '?'} on its ${a.proof.sinkKind ?? '?'} port`);
  }
  if (a.smtp) out.push(`         ${p('dim', `through the tunnel: ${a.smtp.banner ?? '-'}${a.smtp.ehlo ? ` / EHLO ${a.smtp.ehlo}` : ''}${a.smtp.quit ? ` / QUIT ${a.smtp.quit}` : ''}`)}`);
  return out;
}

function xml(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '?').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** JUnit suites: one per (proxy address, port), one testcase per attempt (OPEN = failure, INCONCLUSIVE = error, N/A = skipped). */
export function proxyJUnitSuites(targets: readonly ProxyTargetResult[]): { suites: string[]; tests: number; failures: number; errors: number } {
  const suites: string[] = [];
  let tests = 0, failures = 0, errors = 0;
  for (const t of targets) {
    for (const port of t.ports) {
      const cls = `relayguard.tester.proxy.${t.address.replace(/[.:]/g, '_')}.${port.port}`;
      let f = 0, e = 0, skipped = 0;
      const cases = port.attempts.map((a) => {
        let body = '';
        const text = [
          a.reply ? `proxy reply: ${a.reply}` : null,
          a.proof?.arrived ? `the sink saw "${a.proof.sinkLine ?? ''}" from ${a.proof.egressAddress ?? '?'} (tested ${t.address})` : null,
          a.smtp ? `through the tunnel: ${a.smtp.banner ?? ''} / ${a.smtp.ehlo ?? ''} / ${a.smtp.quit ?? ''}` : null,
        ].filter(Boolean).join('\n');
        if (a.verdict === 'OPEN') { f++; body = `<failure type="OPEN" message="${xml(`${PROXY_REASON_TEXT[a.reason]}: ${a.detail}`)}">${xml(text)}</failure>`; }
        else if (a.verdict === 'INCONCLUSIVE') { e++; body = `<error type="INCONCLUSIVE" message="${xml(`${PROXY_REASON_TEXT[a.reason]}: ${a.detail}`)}">${xml(text)}</error>`; }
        else if (a.verdict === 'N/A') { skipped++; body = `<skipped message="${xml(a.detail)}"/>`; }
        return `    <testcase classname="${xml(cls)}" name="${xml(`${a.id} ${a.title}`)}" time="${(a.ms / 1000).toFixed(3)}">${body}</testcase>`;
      });
      tests += cases.length;
      failures += f;
      errors += e;
      suites.push(`  <testsuite name="${xml(`proxy ${t.address}:${port.port}`)}" tests="${cases.length}" failures="${f}" errors="${e}" skipped="${skipped}" time="${(port.durationMs / 1000).toFixed(3)}" timestamp="${xml(t.startedAt)}">\n${cases.join('\n')}\n  </testsuite>`);
    }
  }
  return { suites, tests, failures, errors };
}
