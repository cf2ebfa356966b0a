/**
 * The loggers behind the project's Logger interface. Only the CLI builds one.
 *
 * - json (default): JSON lines (pino), `{"level":"warn","time":"...","service":"relayguard","client":...,"msg":"..."}`.
 * - text: one line per event for people, Postfix-like:
 *     2026-12-03T12:00:00.000Z relayguard[4242]: warn: command refused: client=[192.0.2.9] session_id=... helo=<x>
 *       from=<a@example.net> to=<b@example.org> command=RCPT reply="452 4.5.3 Error: too many recipients" reason=limit
 *   `client_ip` is written `client=[ip]` (and left out when a `client` field already says so), `helo` `helo=<...>`,
 *   `mail_from` `from=<...>`, `rcpt` `to=<...>`; other fields are `key=value`; null and undefined are left out;
 *   a value with a space or a double quote (or an empty one) is written in double quotes with `\"` for the quote;
 *   a nested object is flattened to `key.sub=value`, an array of scalars joined with commas.
 *
 * Both go through EscapingLogger (core/log.ts), so both escape what clients typed (controls, line separators,
 * bidi controls, backslashes) and write the client's address before any other field.
 */
import { pino, type Logger as Pino } from 'pino';
import { EscapingLogger, LEADING_LOG_FIELDS, escapeLogText, type Logger, type LogFields } from '../core/log.ts';
import type { LogFormat } from '../config/schema.ts';


