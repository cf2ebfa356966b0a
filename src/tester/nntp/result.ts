/**
 * The open-NNTP check's result model: plain data, part of the tester's JSON report (field `nntp` of a run whose
 * `check` lists 'nntp'; docs/tester-json.md). No class instances, dates as ISO strings.
 */
import type { Counts } from '../result.ts';
import type { Reason, Verdict } from '../verdict.ts';
import type { NntpTlsFacts, NntpTranscriptLine } from './client.ts';

/** 'nntp' (plain, port 119) or 'nntps' (implicit TLS, port 563). */
export type NntpRole = 'nntp' | 'nntps';

export interface NntpPortSpec {
  readonly port: number;
  readonly role: NntpRole;
}

export interface NntpReply {
  readonly code: number;
  readonly text: string;
}

/** What kind of server answered: from CAPABILITIES (READER, IHAVE, MODE-READER) and the replies. */
export type NntpServerKind = 'reader' | 'transit' | 'reader+transit' | 'unknown';

/** One question asked of the server (POST without AUTHINFO, IHAVE from a stranger), with its verdict. */
export interface NntpStep {
  readonly verdict: Verdict | 'N/A';
  readonly reason: Reason;
  readonly detail: string;
  /** The reply to the command (POST: 340 / 440 / 480 / 502; IHAVE: 335 / 435 / 436 / 480 / 502). */
  readonly reply: NntpReply | null;
}

/** LIST ACTIVE, counted (never stored whole: the list is the server's to make endless). */
export interface NntpGroups {
  readonly reply: NntpReply | null;
  /** Groups read. */
  readonly listed: number;
  /** False when the list hit the line/byte cap or the deadline before its end. */
  readonly complete: boolean;
  /** Flag y: posting allowed. */
  readonly posting: number;
  /** Flag m: moderated. */
  readonly moderated: number;
  /** Flag n: no local posting. */
  readonly noPosting: number;
  /** Other flags (j, x, =alias) and malformed lines. */
  readonly other: number;
  /** The first postable (y) groups, at most 20. */
  readonly postable: readonly string[];
  /** The named proof group's flag, when it was listed. */
  readonly proofGroupFlag: string | null;
}

/** Proof mode: the tagged article sent through one path (POST or IHAVE) and what became of it. */
export interface NntpProof {
  readonly path: 'POST' | 'IHAVE';
  readonly group: string;
  readonly tag: string;
  readonly messageId: string;
  /** The reply to the command (340/335) and to the article (240/235, or 441/437/436). */
  readonly command: NntpReply | null;
  readonly posted: NntpReply | null;
  /** ARTICLE <message-id> returned the article with the tag in its body. */
  readonly articleReadBack: boolean;
  /** HEAD <message-id> returned its headers. */
  readonly headReadBack: boolean;
  /** GROUP then STAT/LAST found the message-id among the group's articles (its number, when found). */
  readonly inGroup: boolean;
  readonly articleNumber: number | null;
  /** ms from the end of the article to the first successful read-back. */
  readonly latencyMs: number | null;
  readonly waitedMs: number;
  /** Path header of the article as read back (who the server says injected it). */
  readonly pathHeader: string | null;
  /** Injection-Info / NNTP-Posting-Host as read back: where the server saw the post come from. */
  readonly injectionInfo: string | null;
  readonly cancel: NntpCancel | null;
}

export interface NntpCancel {
  readonly messageId: string;
  /** The reply to POST and to the cancel control article. */
  readonly command: NntpReply | null;
  readonly posted: NntpReply | null;
  /** ARTICLE <message-id> of the test article answered 430 afterwards. */
  readonly removed: boolean;
}

export interface NntpPortResult {
  readonly port: number;
  readonly role: NntpRole;
  readonly verdict: Verdict;
  readonly reason: Reason;
  readonly detail: string;
  readonly counts: Counts;
  readonly greeting: NntpReply | null;
  /** The greeting said 200 (posting allowed) / 201 (no posting); null without a greeting. */
  readonly greetingPostingAllowed: boolean | null;
  readonly greetingMs: number | null;
  readonly kind: NntpServerKind;
  /** CAPABILITIES before MODE READER (empty when the command is not supported). */
  readonly capabilities: readonly string[];
  readonly modeReader: NntpReply | null;
  /** CAPABILITIES after MODE READER (null when MODE READER was not sent or changed nothing). */
  readonly readerCapabilities: readonly string[] | null;
  /** The server offers AUTHINFO (USER or SASL). */
  readonly authinfoOffered: boolean;
  readonly tls: NntpTlsFacts | null;
  readonly groups: NntpGroups | null;
  /** POST without AUTHINFO. */
  readonly post: NntpStep;
  /** IHAVE <random message-id> from a stranger. */
  readonly ihave: NntpStep;
  readonly proofs: readonly NntpProof[];
  /** The tester's local address on the first connection. */
  readonly localAddress: string | null;
  readonly connections: number;
  readonly durationMs: number;
  readonly transcripts: readonly { readonly connection: number; readonly lines: readonly NntpTranscriptLine[] }[] | null;
}

export interface NntpTargetResult {
  readonly input: string;
  readonly address: string;
  readonly family: 4 | 6;
  readonly verdict: Verdict;
  readonly reason: Reason;
  readonly detail: string;
  readonly counts: Counts;
  readonly ports: readonly NntpPortResult[];
  readonly startedAt: string;
  readonly durationMs: number;
}

/** The `nntp` section of a run. */
export interface NntpRunSection {
  readonly mode: 'safe' | 'prove';
  /** Proof mode: the group the admin named. */
  readonly group: string | null;
  readonly targets: readonly NntpTargetResult[];
}
