/**
 * Renderers for a tester run (pure: strings in, strings out): a readable text report (ANSI colour on request),
 * the JSON document (schema relayguard-tester/2, docs/tester-json.md) and JUnit XML for CI. Every violated
 * finding is printed with its remediation line ("fix: ..."), in all three. The open-proxy battery's parts are
 * rendered by proxy/report.ts.
 */
import { formatReplyInfo, REASON_TEXT, type Verdict } from './verdict.ts';
import { proxyJUnitSuites, renderProxyTarget } from './proxy/report.ts';
import { PROXY_REASON_TEXT } from './proxy/verdict.ts';
import type { Finding, MailDomain, PortResult, RunResult, TargetResult, TransportResult, TrickResult } from './result.ts';
import { renderNntpJUnit, renderNntpText } from './nntp/report.ts';

/** "example.test (given)", "example.test (guessed from the banner: give --domain)". */
export function describeMailDomain(d: MailDomain | null): string {
  if (d === null) return 'unknown (give --domain)';
  switch (d.source) {
    case 'option': return `${d.name} (given)`;
    case 'target': return `${d.name} (the target's MX records)`;
    case 'guessed-from-banner': return `${d.name} (guessed from the banner: give --domain)`;
    case 'guessed-from-host-name': return `${d.name} (guessed from the host name: give --domain)`;
  }
}

export interface TextOptions {
  /** ANSI colours. */
  readonly color?: boolean;
  /** Every trick, not only those that were not refused. */
  readonly verbose?: boolean;
  /** Print the full transcripts (when the run kept them). */
  readonly transcript?: boolean;
}

const ANSI = { red: '\x1b[31m', green: '\x1b[32m', yellow: '\x1b[33m', dim: '\x1b[2m', bold: '\x1b[1m', reset: '\x1b[0m' };

function painter(color: boolean): (what: keyof typeof ANSI, s: string) => string {
  return (what, s) => (color ? `${ANSI[what]}${s}${ANSI.reset}` : s);
}

function verdictColor(v: Verdict | 'N/A'): keyof typeof ANSI {
  return v === 'OPEN' ? 'red' : v === 'INCONCLUSIVE' ? 'yellow' : v === 'CLOSED' ? 'green' : 'dim';
}

function pad(s: string, n: number): string {
  return s.length >= n ? `${s} ` : s + ' '.repeat(n - s.length);
}

function countsText(c: { OPEN: number; CLOSED: number; INCONCLUSIVE: number; 'N/A': number }): string {
  const parts: string[] = [];
  if (c.OPEN) parts.push(`${c.OPEN} open`);
  if (c.INCONCLUSIVE) parts.push(`${c.INCONCLUSIVE} inconclusive`);
  if (c.CLOSED) parts.push(`${c.CLOSED} closed`);
  if (c['N/A']) parts.push(`${c['N/A']} n/a`);
  return parts.join(', ');
}

/** The readable report. */
export function renderText(run: RunResult, options: TextOptions = {}): string {
  const p = painter(options.color === true);
  const v = (verdict: Verdict | 'N/A'): string => p(verdictColor(verdict), p('bold', verdict));
  const out: string[] = [];
  const mode = run.mode === 'prove' ? 'proof mode (one tagged probe per accepted trick)' : 'safe mode (no DATA sent)';
  const checks = (run.checks ?? ['smtp']).join(', ');
  out.push(p('bold', `relayguard tester: ${mode}, checks ${checks}, tester domain ${run.testerDomain}, run ${run.runId}`));
  for (const e of run.errors) out.push(`${p('red', 'error')} ${e.input}: ${e.error}`);
  for (const t of run.targets) out.push('', ...renderTarget(t, options, p, v));
  for (const t of run.proxies ?? []) out.push('', ...renderProxyTarget(t, options, p, v));
  if (run.nntp) out.push('', ...renderNntpText(run.nntp, p, v, options));
  const onlyProxies = run.targets.length === 0 && (run.proxies ?? []).length > 0;
  const why = onlyProxies ? PROXY_REASON_TEXT[aggregateProxyReason(run)] : REASON_TEXT[run.reason];
  out.push('', `${p('bold', 'verdict:')} ${v(run.verdict)} ${why}${run.verdict === 'CLOSED' ? '' : ` (${run.detail})`}  ${p('dim', `exit ${run.exitCode}, ${(run.durationMs / 1000).toFixed(1)} s`)}`);
  if (run.mode === 'safe' && run.targets.some((t) => t.reason === 'accepted-not-proved' || t.reason === 'accepts-all-recipients')) {
    out.push(p('yellow', 'Some relay tricks were accepted at RCPT. Acceptance is not proof: run again with --prove --probe-domain YOUR.DOMAIN to find out.'));
  }
  return `${out.join('\n')}\n`;
}

