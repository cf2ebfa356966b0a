/**
 * Open-NNTP verdicts: pure functions from NNTP replies (or client errors) to OPEN / CLOSED / INCONCLUSIVE with a
 * reason (the tester's Reason vocabulary, verdict.ts). No I/O.
 *
 * - OPEN only with proof: the tester's tagged article, posted without AUTHINFO (or offered with IHAVE), was read
 *   back from the server with ARTICLE <message-id> ('article-read-back'). A 340 to POST or a 335 to IHAVE is the
 *   server's word only: INCONCLUSIVE 'accepted-not-proved' (safe mode never sends an article). A 240/235 after the
 *   article that never shows up is INCONCLUSIVE 'not-read-back' (a lie, a moderation queue, or a slow spool).
 * - CLOSED: 440 posting not permitted ('posting-not-permitted'), 480 authentication required ('auth-required'),
 *   483 TLS required ('tls-required'), 502 and 435 and an unknown command ('refused'); a greeting of 502 (access
 *   denied to this client) is CLOSED 'refused' too: NNTP servers restrict by client address, and the tester is a
 *   stranger. A failed connection is CLOSED 'no-service'. An article refused (441/437) after the server offered to
 *   take it (340/335) stays INCONCLUSIVE 'accepted-not-proved': the named group may be missing or filtered.
 * - INCONCLUSIVE: 400 greeting ('banner-refused'), other 4xx ('deferred'), timeouts and tarpits ('timeout'),
 *   dropped connections ('dropped'), replies that are not NNTP or never end ('malformed-reply'), TLS failures, the
 *   budget running out.
 */
import { NntpError } from './client.ts';
import type { NntpReply, NntpStep } from './result.ts';
import type { Outcome } from '../verdict.ts';

function fmt(r: NntpReply): string {
  return `${r.code}${r.text ? ` ${r.text}` : ''}`.slice(0, 200);
}

/** The greeting: null when it allows a session (200/201), else the outcome of the port. */
export function classifyGreeting(r: NntpReply): Outcome | null {
  if (r.code === 200 || r.code === 201) return null;
  if (r.code === 502) return { verdict: 'CLOSED', reason: 'refused', detail: `greeting ${fmt(r)}: service refused to this client` };
  if (r.code === 400 || (r.code >= 400 && r.code < 500)) return { verdict: 'INCONCLUSIVE', reason: 'banner-refused', detail: `greeting ${fmt(r)}: service temporarily unavailable` };
  return { verdict: 'INCONCLUSIVE', reason: 'malformed-reply', detail: `greeting ${fmt(r)}: not an NNTP greeting (200/201)` };
}

function common(what: string, r: NntpReply): Outcome | null {
  if (r.code === 480) return { verdict: 'CLOSED', reason: 'auth-required', detail: `${what} ${fmt(r)}: authentication required` };
  if (r.code === 483) return { verdict: 'CLOSED', reason: 'tls-required', detail: `${what} ${fmt(r)}: a secure connection is required first` };
  if (r.code === 502) return { verdict: 'CLOSED', reason: 'refused', detail: `${what} ${fmt(r)}: refused` };
  if (r.code === 500 || r.code === 501) return { verdict: 'CLOSED', reason: 'refused', detail: `${what} ${fmt(r)}: command not supported` };
  if (r.code >= 500) return { verdict: 'CLOSED', reason: 'refused', detail: `${what} ${fmt(r)}` };
  return null;
}

/** POST without AUTHINFO, before any article is sent. */
export function classifyPost(r: NntpReply): Outcome {
  if (r.code === 340) return { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: `POST ${fmt(r)}: would take an article from a stranger without AUTHINFO (none sent)` };
  if (r.code === 440) return { verdict: 'CLOSED', reason: 'posting-not-permitted', detail: `POST ${fmt(r)}: posting not permitted` };
  const c = common('POST', r);
  if (c) return c;
  if (r.code >= 400) return { verdict: 'INCONCLUSIVE', reason: 'deferred', detail: `POST ${fmt(r)}: temporary failure` };
  return { verdict: 'INCONCLUSIVE', reason: 'malformed-reply', detail: `POST ${fmt(r)}: unexpected reply` };
}

