/**
 * SMTP replies: a code, an enhanced status code (RFC 3463) and text, and the one formatter that puts them on
 * the wire. Texts must be single lines of printable ASCII; the formatter refuses anything else, so that no
 * caller can inject CR or LF into a reply.
 */

export interface Reply {
  /** Three-digit reply code (RFC 5321 section 4.2). */
  readonly code: number;
  /** Enhanced status code such as "5.7.1", or undefined for replies that carry none (220, 221 greeting lines). */
  readonly enhanced?: string | undefined;
  /** One line, or several for a multi-line reply. */
  readonly text: string | readonly string[];
}

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}$/;

export function reply(code: number, enhanced: string | undefined, text: string | readonly string[]): Reply {
  return { code, enhanced, text };
}

/** True for 4xx replies. */
export function isTemporary(r: Reply): boolean {
  return r.code >= 400 && r.code < 500;
}

/** True for 5xx replies. */
export function isPermanent(r: Reply): boolean {
  return r.code >= 500 && r.code < 600;
}

function sanitizeText(text: string): string {
  // Replace anything outside printable ASCII and SP/HT with '?': a reply never carries CR, LF or NUL.
  return text.replace(/[^\x20-\x7e\t]/g, '?');
}

/** Renders a reply as wire bytes: every line ends in CRLF, continuation lines use "code-". */
export function formatReply(r: Reply, options: { enhancedCodes?: boolean } = {}): string {
  if (!Number.isInteger(r.code) || r.code < 200 || r.code > 599) throw new RangeError(`Bad reply code ${r.code}`);
  const lines = typeof r.text === 'string' ? [r.text] : r.text.length === 0 ? [''] : r.text;
  const useEnhanced = (options.enhancedCodes ?? true) && r.enhanced !== undefined;
  if (useEnhanced && !ENHANCED.test(r.enhanced!)) throw new RangeError(`Bad enhanced status code "${r.enhanced}"`);
  let out = '';
  for (let i = 0; i < lines.length; i++) {
    const sep = i === lines.length - 1 ? ' ' : '-';
    const text = sanitizeText(lines[i]!);
    out += `${r.code}${sep}${useEnhanced ? `${r.enhanced} ` : ''}${text}\r\n`;
  }
  return out;
}

/** The first line of a reply as a log-friendly string ("554 5.7.1 Relay access denied"). */
export function replyToString(r: Reply): string {
  const first = typeof r.text === 'string' ? r.text : (r.text[0] ?? '');
  return `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''} ${first}`;
}