class PinoLogger implements Logger {
  readonly #p: Pino;
  constructor(p: Pino) { this.#p = p; }
  debug(msg: string, fields?: LogFields): void { this.#p.debug(fields ?? {}, msg); }
  info(msg: string, fields?: LogFields): void { this.#p.info(fields ?? {}, msg); }
  warn(msg: string, fields?: LogFields): void { this.#p.warn(fields ?? {}, msg); }
  error(msg: string, fields?: LogFields): void { this.#p.error(fields ?? {}, msg); }
  child(fields: LogFields): Logger { return new PinoLogger(this.#p.child(fields)); }
}

/**
 * pino.stdTimeFunctions.isoTime with the same output, formatted once per millisecond: under load several lines share
 * a millisecond, and a Date plus toISOString() per line was a visible share of a line's cost.
 */
let isoMs = -1;
let isoText = '';
function isoTime(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = `,"time":"${new Date(now).toISOString()}"`;
  }
  return isoText;
}

type Level = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

/** Where text lines go, and what stamps them (tests pass a fixed clock and pid). */
export interface TextSink {
  write(line: string): void;
  now?: () => Date;
  pid?: number;
}

/** The text format's sink side; expects fields already escaped (wrap it in EscapingLogger, as createTextLogger does). */
class TextLogger implements Logger {
  readonly #sink: TextSink;
  readonly #min: number;
  readonly #bound: LogFields;
  constructor(sink: TextSink, min: number, bound: LogFields) {
    this.#sink = sink;
    this.#min = min;
    this.#bound = bound;
  }
  #log(level: Level, msg: string, fields?: LogFields): void {
    if (RANK[level]! < this.#min) return;
    const all = fields === undefined ? this.#bound : { ...this.#bound, ...fields };
    const time = (this.#sink.now?.() ?? new Date()).toISOString();
    this.#sink.write(formatTextLine(time, this.#sink.pid ?? process.pid, level, msg, all));
  }
  debug(msg: string, fields?: LogFields): void { this.#log('debug', msg, fields); }
  info(msg: string, fields?: LogFields): void { this.#log('info', msg, fields); }
  warn(msg: string, fields?: LogFields): void { this.#log('warn', msg, fields); }
  error(msg: string, fields?: LogFields): void { this.#log('error', msg, fields); }
  child(fields: LogFields): Logger { return new TextLogger(this.#sink, this.#min, { ...this.#bound, ...fields }); }
}

/** A text-format logger writing to `sink` (escaping and ordering included). */
export function createTextLogger(sink: TextSink, options: { level?: string } = {}): Logger {
  const min = RANK[options.level ?? 'info'] ?? RANK['info']!;
  return new EscapingLogger(new TextLogger(sink, min, {}), (level) => RANK[level]! >= min);
}

/** Logs JSON lines (or text lines, with format 'text') to the given file descriptor (stdout by default). */
export function createLogger(options: { level?: string; fd?: number; format?: LogFormat } = {}): Logger {
  // pino's destination flushes itself at exit, for both formats.
  const destination = pino.destination({ fd: options.fd ?? 1, sync: false });
  if (options.format === 'text') {
    return createTextLogger({ write: (line) => { destination.write(line); } }, { level: options.level ?? 'info' });
  }
  const p = pino(
    {
      level: options.level ?? 'info',
      base: { service: 'relayguard' },
      timestamp: isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  // Attacker-controlled strings are escaped and the client's address is written first (core/log.ts).
  return new EscapingLogger(new PinoLogger(p), (level) => p.isLevelEnabled(level));
}

// ---------------------------------------------------------------------------------------------------------
// The text line

/** Fields written under a Postfix name, with the value in angle brackets. */
const ANGLE: Record<string, string> = { helo: 'helo', mail_from: 'from', rcpt: 'to' };
const NEEDS_QUOTES = /[\s"]/u;

/**
 * One text line (with its newline) from escaped fields: `TIME relayguard[PID]: LEVEL: MSG: k=v k=v`.
 * LEADING_LOG_FIELDS come first whatever the order of `fields` (child bindings included).
 */
export function formatTextLine(time: string, pid: number, level: string, msg: string, fields: LogFields): string {
  const parts: string[] = [];
  const client = fields['client'];
  const seen = new Set<string>();
  for (const k of LEADING_LOG_FIELDS) {
    seen.add(k);
    const v = fields[k];
    if (v === null || v === undefined) continue;
    if (k === 'client') parts.push(`client=${bracketed(v)}`);
    else if (k === 'client_ip') {
      // Left out when `client` already names it; written as Postfix does otherwise.
      if (typeof v === 'string' && client === `[${v}]`) continue;
      parts.push(client === undefined || client === null ? `client=${bracketed(`[${scalar(v)}]`)}` : `client_ip=${value(v)}`);
    }
  }
  for (const [k, v] of Object.entries(fields)) {
    if (seen.has(k)) continue;
    field(parts, k, v, 0);
  }
  const head = `${time} relayguard[${pid}]: ${level}: ${msg}`;
  return parts.length === 0 ? `${head}\n` : `${head}: ${parts.join(' ')}\n`;
}

function field(parts: string[], key: string, v: unknown, depth: number): void {
  if (v === null || v === undefined) return;
  const angle = depth === 0 ? ANGLE[key] : undefined;
  if (angle !== undefined && typeof v === 'string') {
    const inner = v.startsWith('<') && v.endsWith('>') ? v : `<${v}>`;
    parts.push(`${angle}=${NEEDS_QUOTES.test(inner) ? quote(inner) : inner}`);
    return;
  }
  if (typeof v === 'object' && !Array.isArray(v) && isPlain(v) && depth < 4) {
    for (const [k, x] of Object.entries(v)) field(parts, `${key}.${k}`, x, depth + 1);
    return;
  }
  parts.push(`${key}=${value(v)}`);
}

function isPlain(v: object): boolean {
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** A client field already in brackets ("[192.0.2.9]") stays bare; anything else is quoted. */
function bracketed(v: unknown): string {
  const s = scalar(v);
  return /^\[[0-9A-Za-z:.%]+\]$/.test(s) ? s : quote(s);
}

function value(v: unknown): string {
  const s = Array.isArray(v) ? v.map((x) => scalar(x)).join(',') : scalar(v);
  return s === '' || NEEDS_QUOTES.test(s) ? quote(s) : s;
}

/** A scalar as text. Strings arrive escaped; anything the escaping wrapper left alone (Error, Date...) is escaped here. */
function scalar(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v === null || v === undefined) return '';
  if (v instanceof Error) return escapeLogText(`${v.name}: ${v.message}`);
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'object') {
    try { return escapeLogText(JSON.stringify(v)); } catch { return '[unserializable]'; }
  }
  return escapeLogText(String(v));
}

function quote(s: string): string {
  return `"${s.replaceAll('"', '\\"')}"`;
}
