/**
 * Renderers for the nntp section of a run (pure): text lines for the readable report and JUnit test suites (one
 * per address and port, one test case per question: POST, IHAVE).
 */
import { REASON_TEXT, type Verdict } from '../verdict.ts';
import type { NntpPortResult, NntpProof, NntpReply, NntpRunSection, NntpStep } from './result.ts';

type Paint = (what: 'red' | 'green' | 'yellow' | 'dim' | 'bold', s: string) => string;

const fmt = (r: NntpReply | null): string => (r ? `${r.code} ${r.text}`.trimEnd() : '-');

function pad(s: string, n: number): string {
  return s.length >= n ? `${s} ` : s + ' '.repeat(n - s.length);
}

/** The text lines of the nntp section. */
export function renderNntpText(section: NntpRunSection, p: Paint, v: (x: Verdict | 'N/A') => string, options: { verbose?: boolean; transcript?: boolean } = {}): string[] {
  const out: string[] = [];
  out.push(p('bold', `open NNTP check: ${section.mode === 'prove' ? `proof mode (one tagged article per accepting path to ${section.group}, read back, then cancelled)` : 'safe mode (no article sent)'}`));
  for (const t of section.targets) {
    out.push('', `${p('bold', t.address)}${t.input !== t.address ? ` (${t.input})` : ''}  ${p('dim', 'nntp')}`);
    out.push(`  verdict ${v(t.verdict)}  ${REASON_TEXT[t.reason]}`);
    for (const port of t.ports) out.push(...renderPort(port, p, v, options));
  }
  if (section.mode === 'safe' && section.targets.some((t) => t.reason === 'accepted-not-proved')) {
    out.push(p('yellow', 'A server offered to take an article from a stranger. The offer is not proof: run again with --prove --nntp-group GROUP (a group the server\'s admin names) to find out.'));
  }
  return out;
}

function renderPort(port: NntpPortResult, p: Paint, v: (x: Verdict | 'N/A') => string, options: { verbose?: boolean; transcript?: boolean }): string[] {
  const out: string[] = [];
  out.push(`  ${p('bold', `port ${port.port}`)} ${port.role}  ${v(port.verdict)}  ${REASON_TEXT[port.reason]}`);
  if (port.greeting) out.push(`    ${pad('greeting', 11)}${fmt(port.greeting)}${port.greetingMs !== null ? p('dim', `  (${port.greetingMs} ms)`) : ''}`);
  if (port.tls) out.push(`    ${pad('TLS', 11)}${port.tls.protocol ?? '?'} ${port.tls.cipher}; ${port.tls.subject ?? 'no certificate'}`);
  if (port.greeting && port.greeting.code < 300) {
    out.push(`    ${pad('server', 11)}${port.kind}${port.authinfoOffered ? ', offers AUTHINFO' : ''}${port.modeReader ? `; MODE READER ${fmt(port.modeReader)}` : ''}`);
  }
  if (options.verbose && port.capabilities.length > 0) out.push(`    ${pad('caps', 11)}${port.capabilities.join(', ')}`);
  const g = port.groups;
  if (g) {
    if (g.reply && g.reply.code === 215) {
      out.push(`    ${pad('groups', 11)}${g.listed}${g.complete ? '' : '+ (list cut short)'}: ${g.posting} open to posting (y), ${g.moderated} moderated (m), ${g.noPosting} no posting (n), ${g.other} other`);
      if (g.postable.length > 0) out.push(`    ${pad('', 11)}${p('dim', `postable: ${g.postable.join(', ')}${g.posting > g.postable.length ? ', ...' : ''}`)}`);
    } else {
      out.push(`    ${pad('groups', 11)}LIST ACTIVE ${fmt(g.reply)}`);
    }
  }
  out.push(stepLine('POST', port.post, p, v), stepLine('IHAVE', port.ihave, p, v));
  for (const pr of port.proofs) out.push(...proofLines(pr, p));
  if (options.transcript && port.transcripts) {
    for (const c of port.transcripts) {
      out.push(`      ${p('dim', `-- connection ${c.connection}`)}`);
      for (const l of c.lines) out.push(`      ${p('dim', String(l.t).padStart(6))} ${l.dir}: ${l.line}`);
    }
  }
  return out;
}

function stepLine(name: string, s: NntpStep, p: Paint, v: (x: Verdict | 'N/A') => string): string {
  return `    ${pad(name, 11)}${v(s.verdict)}  ${s.detail}`;
}

function proofLines(pr: NntpProof, p: Paint): string[] {
  const out = [`      ${p('dim', `${pr.path} ${pr.messageId} to ${pr.group}: ${fmt(pr.posted)}`)}`];
  if (pr.articleReadBack) {
    out.push(`      read back after ${pr.latencyMs ?? '?'} ms: ARTICLE yes, HEAD ${pr.headReadBack ? 'yes' : 'no'}, in the group ${pr.inGroup ? `yes (number ${pr.articleNumber})` : 'no'}`);
    if (pr.pathHeader) out.push(`      ${p('dim', `Path: ${pr.pathHeader}`)}`);
    if (pr.injectionInfo) out.push(`      ${p('dim', `Injection-Info: ${pr.injectionInfo}`)}`);
  }
  if (pr.cancel) out.push(`      cancel ${pr.cancel.messageId}: ${fmt(pr.cancel.posted ?? pr.cancel.command)}; article ${pr.cancel.removed ? 'removed' : 'still there'}`);
  return out;
}

function xml(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '?').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** JUnit suites of the nntp section, with their totals. */
export function renderNntpJUnit(section: NntpRunSection): { suites: string[]; tests: number; failures: number; errors: number } {
  const suites: string[] = [];
  let tests = 0;
  let failures = 0;
  let errors = 0;
  for (const t of section.targets) {
    for (const port of t.ports) {
      const cls = `relayguard.tester.nntp.${t.address.replace(/[.:]/g, '_')}.${port.port}`;
      let f = 0;
      let e = 0;
      let skipped = 0;
      const cases = (['POST', 'IHAVE'] as const).map((name) => {
        const s = name === 'POST' ? port.post : port.ihave;
        const detail = s.verdict === 'N/A' && port.verdict !== 'CLOSED' ? port.detail : s.detail;
        let body = '';
        if (s.verdict === 'OPEN') { f++; body = `<failure type="OPEN" message="${xml(`${REASON_TEXT[s.reason]}: ${detail}`)}"/>`; }
        else if (s.verdict === 'INCONCLUSIVE') { e++; body = `<error type="INCONCLUSIVE" message="${xml(`${REASON_TEXT[s.reason]}: ${detail}`)}"/>`; }
        else if (s.verdict === 'N/A') {
          if (port.verdict === 'INCONCLUSIVE') { e++; body = `<error type="INCONCLUSIVE" message="${xml(`${REASON_TEXT[port.reason]}: ${port.detail}`)}"/>`; }
          else { skipped++; body = `<skipped message="${xml(port.detail)}"/>`; }
        }
        return `    <testcase classname="${xml(cls)}" name="${name}" time="${(port.durationMs / 1000).toFixed(3)}">${body}</testcase>`;
      });
      tests += cases.length;
      failures += f;
      errors += e;
      suites.push(`  <testsuite name="${xml(`${t.address}:${port.port} ${port.role}`)}" tests="${cases.length}" failures="${f}" errors="${e}" skipped="${skipped}" time="${(port.durationMs / 1000).toFixed(3)}" timestamp="${xml(t.startedAt)}">\n${cases.join('\n')}\n  </testsuite>`);
    }
  }
  return { suites, tests, failures, errors };
}
