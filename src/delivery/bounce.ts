/**
 * The Bouncer (src/queue/deliverer.ts): delivery status notifications as RFC 3464 reports, queued from <> to the
 * original sender through the queue's own receive path (the injected `enqueue`, so that delivery does not import
 * the queue).
 *
 * A report is multipart/report; report-type=delivery-status (RFC 6522) with three parts: a human-readable text,
 * the message/delivery-status fields (Reporting-MTA, Original-Envelope-Id, Arrival-Date; per recipient
 * Final-Recipient, Original-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date,
 * Will-Retry-Until), and the original message: its headers (text/rfc822-headers), or all of it (message/rfc822)
 * when the sender asked RET=FULL and it is small enough.
 *
 * NOTIFY (RFC 3461): NEVER → no report for that recipient; a NOTIFY list without FAILURE → no failure report;
 * without DELAY → no delay report; no NOTIFY → both. A message whose sender is <> is never reported to
 * (RFC 5321 section 6.1): such a "double bounce" goes to `doubleBounceTo` (the postmaster) when configured, else it
 * is logged and dropped. Reports are generated, never built from unbounded input: headers are cut at
 * `maxHeaderBytes`, remote texts are cleaned, lines are folded.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { SYSTEM_CLOCK, type Clock } from '../core/clock.ts';
import type { Bouncer, DelayedRecipient, FailedRecipient, QueuedMessageView } from '../queue/deliverer.ts';
import type { EsmtpParams } from '../queue/store.ts';
import { clean } from './outcome.ts';

export interface BounceEnvelope {
  /** Always '' (the null reverse path). */
  readonly sender: '';
  readonly recipients: readonly { readonly address: string }[];
  /** BODY=8BITMIME when the report carries 8-bit data, SMTPUTF8 when an address needs it. */
  readonly mailParams: EsmtpParams;
}

export interface BouncerOptions {
  /** Reporting-MTA and the From address domain. */
  readonly hostname: string;
  /** Queues the report durably (QueueStore.beginMessage + body + commit); resolves once it is. */
  readonly enqueue: (envelope: BounceEnvelope, content: Buffer) => Promise<unknown>;
  /** Where reports about mail from <> go; null (default): logged and dropped. */
  readonly doubleBounceTo?: string | null;
  /** RET=FULL returns the whole message up to this size; larger ones get the headers only. Default 1 MiB. */
  readonly maxFullMessageBytes?: number;
  /** Most header bytes returned. Default 64 KiB. */
  readonly maxHeaderBytes?: number;
  /**
   * Reports sent to one destination per window, so that bounces cannot be aimed at a victim: per recipient address
   * and per recipient domain (0: no limit). Reports over the limit are logged and dropped. Default: no limit.
   */
  readonly rateLimit?: { readonly perRecipient: number; readonly perDomain: number; readonly windowMs: number };
  readonly clock?: Clock;
  readonly logger?: Logger;
}

type Kind = 'failed' | 'delayed';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 date-time in UTC: "Tue, 1 Jul 2003 10:52:37 +0000". */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** Folds a header field at spaces so no line exceeds 78 octets where possible (never 998). */
export function foldHeader(name: string, value: string): string {
  const words = value.split(' ');
  const lines: string[] = [];
  let line = `${name}:`;
  for (const w of words) {
    if (line.length + 1 + w.length > 78 && line.trim() !== `${name}:`) {
      lines.push(line);
      line = ` ${w}`;
    } else {
      line += ` ${w}`;
    }
    while (line.length > 900) {
      lines.push(line.slice(0, 900));
      line = ` ${line.slice(900)}`;
    }
  }
  lines.push(line);
  return `${lines.join('\r\n')}\r\n`;
}

function isAscii(s: string): boolean {
  return /^[\x00-\x7f]*$/.test(s);
}

function addressType(address: string): string {
  return isAscii(address) ? 'rfc822' : 'utf-8';
}