type Paint = (what: keyof typeof ANSI, s: string) => string;

function renderTarget(t: TargetResult, options: TextOptions, p: Paint, v: (x: Verdict | 'N/A') => string): string[] {
  const out: string[] = [];
  const about = [t.hostName ? `host ${t.hostName}` : null, t.mx ? `MX ${t.mx.priority} of ${t.domain}` : null, t.sourceAddress ? `from ${t.sourceAddress}` : null].filter(Boolean).join(', ');
  out.push(`${p('bold', t.address)}${t.input !== t.address ? ` (${t.input})` : ''}${about ? `  ${p('dim', about)}` : ''}`);
  out.push(`  verdict ${v(t.verdict)}  ${REASON_TEXT[t.reason]}`);
  if (t.ports.some((x) => x.role === 'mx')) out.push(`  ${pad('domain', 9)}${describeMailDomain(t.mailDomain)}`);
  for (const port of t.ports) out.push(...renderPort(port, options, p, v));
  return out;
}

function renderPort(port: PortResult, options: TextOptions, p: Paint, v: (x: Verdict | 'N/A') => string): string[] {
  const out: string[] = [];
  out.push(`  ${p('bold', `port ${port.port}`)} ${port.role}  ${v(port.verdict)}  ${REASON_TEXT[port.reason]}`);
  const s = port.transports[0]?.session;
  if (s?.banner) out.push(`    ${pad('banner', 11)}${formatReplyInfo(s.banner)}${s.greetingMs !== null ? p('dim', `  (${s.greetingMs} ms)`) : ''}`);
  if (s && s.hello) out.push(`    ${pad(s.hello, 11)}${s.capabilities.join(', ') || '(no extensions)'}`);
  const tls = port.transports.find((x) => x.session.tls)?.session.tls;
  if (tls) {
    const c = tls.certificate;
    const certText = c
      ? `${c.subject}${c.selfSigned ? ', self-signed' : ` issued by ${c.issuer}`}, valid until ${c.validTo.slice(0, 10)}${c.expired ? ' (EXPIRED)' : ''}${c.matchesHostName === false ? ', does not name the host' : ''}`
      : 'no certificate';
    out.push(`    ${pad('TLS', 11)}${tls.protocol ?? '?'} ${tls.cipher}; ${certText}`);
  } else if (port.role !== 'submissions' && s?.banner?.code === 220) {
    out.push(`    ${pad('TLS', 11)}${s.starttlsOffered ? 'STARTTLS offered' : 'STARTTLS not offered'}`);
  }
  if (port.vrfy || port.expn) {
    const code = (x: PortResult['vrfy']): string => (x?.reply ? String(x.reply.code) : '-');
    out.push(`    ${pad('VRFY/EXPN', 11)}${code(port.vrfy)} / ${code(port.expn)}`);
  }
  for (const t of port.transports) out.push(...renderTransport(t, options, p, v));
  const shown = port.findings.filter((f) => !f.ok || options.verbose || f.severity !== 'info');
  if (shown.length > 0) {
    out.push('    findings');
    for (const f of shown) {
      out.push(`      ${findingMark(f, p)} ${f.id}: ${f.message}`);
      if (!f.ok && f.remediation) out.push(`            ${p('bold', 'fix:')} ${f.remediation}`);
    }
  }
  return out;
}

function findingMark(f: Finding, p: Paint): string {
  if (f.ok) return p('green', 'ok   ');
  if (f.severity === 'error') return p('red', 'ERROR');
  if (f.severity === 'warning') return p('yellow', 'warn ');
  return p('dim', 'note ');
}

