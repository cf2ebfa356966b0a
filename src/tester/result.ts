/**
 * The tester's result model. It is also the JSON output (schema "relayguard-tester/2", docs/tester-json.md):
 * plain data, dates as ISO strings, no class instances, so JSON.stringify(result) is the document.
 * Version 2 (issue 13) adds the checks: `checks` on the run, `check` on every target entry ('smtp' in `targets`,
 * 'proxy' in `proxies`, the open-proxy battery's results, src/tester/proxy/result.ts).
 */
import type { PortRole, Transport } from './target.ts';
import type { TrickKind } from './probes.ts';
import type { ControlCheck, Reason, ReplyInfo, Verdict } from './verdict.ts';
import type { NntpRunSection } from './nntp/result.ts';
import type { ProxyTargetResult } from './proxy/result.ts';

export const SCHEMA = 'relayguard-tester/2';

/** What a run tests: open SMTP relaying (the relay battery), open proxies, open Usenet (NNTP) servers. */
export type Check = 'smtp' | 'proxy' | 'nntp';
export const CHECKS: readonly Check[] = ['smtp', 'proxy', 'nntp'];

export interface Counts {
  readonly OPEN: number;
  readonly CLOSED: number;
  readonly INCONCLUSIVE: number;
  readonly 'N/A': number;
}

export interface ProofResult {
  readonly tag: string;
  /** The probe reached the sink. */
  readonly arrived: boolean;
  /** A DSN about the probe reached the sink (for a bounce trick: anything sent back to its tagged sender). */
  readonly bounced: boolean;
  /** A DSN reached the sink carrying the probe's body (its payload line): the content was bounced to a third party. */
  readonly bouncePayload: boolean;
  /** The address that delivered that DSN to the sink. */
  readonly bounceFrom: string | null;
  /** How long the tester waited for it, ms. */
  readonly waitedMs: number;
  /** ms from the end of DATA to its arrival, when it arrived. */
  readonly latencyMs: number | null;
  /** The address that delivered it to the sink. */
  readonly deliveredBy: string | null;
  /** Received header fields of the arrived probe, newest first. */
  readonly received: readonly string[];
  /** The client address the relay wrote into its Received header: what it thought the tester was. */
  readonly relaySawClient: string | null;
  /** The local address the tester sent the probe from. */
  readonly sentFrom: string | null;
}

export interface TrickResult {
  readonly id: string;
  readonly title: string;
  readonly kind: TrickKind;
  /** 'N/A' when the trick could not apply (needs an extension or a name the target lacks). */
  readonly verdict: Verdict | 'N/A';
  readonly reason: Reason;
  readonly detail: string;
  /** MAIL FROM argument as sent (path and parameters). */
  readonly mailFrom: string | null;
  /** RCPT TO arguments as sent. */
  readonly rcptTo: readonly string[];
  readonly replies: {
    readonly mail: ReplyInfo | null;
    readonly rcpt: readonly ReplyInfo[];
    readonly data: ReplyInfo | null;
    readonly dot: ReplyInfo | null;
  };
  /** The probe recipient got 2xx. */
  readonly accepted: boolean;
  /** Tries (2 when the first was cut by a dropped connection). */
  readonly attempts: number;
  /** Index of the connection (in this transport) of the last try; -1 when not run. */
  readonly connection: number;
  readonly ms: number;
  /** Proof mode: the tagged probe sent for this accepted trick. */
  readonly proof: ProofResult | null;
}

export interface CertificateFacts {
  readonly subject: string;
  readonly issuer: string;
  readonly validFrom: string;
  readonly validTo: string;
  readonly subjectAltNames: readonly string[];
  readonly fingerprint256: string;
  readonly selfSigned: boolean;
  readonly expired: boolean;
  /** The certificate names the target host name (null when no host name is known). */
  readonly matchesHostName: boolean | null;
}

export interface TlsFacts {
  readonly protocol: string | null;
  readonly cipher: string;
  /** Chain verified against the system CAs and the name matched. */
  readonly authorized: boolean;
  readonly authorizationError: string | null;
  readonly certificate: CertificateFacts | null;
}

export interface SessionFacts {
  /** The greeting as received. */
  readonly banner: ReplyInfo | null;
  readonly connectMs: number | null;
  readonly greetingMs: number | null;
  /** 'EHLO', or 'HELO' after the fallback (EHLO refused). */
  readonly hello: 'EHLO' | 'HELO' | null;
  /** EHLO keywords with parameters ("SIZE 10240000"); after STARTTLS for the starttls transport. */
  readonly capabilities: readonly string[];
  readonly authMechanisms: readonly string[];
  readonly starttlsOffered: boolean;
  readonly tls: TlsFacts | null;
  /** The tester's own address on the first connection (what the server saw, unless something is in between). */
  readonly localAddress: string | null;
}

