/**
 * Verdicts: pure functions from SMTP replies (or client errors) to OPEN / CLOSED / INCONCLUSIVE with a reason,
 * per trick, then aggregated per transport, port and target. No I/O.
 *
 * Rules (the why is in the reference notes, relay-testers.md sections 2 and 5):
 * - OPEN only with proof: a tagged probe reached the tester's own sink (proof mode), 'proved'; or a delivery
 *   status notification carrying the probe's body reached the sink (the server bounced chosen content to a forged
 *   third-party sender), 'bounce-relay'. Acceptance at RCPT (what
 *   nmap and MX Toolbox call "open") or even at DATA is never proof: sinks, catch-alls, honeypots and
 *   queue-then-bounce servers accept everything. So safe mode never says OPEN; an accepted relay trick is
 *   INCONCLUSIVE 'accepted-not-proved' (run --prove), or 'accepts-all-recipients' when the same session also
 *   accepted the V21 control, an unknown random user at the target's own address literal, which a real MTA
 *   refuses (the mark of a sink such as aiosmtpd, a catch-all, or a honeypot).
 * - A refusal about the tester's own address is INCONCLUSIVE 'client-blocked', at any phase and before any other
 *   rule: DNSBL texts ("Client host [192.0.2.9] blocked using zen.example", "listed in", "Spamhaus"), "Client host
 *   rejected", and any reply whose text names the address the tester connected from (IPv4 or IPv6, bare or in
 *   brackets; addresses inside <...> are the echoed paths and do not count). A blocklisted tester learns nothing
 *   about relaying: reading such a refusal as CLOSED let a proved open relay get delisted (field report H1).
 *   On a submission port that offers AUTH, a client rule that is not a DNSBL ("Client host rejected: Access
 *   denied", Postfix's permit_sasl_authenticated, reject) is CLOSED 'auth-required'.
 * - CLOSED needs a control (mx ports, requireControl()): the same session must have accepted a local recipient
 *   (CONTROL_RECIPIENTS: postmaster at the mail domain, and so on). A 'refused' or 'deferred' trick in a session
 *   whose control was refused too is INCONCLUSIVE 'control-refused' (or 'client-blocked' when the control's
 *   refusal was about the tester): a server that refuses everything from this client says nothing about relaying.
 * - 5xx: CLOSED 'refused'. 530 (or 5.7.10/5.7.11) saying STARTTLS: CLOSED 'tls-required' (this transport cannot
 *   be used to relay; the battery after STARTTLS answers for TLS). Other 530 / "authentication required":
 *   CLOSED 'auth-required'.
 * - 4xx: INCONCLUSIVE 'greylisted' when the text says so, else 'deferred'; except a 4xx whose text says relaying
 *   is denied (Postfix defer_unauth_destination: "454 4.7.1 Relay access denied"), which is CLOSED 'deferred':
 *   a temporary code, but a refusal that no retry will turn into acceptance.
 * - 421 anywhere and lost connections: 'dropped' (the runner first retries on a fresh connection); timeouts:
 *   'timeout' (a tarpit or a dead peer); a 421 or 554 greeting: INCONCLUSIVE 'banner-refused' (the server
 *   would not talk to this client, so nothing was tested; nmap ignores the greeting code and calls such a
 *   server open).
 * - Aggregation: any OPEN makes the whole OPEN; else any INCONCLUSIVE makes it INCONCLUSIVE (the most telling
 *   reason wins); else CLOSED with the most frequent closing reason. 'not-applicable' results do not count.
 */
import { canonicalIp } from '../core/canonical.ts';
import type { SmtpReply } from '../smtp/client.ts';

export type Verdict = 'OPEN' | 'CLOSED' | 'INCONCLUSIVE';

export type Reason =
  // OPEN
  | 'proved' | 'bounce-relay'
  // OPEN (nntp: src/tester/nntp)
  | 'article-read-back'
  // CLOSED
  | 'refused' | 'deferred' | 'auth-required' | 'tls-required' | 'local-accepted' | 'no-service'
  // CLOSED (nntp)
  | 'posting-not-permitted'
  // INCONCLUSIVE
  | 'accepts-all-recipients' | 'accepted-not-proved' | 'client-blocked' | 'control-refused' | 'banner-refused' | 'helo-refused' | 'greylisted'
  | 'tls-failed' | 'timeout' | 'dropped' | 'budget-exhausted' | 'not-tested'
  // INCONCLUSIVE (nntp)
  | 'not-read-back' | 'malformed-reply'
  // neither (excluded from aggregation)
  | 'not-applicable';