function renderTransport(t: TransportResult, options: TextOptions, p: Paint, v: (x: Verdict | 'N/A') => string): string[] {
  const out: string[] = [];
  const stats = t.tricks.length > 0 ? `${countsText(t.counts)}; ` : '';
  out.push(`    ${pad(t.transport, 11)}${v(t.verdict)}  ${t.verdict === 'N/A' ? t.detail : REASON_TEXT[t.reason]}  ${p('dim', `${stats}${t.connections} connection${t.connections === 1 ? '' : 's'}, ${t.durationMs} ms`)}`);
  if (t.tricks.length === 0 && t.verdict !== 'N/A') out.push(`      ${p('dim', t.detail)}`);
  for (const trick of t.tricks) {
    if (!options.verbose && (trick.verdict === 'CLOSED' || trick.verdict === 'N/A')) continue;
    out.push(...renderTrick(trick, p, v));
  }
  if (options.transcript && t.transcripts) {
    for (const c of t.transcripts) {
      out.push(`      ${p('dim', `-- connection ${c.connection} from ${c.localAddress ?? '?'}:${c.localPort ?? '?'} at ${c.startedAt}`)}`);
      for (const l of c.lines) out.push(`      ${p('dim', String(l.t).padStart(6))} ${l.dir}: ${l.line}`);
    }
  }
  return out;
}

function renderTrick(trick: TrickResult, p: Paint, v: (x: Verdict | 'N/A') => string): string[] {
  const out = [`      ${pad(trick.id, 5)}${pad(trick.title, 36)}${v(trick.verdict)}  ${trick.detail}`];
  if (trick.mailFrom !== null) out.push(`           ${p('dim', `MAIL FROM:${trick.mailFrom}  RCPT TO:${trick.rcptTo.join('  RCPT TO:')}`)}`);
  if (trick.proof?.bouncePayload) out.push(`           the bounce came back with the probe's body, delivered by ${trick.proof.bounceFrom ?? '?'}`);
  if (trick.proof?.arrived) {
    out.push(`           relay saw the tester as ${trick.proof.relaySawClient ?? '?'}; delivered by ${trick.proof.deliveredBy ?? '?'} after ${trick.proof.latencyMs ?? '?'} ms`);
    for (const r of trick.proof.received) out.push(`           ${p('dim', `Received: ${r}`)}`);
  }
  return out;
}

/** The reason of the proxy target that decided a proxies-only run's verdict. */
function aggregateProxyReason(run: RunResult): keyof typeof PROXY_REASON_TEXT {
  const decisive = (run.proxies ?? []).find((t) => t.verdict === run.verdict);
  return decisive?.reason ?? 'not-tested';
}

/** The JSON document (2-space indented). */
export function renderJson(run: RunResult): string {
  return `${JSON.stringify(run, null, 2)}\n`;
}

function xml(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '?').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * JUnit XML: one testsuite per (target, port, transport) with one testcase per trick (OPEN = failure,
 * INCONCLUSIVE = error, not applicable = skipped), and one suite per port for the findings (a violated
 * warning or error finding = failure).
 */