export interface TransportResult {
  readonly transport: Transport;
  readonly verdict: Verdict | 'N/A';
  readonly reason: Reason;
  readonly detail: string;
  readonly counts: Counts;
  readonly session: SessionFacts;
  readonly connections: number;
  readonly durationMs: number;
  readonly tricks: readonly TrickResult[];
  /**
   * mx ports: the first session's control (MAIL FROM the tester, then local recipients such as postmaster@D until
   * one is accepted). Every session runs one; a refusal is CLOSED only in a session whose control was accepted.
   */
  readonly control: ControlCheck | null;
  /** Full dialogues with timings (only with --transcript). */
  readonly transcripts: readonly ConnectionTranscript[] | null;
}

export interface ConnectionTranscript {
  readonly connection: number;
  readonly localAddress: string | null;
  readonly localPort: number | null;
  /** ISO time the connection started. */
  readonly startedAt: string;
  /** t: ms since the connection started; dir: C (client) or S (server). */
  readonly lines: readonly { readonly t: number; readonly dir: 'C' | 'S'; readonly line: string }[];
}

export type FindingSeverity = 'error' | 'warning' | 'info';

export interface Finding {
  /** Stable id ("submission-mail-without-auth", "auth-without-tls", "vrfy-exposed", ...). */
  readonly id: string;
  readonly severity: FindingSeverity;
  /** The port it concerns, or null for the whole target. */
  readonly port: number | null;
  /** True when the expectation holds (an "ok" line), false when it is violated. */
  readonly ok: boolean;
  readonly message: string;
  /** What to change (with the Postfix and Exim settings where one applies), or null when nothing is to be done. */
  readonly remediation: string | null;
}

/** The target's mail domain and where it came from. */
export interface MailDomain {
  readonly name: string;
  /**
   * 'option': given (--domain); 'target': the target was this mail domain (its MX records); 'guessed-from-banner'
   * / 'guessed-from-host-name': the host name minus its first label, which may well not be a domain the server
   * serves (checks that depend on it are reported as uncertain).
   */
  readonly source: 'option' | 'target' | 'guessed-from-banner' | 'guessed-from-host-name';
}

export interface ProbeReply {
  readonly command: string;
  readonly reply: ReplyInfo | null;
}

export interface PortResult {
  readonly port: number;
  readonly role: PortRole;
  readonly verdict: Verdict;
  readonly reason: Reason;
  readonly detail: string;
  readonly counts: Counts;
  readonly transports: readonly TransportResult[];
  /** VRFY postmaster, EXPN postmaster (first session of the port). */
  readonly vrfy: ProbeReply | null;
  readonly expn: ProbeReply | null;
  /** mx role: RCPT to postmaster at the target's own domain (must be accepted). */
  readonly localDelivery: ProbeReply | null;
  readonly findings: readonly Finding[];
}

export interface TargetResult {
  /** Schema 2: which check produced this entry (always 'smtp' in `targets`). */
  readonly check: 'smtp';
  readonly input: string;
  readonly address: string;
  readonly family: 4 | 6;
  readonly hostName: string | null;
  readonly domain: string | null;
  readonly mx: { readonly exchange: string; readonly priority: number } | null;
  /** The mail domain the tricks and the control used, and where it came from (null: none known). */
  readonly mailDomain: MailDomain | null;
  /** The source address the tester bound (--source-address), or null for the system's choice. */
  readonly sourceAddress: string | null;
  readonly verdict: Verdict;
  readonly reason: Reason;
  readonly detail: string;
  readonly counts: Counts;
  readonly ports: readonly PortResult[];
  readonly findings: readonly Finding[];
  readonly startedAt: string;
  readonly durationMs: number;
}

export interface RunResult {
  readonly schema: typeof SCHEMA;
  readonly tool: { readonly name: 'relayguard'; readonly version: string };
  readonly mode: 'safe' | 'prove';
  /** Schema 2: the checks run, in order ('smtp' fills `targets`, 'proxy' fills `proxies`, 'nntp' fills `nntp`). */
  readonly checks: readonly Check[];
  readonly runId: string;
  readonly testerDomain: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly verdict: Verdict;
  readonly reason: Reason;
  readonly detail: string;
  readonly exitCode: 0 | 1 | 2 | 3;
  /** SMTP results (the smtp check); empty when smtp was not among the checks. */
  readonly targets: readonly TargetResult[];
  /** Schema 2: the open-proxy battery's results, one per address (empty unless checks includes 'proxy'). */
  readonly proxies: readonly ProxyTargetResult[];
  /** Targets that could not be tested at all (unresolvable names), with why. */
  readonly errors: readonly { readonly input: string; readonly error: string }[];
  /** The nntp check (open Usenet servers), when `checks` lists it. */
  readonly nntp?: NntpRunSection;
}