export interface Outcome {
  readonly verdict: Verdict | 'N/A';
  readonly reason: Reason;
  /** One line for humans: what was seen ("RCPT 554 5.7.1 Relay access denied"). */
  readonly detail: string;
}

/** A reply as reports keep it. */
export interface ReplyInfo {
  readonly code: number;
  readonly enhanced: string | null;
  /** The reply lines joined with "\n" (code and separators removed). */
  readonly text: string;
}

export type ReplyPhase = 'greeting' | 'helo' | 'starttls' | 'pre' | 'rset' | 'mail' | 'rcpt' | 'data' | 'dot';

export const REASON_TEXT: Readonly<Record<Reason, string>> = {
  'proved': 'a tagged probe was relayed to the tester\'s sink',
  'bounce-relay': 'bounce relay: the server bounced the probe, body included, to a forged third-party sender (the tester\'s sink)',
  'refused': 'refused (5xx)',
  'deferred': 'deferred (4xx)',
  'auth-required': 'AUTH required',
  'tls-required': 'TLS required',
  'local-accepted': 'accepted as a local recipient (not relaying)',
  'no-service': 'no service (connection failed)',
  'accepts-all-recipients': 'accepts all recipients (even an unknown local user): sink, catch-all or honeypot; only --prove can tell',
  'accepted-not-proved': 'accepted but not proved',
  'client-blocked': 'the server refused the tester\'s own address (blocklist or client rule): relaying was not tested; test from another address',
  'control-refused': 'the server refused even a local control recipient (postmaster) in the same session: its refusals say nothing about relaying',
  'banner-refused': 'refused banner (SMTP 421/554, NNTP 400)',
  'helo-refused': 'EHLO and HELO refused',
  'greylisted': 'greylisted (4xx)',
  'tls-failed': 'TLS handshake failed',
  'timeout': 'timeout or tarpit',
  'dropped': 'connection dropped',
  'budget-exhausted': 'time budget exhausted before the test ran',
  'not-tested': 'nothing could be tested',
  'not-applicable': 'not applicable',
  'article-read-back': 'a tagged test article was posted by a stranger and read back from the server',
  'posting-not-permitted': 'posting not permitted (NNTP 440)',
  'not-read-back': 'the server accepted the article (240/235) but it never appeared: a lie, a moderation queue or a delay',
  'malformed-reply': 'malformed or endless reply (not the protocol)',
};

const INCONCLUSIVE_PRIORITY: readonly Reason[] = [
  'accepts-all-recipients', 'accepted-not-proved', 'not-read-back', 'client-blocked', 'control-refused', 'banner-refused', 'helo-refused', 'greylisted', 'deferred',
  'tls-failed', 'malformed-reply', 'timeout', 'dropped', 'budget-exhausted', 'not-tested',
];
const CLOSED_PRIORITY: readonly Reason[] = ['auth-required', 'posting-not-permitted', 'tls-required', 'refused', 'deferred', 'local-accepted', 'no-service'];

export function replyInfo(r: SmtpReply): ReplyInfo {
  return { code: r.code, enhanced: r.enhanced, text: r.lines.join('\n') };
}

/** "554 5.7.1 Relay access denied" (first line; the enhanced code is already part of the text). */
export function formatReplyInfo(r: ReplyInfo): string {
  return `${r.code} ${r.text.split('\n')[0] ?? ''}`.trimEnd();
}

const TLS_TEXT = /starttls|\btls\b|encrypt|ssl/i;
const AUTH_TEXT = /auth(entication|enticate|orization)?\s+(is\s+)?(required|needed|first)|must\s+(first\s+)?auth|not\s+authenticated|login\s+required|authenticate\s+first/i;
const GREYLIST_TEXT = /gr[ae]y[\s-]?list|postgrey|try\s+again\s+later|retry\s+(later|in\s+\d)/i;
// A blocklist named in a refusal (Postfix reject_rbl_client: "Client host [X] blocked using <zone>"; Exim and others:
// "listed in/at <zone>", "is on a blacklist", well-known list operators).
const DNSBL_TEXT = /\bblocked\s+using\b|(?<!not\s)\b(?:listed|found)\s+(?:in|on|at|by)\s+[a-z0-9-]+(?:\.[a-z0-9-]+)+|\b(?:rbl|dnsbl|rhsbl|ordb)\b|\b(?:black|block|deny)[\s-]?list(?:ed)?\b|spamhaus|spamcop|barracuda|\bsorbs\b|\bpsbl\b|\buceprotect\b/i;
// A rule about the client itself (Postfix "Client host rejected: ...", "Client host [X] blocked", "your IP ... blocked").
const CLIENT_RULE_TEXT = /\bclient\s+host\b[^;]{0,80}\b(?:rejected|blocked|refused|denied)|\b(?:client|your)\s+(?:ip\s+|host\s+|network\s+)?(?:address\s+)?(?:\[[^\]]*\]\s+)?(?:is\s+|has\s+been\s+)?(?:blocked|banned|blacklisted|blocklisted)\b/i;
const ACCESS_DENIED_TEXT = /(?<!relay\s)\baccess\s+denied\b/i;
const IP_TOKEN = /(?:IPv6:)?([0-9a-f]*:[0-9a-f:.]*[0-9a-f]|\d{1,3}(?:\.\d{1,3}){3})/gi;

