/**
 * The engine's own refusals, logged the way Postfix logs `NOQUEUE: reject`: one `command refused` event per
 * refused command (or refused connection), with the reply, the client, the HELO name, the sender and the
 * recipient where known, and a stable reason code. Refusals decided by the SessionHandler (relay decisions, AUTH
 * outcomes, sender checks) are logged by the handler, never here.
 *
 * Fields, in this order (a field the engine does not know is null, or left out where noted):
 *   client_ip   the client's address (the PROXY source when proxied); always first, before any client-chosen text
 *   session_id  null for a connection refused before its session started
 *   listener    the listener's name
 *   helo        the HELO/EHLO name accepted so far (null before one)
 *   mail_from   the transaction's sender as <path>; for a refused MAIL, the sender it tried when it parsed
 *   rcpt        only for RCPT: the recipient it tried as <path> when it parsed
 *   command     the verb (MAIL, RCPT, ...), "UNKNOWN" for an unrecognized one, null for a refusal that is not
 *               about a command (a timeout, the error limit, a refused connection)
 *   excerpt     only when the argument of HELO/EHLO/MAIL/RCPT did not parse: its first 64 characters ("..." when cut).
 *               Never for AUTH or unknown commands (a misplaced AUTH exchange sends credentials as commands)
 *   after       only for session-level refusals: the last command seen (Postfix's "timeout after RCPT")
 *   reply       the reply's first line, "code enhanced text" (like `relay decision`)
 *   reason      see RefusalReason
 */
import type { Logger, LogFields } from '../core/log.ts';
import { replyToString, type Reply } from '../core/reply.ts';

/** The log event's message. */
export const COMMAND_REFUSED = 'command refused';

/**
 * Stable short codes for why the engine refused:
 * - syntax: a command or its argument, address or parameter does not parse (501, 555, 521 BDAT syntax)
 * - smtputf8: a non-ASCII address without SMTPUTF8 (553 5.6.7)
 * - size: SIZE, DATA or BDAT over the message size limit (552 5.3.4)
 * - bare-lf, bare-cr, nul, utf8: a command or message with a bare LF / bare CR / NUL, a command not UTF-8
 * - hops: too many Received: headers (554 5.4.0)
 * - pipelining: input before the reply to a command that ends a group (554 5.5.0)
 * - pregreet: input before the greeting (554 5.5.0)
 * - sequence: a command out of order (503, DATA without recipients, AUTH twice, BDAT after an error)
 * - unknown-command, not-implemented (VRFY, EXPN, ETRN, TURN), not-smtp (HTTP verbs, header lines)
 * - line-too-long: a command or AUTH line over the limit
 * - limit: too many recipients (452), errors (421) or connections (421)
 * - timeout: idle, data or session timeout (421 4.4.2; logged at info)
 * - tls: STARTTLS refused, TLS required first, TLS bytes on a plaintext port
 * - auth: AUTH not available, bad mechanism, aborted, malformed credentials, XCLIENT/XFORWARD refused
 * - proxy: a PROXY header refused or PROXY sent as a command
 * - protocol: any other refusal (should not happen: every engine reply has its own code)
 */
export type RefusalReason =
  | 'syntax' | 'smtputf8' | 'size' | 'bare-lf' | 'bare-cr' | 'nul' | 'utf8' | 'hops' | 'pipelining' | 'pregreet'
  | 'sequence' | 'unknown-command' | 'not-implemented' | 'not-smtp' | 'line-too-long' | 'limit' | 'timeout' | 'tls'
  | 'auth' | 'proxy' | 'protocol';

export interface Refusal {
  readonly clientIp: string;
  readonly sessionId: string | null;
  readonly listener: string;
  readonly helo: string | null;
  readonly mailFrom: string | null;
  /** Only for RCPT (undefined: the field is left out). */
  readonly rcpt?: string | null;
  readonly command: string | null;
  readonly excerpt?: string;
  readonly after?: string | null;
  readonly reply: Reply;
  readonly reason: RefusalReason;
}

/** Writes the `command refused` event: warn, info for timeouts. */
export function logRefusal(logger: Logger, r: Refusal): void {
  const fields: LogFields = {
    client_ip: r.clientIp,
    session_id: r.sessionId,
    listener: r.listener,
    helo: r.helo,
    mail_from: r.mailFrom,
  };
  if (r.rcpt !== undefined) fields['rcpt'] = r.rcpt;
  fields['command'] = r.command;
  if (r.excerpt !== undefined) fields['excerpt'] = r.excerpt;
  if (r.after !== undefined) fields['after'] = r.after;
  fields['reply'] = replyToString(r.reply);
  fields['reason'] = r.reason;
  if (r.reason === 'timeout') logger.info(COMMAND_REFUSED, fields);
  else logger.warn(COMMAND_REFUSED, fields);
}

/** At most `max` UTF-16 units of s (never half a surrogate pair), with "..." when cut. Escaping is the logger's. */
export function excerpt(s: string, max = 64): string {
  if (s.length <= max) return s;
  let end = max;
  const c = s.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  return `${s.slice(0, end)}...`;
}