/** IHAVE <new message-id> from a stranger, before any article is sent. */
export function classifyIhave(r: NntpReply): Outcome {
  if (r.code === 335) return { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: `IHAVE ${fmt(r)}: would take a transit article from a stranger (none sent)` };
  if (r.code === 435) return { verdict: 'CLOSED', reason: 'refused', detail: `IHAVE ${fmt(r)}: article not wanted` };
  if (r.code === 436) return { verdict: 'INCONCLUSIVE', reason: 'deferred', detail: `IHAVE ${fmt(r)}: transfer not possible now` };
  const c = common('IHAVE', r);
  if (c) return c;
  if (r.code >= 400) return { verdict: 'INCONCLUSIVE', reason: 'deferred', detail: `IHAVE ${fmt(r)}: temporary failure` };
  return { verdict: 'INCONCLUSIVE', reason: 'malformed-reply', detail: `IHAVE ${fmt(r)}: unexpected reply` };
}

/** The reply to the article itself (proof mode): 240/235 still needs the read-back. */
export function classifyPosted(path: 'POST' | 'IHAVE', r: NntpReply): Outcome | null {
  if ((path === 'POST' && r.code === 240) || (path === 'IHAVE' && r.code === 235)) return null;
  // the command was accepted (340/335) and then this article refused: the group may not exist or a filter took it;
  // the server still takes articles from strangers, so this is not CLOSED
  if (r.code === 441 || r.code === 437) return { verdict: 'INCONCLUSIVE', reason: 'accepted-not-proved', detail: `${path} article ${fmt(r)}: the test article was rejected after the server offered to take it (check the group)` };
  if (r.code === 436) return { verdict: 'INCONCLUSIVE', reason: 'deferred', detail: `${path} article ${fmt(r)}: try again later` };
  const c = common(`${path} article`, r);
  if (c) return c;
  return { verdict: 'INCONCLUSIVE', reason: r.code >= 400 ? 'deferred' : 'malformed-reply', detail: `${path} article ${fmt(r)}: unexpected reply` };
}

/** After 240/235: read back or not. */
export function classifyReadBack(path: 'POST' | 'IHAVE', posted: NntpReply, readBack: boolean, group: string, waitedMs: number): Outcome {
  if (readBack) return { verdict: 'OPEN', reason: 'article-read-back', detail: `${path} without AUTHINFO: the tagged test article was accepted (${fmt(posted)}) and read back from ${group}` };
  return { verdict: 'INCONCLUSIVE', reason: 'not-read-back', detail: `${path} article ${fmt(posted)}, but it could not be read back within ${Math.round(waitedMs / 1000)} s` };
}

/** A client error at some point of the dialogue. */
export function classifyNntpError(what: string, err: unknown): Outcome {
  if (err instanceof NntpError) {
    switch (err.code) {
      case 'ERR_NNTP_TIMEOUT': return { verdict: 'INCONCLUSIVE', reason: 'timeout', detail: `${what}: ${err.message} (tarpit or dead server)` };
      case 'ERR_NNTP_CONNECTION': return { verdict: 'INCONCLUSIVE', reason: 'dropped', detail: `${what}: ${err.message}` };
      case 'ERR_NNTP_PROTOCOL': return { verdict: 'INCONCLUSIVE', reason: 'malformed-reply', detail: `${what}: ${err.message}` };
      case 'ERR_NNTP_TLS': return { verdict: 'INCONCLUSIVE', reason: 'tls-failed', detail: `${what}: ${err.message}` };
      case 'ERR_NNTP_ABORTED': return { verdict: 'INCONCLUSIVE', reason: 'budget-exhausted', detail: `${what}: ${err.message}` };
    }
  }
  return { verdict: 'INCONCLUSIVE', reason: 'not-tested', detail: `${what}: ${err instanceof Error ? err.message : String(err)}` };
}

export function step(o: Outcome, reply: NntpReply | null): NntpStep {
  return { verdict: o.verdict, reason: o.reason, detail: o.detail, reply };
}