const RELAY_DENIED_TEXT = /relay(ing)?\s+(access\s+)?(denied|not\s+(permitted|allowed)|prohibited|refused|disallowed)|not\s+(permitted|allowed)\s+to\s+relay|unauthori[sz]ed\s+relay|(cannot|can't|do\s+not|don't|will\s+not|won't)\s+relay/i;

function at(phase: ReplyPhase, r: ReplyInfo): string {
  const name = phase === 'pre' ? 'command' : phase === 'dot' ? 'end of DATA' : phase.toUpperCase();
  return `${name} ${formatReplyInfo(r)}`;
}

/** True for a 530 / 5.7.10 / 5.7.11 reply that asks for STARTTLS first. */
export function isTlsRequired(r: ReplyInfo): boolean {
  if (r.enhanced === '5.7.10' || r.enhanced === '5.7.11') return true;
  return r.code === 530 && TLS_TEXT.test(r.text);
}

/** True for a reply that asks for AUTH first (530 5.7.0 "Authentication required", RFC 4954 section 6). */
export function isAuthRequired(r: ReplyInfo): boolean {
  if (isTlsRequired(r)) return false;
  if (r.code === 530) return true;
  return r.code >= 500 && r.code < 600 && AUTH_TEXT.test(r.text);
}

/** What the runner knows about the session a reply came from. */
export interface ReplyContext {
  /** The tester's own address(es) on this connection: a refusal naming one is about the tester. */
  readonly clientAddresses?: readonly string[];
  /** A submission port that offered AUTH: a non-DNSBL client rule is "authenticate first" there. */
  readonly submissionWithAuth?: boolean;
}

/** The addresses named in a reply text, canonical, leaving out the echoed paths (<...>). */
export function addressesInText(text: string): string[] {
  const out: string[] = [];
  for (const m of text.replace(/<[^>]*>/g, ' ').matchAll(IP_TOKEN)) {
    const ip = canonicalIp(m[1]!.toLowerCase());
    if (ip !== null && !out.includes(ip)) out.push(ip);
  }
  return out;
}

/**
 * Why a refusal is about the tester's own address: 'dnsbl' (a blocklist is named), 'client-rule' ("Client host
 * rejected", "your IP is blocked"), 'names-client' (the text names the address the tester connected from, e.g.
 * "Access denied for 192.0.2.9"), or null. Only for non-positive replies.
 */
export function clientBlockEvidence(r: ReplyInfo, clientAddresses: readonly string[] = []): 'dnsbl' | 'client-rule' | 'names-client' | null {
  if (r.code < 400) return null;
  if (DNSBL_TEXT.test(r.text)) return 'dnsbl';
  if (CLIENT_RULE_TEXT.test(r.text)) return 'client-rule';
  const mine = clientAddresses.map((a) => canonicalIp(a.toLowerCase())).filter((a): a is string => a !== null);
  if (mine.length > 0 && addressesInText(r.text).some((a) => mine.includes(a))) return 'names-client';
  if (ACCESS_DENIED_TEXT.test(r.text) && /\bclient\b/i.test(r.text)) return 'client-rule';
  return null;
}

/**
 * The outcome of one non-positive reply; null for a positive one (2xx, and 3xx where one is expected: 354 to
 * DATA, 334 during AUTH). A 421 is 'dropped': the server is closing the connection. A refusal about the tester's
 * own address is 'client-blocked' whatever the phase (see the header).
 */
export function classifyReply(r: ReplyInfo, phase: ReplyPhase, context: ReplyContext = {}): Outcome | null {
  if (r.code >= 200 && r.code < 400) return null;
  const detail = at(phase, r);
  const greylisted = r.code < 500 && GREYLIST_TEXT.test(r.text);
  const blocked = greylisted ? null : clientBlockEvidence(r, context.clientAddresses);
  if (blocked !== null) {
    const where = phase === 'greeting' ? `greeting ${formatReplyInfo(r)}` : detail;
    if (context.submissionWithAuth && blocked !== 'dnsbl' && phase !== 'greeting' && phase !== 'helo') {
      return { verdict: 'CLOSED', reason: 'auth-required', detail: `${where} (refuses unauthenticated clients; AUTH is offered)` };
    }
    const why = blocked === 'dnsbl' ? 'the tester\'s address is on a blocklist' : blocked === 'names-client' ? 'the refusal names the tester\'s address' : 'a rule about the client';
    return { verdict: 'INCONCLUSIVE', reason: 'client-blocked', detail: `${where} (${why})` };
  }
  if (phase === 'greeting') return { verdict: 'INCONCLUSIVE', reason: 'banner-refused', detail: `greeting ${formatReplyInfo(r)}` };
  if (r.code === 421) return { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: `${detail} (service closing)` };
  if (phase === 'helo') return { verdict: 'INCONCLUSIVE', reason: 'helo-refused', detail };
  if (isTlsRequired(r)) return { verdict: 'CLOSED', reason: 'tls-required', detail };
  if (isAuthRequired(r)) return { verdict: 'CLOSED', reason: 'auth-required', detail };
  if (r.code >= 500) return { verdict: 'CLOSED', reason: 'refused', detail };
  if (GREYLIST_TEXT.test(r.text)) return { verdict: 'INCONCLUSIVE', reason: 'greylisted', detail };
  if (RELAY_DENIED_TEXT.test(r.text)) return { verdict: 'CLOSED', reason: 'deferred', detail: `${detail} (temporary code, but relaying denied)` };
  return { verdict: 'INCONCLUSIVE', reason: 'deferred', detail };
}

/** What the SMTP client threw (SmtpClientError: code and phase), as an outcome. */
export function classifyError(err: { readonly code?: unknown; readonly phase?: unknown; readonly message?: unknown }): Outcome {
  const code = typeof err.code === 'string' ? err.code : '';
  const phase = typeof err.phase === 'string' ? err.phase : 'command';
  const message = typeof err.message === 'string' ? err.message : String(err);
  switch (code) {
    case 'ERR_SMTP_TIMEOUT': return { verdict: 'INCONCLUSIVE', reason: 'timeout', detail: `${message}` };
    case 'ERR_SMTP_TLS': return { verdict: 'INCONCLUSIVE', reason: 'tls-failed', detail: message };
    case 'ERR_SMTP_ABORTED': return { verdict: 'INCONCLUSIVE', reason: 'budget-exhausted', detail: message };
    case 'ERR_SMTP_CONNECTION':
      if (phase === 'connect') return { verdict: 'CLOSED', reason: 'no-service', detail: message };
      return { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: message };
    default: return { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: message };
  }
}

export interface AttemptReplies {
  readonly mail: ReplyInfo | null;
  /** RCPT replies in order (fewer than sent when the dialogue stopped early). */
  readonly rcpt: readonly ReplyInfo[];
  /** Reply to DATA/BDAT start or the refusal of DATA, proof mode only. */
  readonly data?: ReplyInfo | null;
  /** Reply to the end of data, proof mode only. */
  readonly dot?: ReplyInfo | null;
}

export interface AttemptOutcome extends Outcome {
  /** The probe recipient (the last RCPT) got 2xx. */
  readonly accepted: boolean;
  /** MAIL got 2xx (for the submission check: MAIL without AUTH). */
  readonly mailAccepted: boolean;
}

/**
 * One trick's replies → outcome, before any proof. A 'local' trick that is accepted is CLOSED 'local-accepted'
 * (it is not relaying); an accepted 'relay' trick is 'accepted-not-proved' until finalizeProof() says otherwise.
 */
export function classifyAttempt(replies: AttemptReplies, kind: 'relay' | 'local' | 'bounce', rcptCount: number, context: ReplyContext = {}): AttemptOutcome {
  const mailAccepted = replies.mail !== null && replies.mail.code >= 200 && replies.mail.code < 300;
  if (replies.mail === null) return { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: 'no reply to MAIL', accepted: false, mailAccepted };
  const refusedMail = classifyReply(replies.mail, 'mail', context);
  if (refusedMail) return { ...refusedMail, accepted: false, mailAccepted };
  const probe = replies.rcpt[rcptCount - 1];
  if (probe === undefined) return { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: 'no reply to RCPT', accepted: false, mailAccepted };
  const refusedRcpt = classifyReply(probe, 'rcpt', context);
  if (refusedRcpt) return { ...refusedRcpt, accepted: false, mailAccepted };
  if (kind === 'local') return { verdict: 'CLOSED', reason: 'local-accepted', detail: `RCPT ${formatReplyInfo(probe)}`, accepted: true, mailAccepted };
  if (replies.data) {
    const refusedData = classifyReply(replies.data, 'data', context);
    if (refusedData) return { ...refusedData, accepted: true, mailAccepted };
  }
  if (kind === 'bounce') {
    // Accepting mail for a local recipient is not relaying; only a bounce carrying it to the sender is (proof).
    const dot = replies.dot ? classifyReply(replies.dot, 'dot', context) : null;
    if (dot) return { ...dot, accepted: true, mailAccepted };
    const end = replies.dot ? `; end of DATA ${formatReplyInfo(replies.dot)}` : '';
    return { verdict: 'CLOSED', reason: 'local-accepted', detail: `RCPT ${formatReplyInfo(probe)}${end}: accepted for a local recipient from a stranger`, accepted: true, mailAccepted };
  }
  if (replies.dot) {
    const refusedDot = classifyReply(replies.dot, 'dot', context);
    if (refusedDot) return { ...refusedDot, accepted: true, mailAccepted };
    return { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: `RCPT ${formatReplyInfo(probe)}; end of DATA ${formatReplyInfo(replies.dot)}`, accepted: true, mailAccepted };
  }
  return { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: `RCPT ${formatReplyInfo(probe)}`, accepted: true, mailAccepted };
}

/** What the sink saw for one probe tag (see sink.ts). */
export interface ProofEvidence {
  /** The probe itself arrived (not only a bounce about it). */
  readonly arrived: boolean;
  /** A delivery status notification about the probe arrived. */
  readonly bounced: boolean;
  /** A delivery status notification arrived carrying the probe's body (its payload line): a bounce relay. */
  readonly bouncePayload?: boolean;
  readonly waitedMs: number;
}

/**
 * Proof mode. A relay trick whose probe arrived is OPEN 'proved'; any accepted trick (relay or bounce) whose
 * probe came back in a bounce with its body is OPEN 'bounce-relay' (the content reached the forged sender, a
 * third party). Otherwise a relay trick stays INCONCLUSIVE and a bounce trick stays CLOSED 'local-accepted', the
 * detail saying what came back (a headers-only bounce is backscatter, reported as a finding).
 */
export function finalizeProof(outcome: Outcome, evidence: ProofEvidence, kind: 'relay' | 'local' | 'bounce' = 'relay'): Outcome {
  const waited = `${Math.round(evidence.waitedMs / 1000)} s`;
  if (kind === 'bounce') {
    if (outcome.reason !== 'local-accepted') return outcome;
    if (evidence.bouncePayload) return { verdict: 'OPEN', reason: 'bounce-relay', detail: `${outcome.detail}; a bounce carrying the probe's body reached the forged sender (the sink)` };
    const why = evidence.bounced ? 'a bounce with the headers only came back (backscatter, no body)' : `no bounce came back within ${waited}`;
    return { ...outcome, detail: `${outcome.detail}; ${why}` };
  }
  if (outcome.reason !== 'accepted-not-proved' && outcome.reason !== 'accepts-all-recipients') return outcome;
  if (evidence.arrived) return { verdict: 'OPEN', reason: 'proved', detail: `${outcome.detail}; the probe arrived at the sink` };
  if (evidence.bouncePayload) return { verdict: 'OPEN', reason: 'bounce-relay', detail: `${outcome.detail}; the relay bounced the probe, body included, to its sender at the sink` };
  const why = evidence.bounced
    ? 'the relay accepted the probe and then bounced it (a DSN came back)'
    : `the probe did not arrive within ${waited}`;
  return { ...outcome, detail: `${outcome.detail}; ${why}` };
}

/** The control of one session: the local recipients tried before the battery, and whether one was accepted. */
export interface ControlCheck {
  readonly accepted: boolean;
  /** Each command tried (MAIL FROM or RCPT TO) with its reply, in order. */
  readonly tries: readonly { readonly command: string; readonly reply: ReplyInfo | null }[];
}

/**
 * A refusal only shows a closed relay when the same session accepted the control (mx ports). A CLOSED 'refused'
 * or 'deferred' outcome from a session whose control was refused becomes INCONCLUSIVE: 'client-blocked' when
 * the control's refusal was about the tester, else 'control-refused'. A null control (not run: submission
 * ports) and every other outcome pass unchanged.
 */
export function requireControl(outcome: Outcome, control: ControlCheck | null, context: ReplyContext = {}): Outcome {
  if (control === null || control.accepted) return outcome;
  if (outcome.verdict !== 'CLOSED' || (outcome.reason !== 'refused' && outcome.reason !== 'deferred')) return outcome;
  const last = [...control.tries].reverse().find((t) => t.reply !== null);
  const said = last ? `${last.command} got ${formatReplyInfo(last.reply!)}` : 'no reply';
  const blocked = last?.reply ? clientBlockEvidence(last.reply, context.clientAddresses) : null;
  return {
    verdict: 'INCONCLUSIVE',
    reason: blocked !== null ? 'client-blocked' : 'control-refused',
    detail: `${outcome.detail}; but the same session refused the local control too (${said})`,
  };
}

/**
 * Within one session's results: when any relay trick was accepted and the V21 control (an unknown user at the
 * target's own address literal) was accepted too, the accepted relay tricks become 'accepts-all-recipients'.
 */
export function markAcceptAll<T extends { readonly outcome: Outcome; readonly control: boolean; readonly accepted: boolean }>(results: readonly T[]): T[] {
  const controlAccepted = results.some((r) => r.control && r.accepted);
  if (!controlAccepted) return [...results];
  return results.map((r) => (r.outcome.reason === 'accepted-not-proved'
    ? { ...r, outcome: { ...r.outcome, reason: 'accepts-all-recipients' as const, detail: `${r.outcome.detail}; the server also accepted an unknown local user (V21)` } }
    : r));
}

export interface Aggregate extends Outcome {
  readonly verdict: Verdict;
  readonly counts: { readonly OPEN: number; readonly CLOSED: number; readonly INCONCLUSIVE: number; readonly 'N/A': number };
}

/** Combines outcomes (tricks of a transport, transports of a port, ports of a target, targets of a run). */
export function aggregate(outcomes: readonly Outcome[]): Aggregate {
  const counts = { OPEN: 0, CLOSED: 0, INCONCLUSIVE: 0, 'N/A': 0 };
  for (const o of outcomes) counts[o.verdict]++;
  const pick = (verdict: Verdict, priority: readonly Reason[]): Outcome | undefined => {
    const of = outcomes.filter((o) => o.verdict === verdict);
    if (of.length === 0) return undefined;
    if (verdict === 'CLOSED') {
      // the most frequent closing reason; ties by priority
      const freq = new Map<Reason, number>();
      for (const o of of) freq.set(o.reason, (freq.get(o.reason) ?? 0) + 1);
      const best = [...freq.entries()].sort((a, b) => b[1] - a[1] || rank(priority, a[0]) - rank(priority, b[0]))[0]![0];
      return of.find((o) => o.reason === best);
    }
    return [...of].sort((a, b) => rank(priority, a.reason) - rank(priority, b.reason))[0];
  };
  const open = pick('OPEN', ['proved', 'bounce-relay', 'article-read-back']);
  if (open) return { verdict: 'OPEN', reason: open.reason, detail: open.detail, counts };
  const inc = pick('INCONCLUSIVE', INCONCLUSIVE_PRIORITY);
  if (inc) return { verdict: 'INCONCLUSIVE', reason: inc.reason, detail: inc.detail, counts };
  const closed = pick('CLOSED', CLOSED_PRIORITY);
  if (closed) return { verdict: 'CLOSED', reason: closed.reason, detail: closed.detail, counts };
  return { verdict: 'INCONCLUSIVE', reason: 'not-tested', detail: 'nothing could be tested', counts };
}

function rank(priority: readonly Reason[], r: Reason): number {
  const i = priority.indexOf(r);
  return i < 0 ? priority.length : i;
}

/** Process exit code for a verdict: 0 closed, 1 open, 2 inconclusive. */
export function exitCodeFor(verdict: Verdict): 0 | 1 | 2 {
  return verdict === 'OPEN' ? 1 : verdict === 'INCONCLUSIVE' ? 2 : 0;
}
