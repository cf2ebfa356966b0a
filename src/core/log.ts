/**
 * The logger interface every module receives. Messages are fixed strings; data goes in snake_case fields.
 * The CLI supplies the JSON-lines implementation (pino); tests use a memory logger.
 */
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  fields: LogFields;
}

/** A logger that keeps records in memory (tests, `--quiet` runs). */
export class MemoryLogger implements Logger {
  readonly records: LogRecord[];
  readonly #bound: LogFields;
  constructor(records: LogRecord[] = [], bound: LogFields = {}) {
    this.records = records;
    this.#bound = bound;
  }
  #push(level: LogRecord['level'], msg: string, fields?: LogFields): void {
    this.records.push({ level, msg, fields: { ...this.#bound, ...fields } });
  }
  debug(msg: string, fields?: LogFields): void { this.#push('debug', msg, fields); }
  info(msg: string, fields?: LogFields): void { this.#push('info', msg, fields); }
  warn(msg: string, fields?: LogFields): void { this.#push('warn', msg, fields); }
  error(msg: string, fields?: LogFields): void { this.#push('error', msg, fields); }
  child(fields: LogFields): Logger { return new MemoryLogger(this.records, { ...this.#bound, ...fields }); }
}

/**
 * Characters a log line must never carry raw: C0 controls (tab, CR and LF included), DEL, C1 controls (U+009B is
 * a one-character CSI on some terminals), U+2028/U+2029 (line breaks to JavaScript and some viewers), the bidi
 * controls U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C (they reorder what a reader sees), and the backslash
 * itself, so an escape in the log always means the character was escaped, never that a client typed it.
 */
const LOG_UNSAFE = /[\x00-\x1f\x7f-\x9f\\\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const LOG_UNSAFE_ALL = new RegExp(LOG_UNSAFE.source, 'g');

/**
 * True when `s` holds a character of LOG_UNSAFE. A loop over char codes: log fields are short and almost always
 * printable ASCII, where this is several times cheaper than calling the regular expression.
 */
function hasUnsafe(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f) {
      if (c === 0x5c) return true;
      continue;
    }
    if (c < 0x20 || c <= 0x9f) return true; // C0, DEL, C1
    if (c < 0x061c) continue;
    if (c === 0x061c || c === 0x200e || c === 0x200f || (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069)) return true;
  }
  return false;
}

/** Text with the characters above written as visible escapes: \x1b, \u202e, and \\ for a backslash. */
export function escapeLogText(s: string): string {
  if (!hasUnsafe(s)) return s;
  return s.replace(LOG_UNSAFE_ALL, (c) => {
    if (c === '\\') return '\\\\';
    const n = c.charCodeAt(0);
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

/**
 * Fields written before all others, in this order: the client's address, so that a parser taking the first
 * bracketed address or the first "client" of a line (fail2ban) finds ours, never one a client typed into a
 * user name, HELO or address field.
 */
export const LEADING_LOG_FIELDS: readonly string[] = ['client', 'client_ip'];

function escapeValue(v: unknown, depth: number): unknown {
  if (typeof v === 'string') return escapeLogText(v);
  if (v === null || typeof v !== 'object' || depth > 8) return v;
  if (Array.isArray(v)) return v.map((x) => escapeValue(x, depth + 1));
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) return v; // Error, Buffer, Date...: left to the serializer
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[escapeLogText(k)] = escapeValue(x, depth + 1);
  return out;
}

/**
 * Field names seen to need no escaping (the code's own snake_case names, in practice): checked once, not per line.
 * Bounded, so that keys built from client input (nested objects) cannot grow it without limit.
 */
const SAFE_KEYS = new Set<string>();
const SAFE_KEYS_MAX = 4096;

function escapeKey(k: string): string {
  if (SAFE_KEYS.has(k)) return k;
  const e = escapeLogText(k);
  if (e === k && SAFE_KEYS.size < SAFE_KEYS_MAX) SAFE_KEYS.add(k);
  return e;
}

/** Fields ready for a log sink: every string escaped (deeply), the client's address first (LEADING_LOG_FIELDS). */
export function escapeLogFields(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const k of LEADING_LOG_FIELDS) if (Object.hasOwn(fields, k)) out[k] = escapeValue(fields[k], 0);
  for (const k of Object.keys(fields)) {
    if (LEADING_LOG_FIELDS.includes(k)) continue;
    const v = fields[k];
    out[escapeKey(k)] = typeof v === 'string' ? escapeLogText(v) : escapeValue(v, 0);
  }
  return out;
}

/**
 * Wraps a log sink so that whatever reaches it is escaped and ordered by escapeLogFields (messages too). Every
 * logger that writes for people or parsers (JSON lines, text) goes through this; MemoryLogger keeps raw values
 * for tests.
 */
export type LogLevelName = 'debug' | 'info' | 'warn' | 'error';

export class EscapingLogger implements Logger {
  readonly #inner: Logger;
  readonly #enabled: (level: LogLevelName) => boolean;
  /** `enabled` tells which levels the inner logger writes: lines it would drop are not escaped first (hot path). */
  constructor(inner: Logger, enabled: (level: LogLevelName) => boolean = () => true) {
    this.#inner = inner;
    this.#enabled = enabled;
  }
  debug(msg: string, fields?: LogFields): void { if (this.#enabled('debug')) this.#inner.debug(escapeLogText(msg), fields && escapeLogFields(fields)); }
  info(msg: string, fields?: LogFields): void { if (this.#enabled('info')) this.#inner.info(escapeLogText(msg), fields && escapeLogFields(fields)); }
  warn(msg: string, fields?: LogFields): void { if (this.#enabled('warn')) this.#inner.warn(escapeLogText(msg), fields && escapeLogFields(fields)); }
  error(msg: string, fields?: LogFields): void { if (this.#enabled('error')) this.#inner.error(escapeLogText(msg), fields && escapeLogFields(fields)); }
  child(fields: LogFields): Logger { return new EscapingLogger(this.#inner.child(escapeLogFields(fields)), this.#enabled); }
}

/** A logger that drops everything. */
export const NULL_LOGGER: Logger = {
  debug() {}, info() {}, warn() {}, error() {},
  child() { return NULL_LOGGER; },
};
