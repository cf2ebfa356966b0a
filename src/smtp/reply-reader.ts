/**
 * Reply framing for the SMTP client (RFC 5321 section 4.2): "ddd-text" continuation lines and a "ddd text" (or
 * bare "ddd") last line, every line carrying the same code. Strict and bounded, because the peer is untrusted
 * (OB-06, CVE-2020-8794): a line longer than maxLineLength, more than maxLines lines, a NUL, a code that is not
 * three digits followed by SP, "-" or the end of the line, or a changed code is an SmtpProtocolError. Memory
 * is bounded by maxLineLength * maxLines plus one input chunk.
 *
 * Line endings: CRLF, and (leniently, like Postfix's smtp_get and nodemailer) a bare LF. A CR anywhere else in
 * a line is an error. Text is decoded as UTF-8 (RFC 6531 allows UTF-8 replies); invalid sequences become U+FFFD.
 * The reader also defines the client's error base class and phase vocabulary, shared with client.ts.
 */
import { RelayguardError } from '../core/errors.ts';

/** What the client was doing when something went wrong; delivery turns it into "while sending message body". */
export type SmtpPhase =
  | 'connect' | 'tls' | 'greeting' | 'ehlo' | 'helo' | 'starttls' | 'auth' | 'mail' | 'rcpt' | 'data' | 'dot'
  | 'bdat' | 'rset' | 'noop' | 'vrfy' | 'expn' | 'quit' | 'command';

/** One reply from the server. */
export interface SmtpReply {
  /** The three-digit code (200-599). */
  readonly code: number;
  /** The RFC 3463 enhanced status code of the first line ("5.7.1"), when it has one whose class matches code. */
  readonly enhanced: string | null;
  /** The text of every line, without the code and separator (enhanced code, if any, kept). */
  readonly lines: readonly string[];
}

/** Base class of every error the SMTP client throws: a stable code plus the phase it happened in. */
export class SmtpClientError extends RelayguardError {
  readonly phase: SmtpPhase;
  constructor(code: string, message: string, options: { phase: SmtpPhase; cause?: unknown }) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SmtpClientError';
    this.phase = options.phase;
  }
}

/** The server broke the reply syntax or a bound (ERR_SMTP_PROTOCOL). */
export class SmtpProtocolError extends SmtpClientError {
  constructor(message: string, options: { phase: SmtpPhase; cause?: unknown }) {
    super('ERR_SMTP_PROTOCOL', message, options);
    this.name = 'SmtpProtocolError';
  }
}

export interface ReplyReaderOptions {
  /** Longest reply line accepted, octets including the line ending. Default 2048 (RFC 5321 minimum is 512). */
  maxLineLength?: number;
  /** Most lines in one reply. Default 200. */
  maxLines?: number;
  /** Called with every complete line (and a prefix of a rejected one), for transcripts. */
  onLine?: (line: string) => void;
}

const UTF8 = new TextDecoder('utf-8');
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)/;
const EMPTY = Buffer.alloc(0);
/** Longest prefix of a bad line shown in errors and transcripts. */
const SHOW = 80;

export class ReplyReader {
  readonly maxLineLength: number;
  readonly maxLines: number;
  readonly #onLine: ((line: string) => void) | undefined;
  #buf: Buffer = EMPTY;
  /** Lines of the reply being assembled. */
  #lines: string[] = [];
  #code = 0;

  constructor(options: ReplyReaderOptions = {}) {
    this.maxLineLength = options.maxLineLength ?? 2048;
    this.maxLines = options.maxLines ?? 200;
    this.#onLine = options.onLine;
    if (!(this.maxLineLength >= 6)) throw new RangeError(`maxLineLength must be at least 6, got ${this.maxLineLength}`);
    if (!(this.maxLines >= 1)) throw new RangeError(`maxLines must be at least 1, got ${this.maxLines}`);
  }