/** RFC 3461 xtext decoding ("+2B" → "+"), for ORCPT/ENVID display. */
export function decodeXtext(s: string): string {
  return s.replace(/\+([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
}

function notifyOf(params: EsmtpParams): Set<string> | null {
  const n = params['NOTIFY'];
  if (typeof n !== 'string') return null;
  return new Set(n.toUpperCase().split(',').map((s) => s.trim()));
}

/** Which recipients want a report of this kind (RFC 3461 section 4.1). */
export function wantsReport(params: EsmtpParams, kind: Kind): boolean {
  const n = notifyOf(params);
  if (n === null) return true;
  if (n.has('NEVER')) return false;
  return n.has(kind === 'failed' ? 'FAILURE' : 'DELAY');
}

function remoteMtaField(remoteMta: string | null): string | null {
  if (remoteMta === null) return null;
  const name = /^([^\s\[]+)/.exec(remoteMta)?.[1] ?? /\[([^\]]+)\]/.exec(remoteMta)?.[1] ?? null;
  if (name === null || name === 'maildir') return null;
  return `dns; ${clean(name)}`;
}

function replyText(r: FailedRecipient['reply']): string | null {
  if (r === null) return null;
  const text = typeof r.text === 'string' ? r.text : r.text.join(' ');
  const enhanced = r.enhanced && !text.startsWith(r.enhanced) ? `${r.enhanced} ` : '';
  return clean(`${r.code} ${enhanced}${text}`);
}

/** Diagnostic-Code: the next hop's own reply as "smtp; ...", our own diagnosis as "X-Relayguard; ...". */
function diagnosticCode(r: FailedRecipient): string | null {
  if (r.diagnostic !== null) return `X-Relayguard; ${clean(r.diagnostic)}`;
  const t = replyText(r.reply);
  return t === null ? null : `smtp; ${t}`;
}

function humanReason(r: FailedRecipient): string {
  const why = r.diagnostic !== null ? clean(r.diagnostic) : replyText(r.reply) ?? `status ${r.status}`;
  const host = r.remoteMta !== null && r.remoteMta !== 'maildir' ? `host ${clean(r.remoteMta)} said: ` : '';
  return `<${r.address}>: ${host}${why}`;
}

/** Reads the header block (through the blank line) of a body stream, at most maxBytes. */
async function readHeaders(body: Readable, maxBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      parts.push(chunk);
      size += chunk.length;
      const all = Buffer.concat(parts);
      const end = all.indexOf('\r\n\r\n');
      if (end >= 0) return all.subarray(0, Math.min(end + 2, maxBytes));
      if (size >= maxBytes) return all.subarray(0, maxBytes);
      parts.length = 0;
      parts.push(all);
    }
    return Buffer.concat(parts).subarray(0, maxBytes);
  } finally {
    body.destroy();
  }
}

async function readAll(body: Readable, maxBytes: number): Promise<Buffer | null> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) return null;
      parts.push(chunk);
    }
    return Buffer.concat(parts);
  } finally {
    body.destroy();
  }
}

/** Cuts a header block at its last complete line and makes sure it ends in CRLF. */
function completeLines(h: Buffer): Buffer {
  const last = h.lastIndexOf('\r\n');
  const cut = last < 0 ? Buffer.alloc(0) : h.subarray(0, last + 2);
  return cut;
}

export class DsnBouncer implements Bouncer {
  readonly #o: BouncerOptions;
  readonly #clock: Clock;
  readonly #logger: Logger;
  /** Destination -> send times in the current window (oldest first). */
  readonly #sent = new Map<string, number[]>();

  constructor(options: BouncerOptions) {
    if (typeof options.enqueue !== 'function') throw new TypeError('enqueue must be a function');
    this.#o = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#logger = options.logger ?? NULL_LOGGER;
  }

  async bounce(message: QueuedMessageView, recipients: readonly FailedRecipient[]): Promise<void> {
    await this.#report('failed', message, recipients);
  }

  async delayed(message: QueuedMessageView, recipients: readonly DelayedRecipient[]): Promise<void> {
    await this.#report('delayed', message, recipients);
  }