export function renderJUnit(run: RunResult): string {
  const suites: string[] = [];
  let tests = 0;
  let failures = 0;
  let errors = 0;
  for (const t of run.targets) {
    for (const port of t.ports) {
      for (const tr of port.transports) {
        const name = `${t.address}:${port.port} ${port.role} ${tr.transport}`;
        const cls = `relayguard.tester.${t.address.replace(/[.:]/g, '_')}.${port.port}.${tr.transport}`;
        const cases: string[] = [];
        let f = 0;
        let e = 0;
        let skipped = 0;
        const items = tr.tricks.length > 0 ? tr.tricks : [null];
        for (const trick of items) {
          const verdict = trick ? trick.verdict : tr.verdict;
          const label = trick ? `${trick.id} ${trick.title}` : 'session';
          const detail = trick ? trick.detail : tr.detail;
          const reason = trick ? trick.reason : tr.reason;
          const time = ((trick ? trick.ms : tr.durationMs) / 1000).toFixed(3);
          let body = '';
          if (verdict === 'OPEN') { f++; body = `<failure type="OPEN" message="${xml(`${REASON_TEXT[reason]}: ${detail}`)}">${xml(trickText(trick, port))}</failure>`; }
          else if (verdict === 'INCONCLUSIVE') { e++; body = `<error type="INCONCLUSIVE" message="${xml(`${REASON_TEXT[reason]}: ${detail}`)}">${xml(trickText(trick))}</error>`; }
          else if (verdict === 'N/A') { skipped++; body = `<skipped message="${xml(detail)}"/>`; }
          cases.push(`    <testcase classname="${xml(cls)}" name="${xml(label)}" time="${time}">${body}</testcase>`);
        }
        tests += items.length;
        failures += f;
        errors += e;
        suites.push(`  <testsuite name="${xml(name)}" tests="${items.length}" failures="${f}" errors="${e}" skipped="${skipped}" time="${(tr.durationMs / 1000).toFixed(3)}" timestamp="${xml(t.startedAt)}">\n${cases.join('\n')}\n  </testsuite>`);
      }
      if (port.findings.length > 0) {
        const cls = `relayguard.tester.${t.address.replace(/[.:]/g, '_')}.${port.port}.findings`;
        let f = 0;
        const cases = port.findings.map((fd) => {
          const failed = !fd.ok && fd.severity !== 'info';
          if (failed) f++;
          const fix = fd.remediation ? `fix: ${fd.remediation}` : '';
          const body = failed ? `<failure type="${fd.severity}" message="${xml(fd.message)}">${xml(fix)}</failure>` : '';
          return `    <testcase classname="${xml(cls)}" name="${xml(fd.id)}" time="0">${body}</testcase>`;
        });
        tests += cases.length;
        failures += f;
        suites.push(`  <testsuite name="${xml(`${t.address}:${port.port} ${port.role} findings`)}" tests="${cases.length}" failures="${f}" errors="0" skipped="0" time="0">\n${cases.join('\n')}\n  </testsuite>`);
      }
    }
  }
  const px = proxyJUnitSuites(run.proxies ?? []);
  suites.push(...px.suites);
  tests += px.tests;
  failures += px.failures;
  errors += px.errors;
  if (run.nntp) {
    const n = renderNntpJUnit(run.nntp);
    suites.push(...n.suites);
    tests += n.tests;
    failures += n.failures;
    errors += n.errors;
  }
  for (const e of run.errors) {
    tests++;
    errors++;
    suites.push(`  <testsuite name="${xml(e.input)}" tests="1" failures="0" errors="1" skipped="0" time="0">\n    <testcase classname="relayguard.tester" name="${xml(e.input)}" time="0"><error type="ERROR" message="${xml(e.error)}"/></testcase>\n  </testsuite>`);
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="relayguard tester" tests="${tests}" failures="${failures}" errors="${errors}" time="${(run.durationMs / 1000).toFixed(3)}">\n${suites.join('\n')}\n</testsuites>\n`;
}

function trickText(trick: TrickResult | null, port?: PortResult): string {
  if (!trick) return '';
  const lines = [`MAIL FROM:${trick.mailFrom ?? ''}`, ...trick.rcptTo.map((r) => `RCPT TO:${r}`)];
  if (trick.replies.mail) lines.push(`MAIL -> ${formatReplyInfo(trick.replies.mail)}`);
  for (const r of trick.replies.rcpt) lines.push(`RCPT -> ${formatReplyInfo(r)}`);
  if (trick.proof?.arrived) lines.push(`probe ${trick.proof.tag} arrived; relay saw ${trick.proof.relaySawClient ?? '?'}`, ...trick.proof.received.map((r) => `Received: ${r}`));
  if (trick.proof?.bouncePayload) lines.push(`a bounce carrying probe ${trick.proof.tag}'s body reached the sink`);
  const finding = trick.verdict === 'OPEN' ? port?.findings.find((f) => f.id === (trick.reason === 'bounce-relay' ? 'bounce-relay' : 'open-relay')) : undefined;
  if (finding?.remediation) lines.push(`fix: ${finding.remediation}`);
  return lines.join('\n');
}