  /** Bytes received but not yet consumed (a partial line, or replies after the one last returned). */
  get buffered(): number { return this.#buf.length; }

  /** True while part of a reply (a partial line, or continuation lines) has been read but not the end. */
  get partial(): boolean { return this.#buf.length > 0 || this.#lines.length > 0; }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
  }

  /** Forgets everything buffered and any partial reply; returns the number of bytes dropped (STARTTLS, TLS-12). */
  discard(): number {
    const n = this.#buf.length;
    this.#buf = EMPTY;
    this.#lines = [];
    this.#code = 0;
    return n;
  }

  /**
   * The next complete reply, or null when more input is needed. Throws SmtpProtocolError (with the given
   * phase) on a syntax error or a bound; the reader is unusable afterwards.
   */
  next(phase: SmtpPhase = 'command'): SmtpReply | null {
    for (;;) {
      const lf = this.#buf.indexOf(0x0a);
      if (lf < 0) {
        if (this.#buf.length >= this.maxLineLength) this.#fail(phase, `Reply line longer than ${this.maxLineLength} octets`, this.#buf);
        return null;
      }
      if (lf + 1 > this.maxLineLength) this.#fail(phase, `Reply line longer than ${this.maxLineLength} octets`, this.#buf.subarray(0, lf));
      const end = lf > 0 && this.#buf[lf - 1] === 0x0d ? lf - 1 : lf;
      const raw = this.#buf.subarray(0, end);
      // Copy the rest so a finished reply never pins a large chunk.
      this.#buf = lf + 1 === this.#buf.length ? EMPTY : Buffer.from(this.#buf.subarray(lf + 1));
      const done = this.#line(raw, phase);
      if (done) return done;
    }
  }

  #line(raw: Buffer, phase: SmtpPhase): SmtpReply | null {
    if (raw.indexOf(0x00) >= 0) this.#fail(phase, 'NUL byte in reply', raw);
    if (raw.indexOf(0x0d) >= 0) this.#fail(phase, 'Bare CR in reply', raw);
    const d0 = raw[0], d1 = raw[1], d2 = raw[2], sep = raw[3];
    if (raw.length < 3 || d0 === undefined || d1 === undefined || d2 === undefined || d0 < 0x32 || d0 > 0x35 || !isDigit(d1) || !isDigit(d2)) {
      this.#fail(phase, 'Malformed reply code', raw);
    }
    if (sep !== undefined && sep !== 0x20 && sep !== 0x2d) this.#fail(phase, 'Malformed reply code', raw);
    const code = (d0 - 0x30) * 100 + (d1 - 0x30) * 10 + (d2 - 0x30);
    if (this.#lines.length > 0 && code !== this.#code) this.#fail(phase, `Reply code changed from ${this.#code} to ${code} within a multi-line reply`, raw);
    if (this.#lines.length >= this.maxLines) this.#fail(phase, `Reply has more than ${this.maxLines} lines`, raw);
    const text = raw.length > 4 ? UTF8.decode(raw.subarray(4)) : '';
    this.#onLine?.(raw.length > 4 ? `${raw.subarray(0, 4).toString('latin1')}${text}` : raw.toString('latin1'));
    this.#code = code;
    this.#lines.push(text);
    if (sep === 0x2d) return null;
    const lines = this.#lines;
    this.#lines = [];
    this.#code = 0;
    return { code, enhanced: enhancedOf(code, lines[0]!), lines };
  }

  #fail(phase: SmtpPhase, message: string, raw: Buffer): never {
    const shown = raw.subarray(0, SHOW).toString('latin1').replace(/[^\x20-\x7e]/g, '?');
    this.#onLine?.(shown + (raw.length > SHOW ? '...' : ''));
    this.#buf = EMPTY;
    this.#lines = [];
    throw new SmtpProtocolError(`${message}: "${shown}${raw.length > SHOW ? '...' : ''}"`, { phase });
  }
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** The enhanced status code at the start of text, if its class matches the reply code (RFC 3463 section 2). */
export function enhancedOf(code: number, text: string): string | null {
  const m = ENHANCED.exec(text);
  if (!m || Number(m[1]) !== Math.floor(code / 100)) return null;
  return `${m[1]}.${m[2]}.${m[3]}`;
}

/** The reply as log text: "550 5.1.1 No such user" (continuation lines joined with " / "). */
export function formatSmtpReply(r: SmtpReply): string {
  return `${r.code} ${r.lines.join(' / ')}`.trimEnd();
}