  async #report(kind: Kind, message: QueuedMessageView, all: readonly (FailedRecipient | DelayedRecipient)[]): Promise<void> {
    const log = this.#logger.child({ queue_id: message.queueId });
    let to = message.sender;
    if (to === '') {
      const pm = this.#o.doubleBounceTo ?? null;
      if (pm === null || kind === 'delayed') {
        log.warn('bounce of a bounce dropped', { kind, rcpts: all.map((r) => r.address) });
        return;
      }
      to = pm;
    }
    const recipients = message.sender === '' ? all : all.filter((r) => wantsReport(r.params, kind));
    if (recipients.length === 0) {
      log.info('no DSN requested (NOTIFY)', { kind, rcpts: all.length });
      return;
    }
    const limited = this.#overLimit(to);
    if (limited !== null) {
      log.warn('DSN suppressed by rate limit', { kind, to, limit: limited, rcpts: recipients.length });
      return;
    }
    const content = await this.build(kind, message, recipients, to);
    const eightBit = content.some((b) => b >= 0x80);
    const smtputf8 = !isAscii(to);
    const mailParams: Record<string, string | true> = {};
    if (eightBit) mailParams['BODY'] = '8BITMIME';
    if (smtputf8) mailParams['SMTPUTF8'] = true;
    await this.#o.enqueue({ sender: '', recipients: [{ address: to }], mailParams }, content);
    log.info(kind === 'failed' ? 'DSN queued' : 'delay DSN queued', { to, rcpts: recipients.length, double_bounce: message.sender === '' });
  }

  /**
   * Counts a report to `to` against the per-recipient and per-domain limits; returns which limit it exceeds (the
   * report is then not sent and not counted), or null (counted).
   */
  #overLimit(to: string): string | null {
    const rl = this.#o.rateLimit;
    if (!rl) return null;
    const now = this.#clock.now();
    const at = to.lastIndexOf('@');
    const keys: [string, number, string][] = [
      [`rcpt:${to.toLowerCase()}`, rl.perRecipient, 'per-recipient'],
      [`domain:${at < 0 ? '' : to.slice(at + 1).toLowerCase()}`, rl.perDomain, 'per-domain'],
    ];
    for (const [key] of keys) {
      const times = this.#sent.get(key);
      if (times) {
        while (times.length > 0 && times[0]! <= now - rl.windowMs) times.shift();
        if (times.length === 0) this.#sent.delete(key);
      }
    }
    for (const [key, max, name] of keys) {
      if (max > 0 && (this.#sent.get(key)?.length ?? 0) >= max) return name;
    }
    for (const [key, max] of keys) {
      if (max === 0) continue;
      const times = this.#sent.get(key);
      if (times) times.push(now);
      else this.#sent.set(key, [now]);
    }
    if (this.#sent.size > 100_000) this.#sent.clear(); // bounded memory under a flood of distinct destinations
    return null;
  }

  /** The report's bytes (CRLF line ends). Exposed for tests. */
  async build(kind: Kind, message: QueuedMessageView, recipients: readonly (FailedRecipient | DelayedRecipient)[], to: string): Promise<Buffer> {
    const host = this.#o.hostname;
    const now = this.#clock.now();
    const boundary = `${message.queueId}.${now}.${randomBytes(6).toString('hex')}/${host}`;
    const ret = typeof message.mailParams['RET'] === 'string' ? message.mailParams['RET'].toUpperCase() : null;
    const maxFull = this.#o.maxFullMessageBytes ?? 1024 * 1024;
    let original: Buffer | null = null;
    let full = false;
    if (ret === 'FULL' && message.size <= maxFull) {
      original = await readAll(message.openBody(), maxFull);
      full = original !== null;
    }
    if (original === null) original = completeLines(await readHeaders(message.openBody(), this.#o.maxHeaderBytes ?? 64 * 1024));

    const head = [
      foldHeader('From', `Mail Delivery System <MAILER-DAEMON@${host}>`),
      foldHeader('To', `<${to}>`),
      foldHeader('Subject', kind === 'failed' ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)'),
      foldHeader('Date', rfc5322Date(now)),
      foldHeader('Message-ID', `<${now}.${randomBytes(8).toString('hex')}.${message.queueId}@${host}>`),
      foldHeader('Auto-Submitted', 'auto-replied'),
      'MIME-Version: 1.0\r\n',
      foldHeader('Content-Type', `multipart/report; report-type=delivery-status; boundary="${boundary}"`),
      foldHeader('Content-Description', kind === 'failed' ? 'Undelivered Mail Returned to Sender' : 'Delivery delay notification'),
    ].join('');

    const human: string[] = [
      `This is the mail system at host ${host}.`,
      '',
      kind === 'failed'
        ? "I'm sorry to have to inform you that your message could not be delivered to one or more recipients. It's attached below."
        : 'Your message could not be delivered yet to one or more recipients. The mail system will keep trying; you do not need to resend it.',
      '',
      'For further assistance, please send mail to postmaster.',
      '',
      ...recipients.map((r) => humanReason(r)),
    ];
    const humanPart = `${human.map((l) => wrapText(l)).join('\r\n')}\r\n`;

    const perMessage = [
      foldHeader('Reporting-MTA', `dns; ${host}`),
      foldHeader('X-Relayguard-Queue-ID', message.queueId),
      ...(message.sender !== '' ? [foldHeader('X-Relayguard-Sender', `${addressType(message.sender)}; ${message.sender}`)] : []),
      ...(typeof message.mailParams['ENVID'] === 'string' ? [foldHeader('Original-Envelope-Id', clean(decodeXtext(message.mailParams['ENVID'])))] : []),
      foldHeader('Arrival-Date', rfc5322Date(message.receivedAt)),
    ].join('');
    const perRcpt = recipients.map((r) => {
      const fields: string[] = [];
      const orcpt = r.params['ORCPT'];
      if (typeof orcpt === 'string') {
        const m = /^([^;]+);(.*)$/.exec(orcpt);
        if (m) fields.push(foldHeader('Original-Recipient', `${clean(m[1]!)}; ${clean(decodeXtext(m[2]!))}`));
      }
      fields.push(foldHeader('Final-Recipient', `${addressType(r.address)}; ${r.address}`));
      fields.push(foldHeader('Action', kind));
      const status = /^[245]\.\d{1,3}\.\d{1,3}$/.test(r.status) ? r.status : kind === 'failed' ? '5.0.0' : '4.0.0';
      fields.push(foldHeader('Status', status));
      const mta = remoteMtaField(r.remoteMta);
      if (mta !== null) fields.push(foldHeader('Remote-MTA', mta));
      const diag = diagnosticCode(r);
      if (diag !== null) fields.push(foldHeader('Diagnostic-Code', diag));
      if (r.lastAttemptAt !== null) fields.push(foldHeader('Last-Attempt-Date', rfc5322Date(r.lastAttemptAt)));
      if ('expiresAt' in r) fields.push(foldHeader('Will-Retry-Until', rfc5322Date(r.expiresAt)));
      return fields.join('');
    });
    const statusPart = `${perMessage}\r\n${perRcpt.join('\r\n')}`;

    const parts: Buffer[] = [
      Buffer.from(head, 'utf8'),
      Buffer.from('\r\nThis is a MIME-encapsulated message.\r\n\r\n', 'ascii'),
      Buffer.from(`--${boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${humanPart}\r\n`, 'utf8'),
      Buffer.from(`--${boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n${statusPart}\r\n`, 'utf8'),
      Buffer.from(`--${boundary}\r\nContent-Description: ${full ? 'Undelivered Message' : 'Undelivered Message Headers'}\r\nContent-Type: ${full ? 'message/rfc822' : 'text/rfc822-headers'}\r\n\r\n`, 'ascii'),
      original,
      Buffer.from(`${original.length === 0 || original.subarray(-2).toString('latin1') === '\r\n' ? '' : '\r\n'}\r\n--${boundary}--\r\n`, 'ascii'),
    ];
    return Buffer.concat(parts);
  }
}

function wrapText(line: string): string {
  if (line.length <= 78) return line;
  const out: string[] = [];
  let cur = '';
  for (const w of line.split(' ')) {
    if (cur !== '' && cur.length + 1 + w.length > 78) {
      out.push(cur);
      cur = `${line.startsWith('<') ? '    ' : ''}${w}`;
    } else {
      cur = cur === '' ? w : `${cur} ${w}`;
    }
  }
  out.push(cur);
  return out.join('\r\n');
}
