/**
 * Local delivery to a Maildir (one per recipient: ROOT/<domain>/<local part>/) written the safe way
 * (maildir(5), Postfix virtual(8)): the message goes to tmp/ under a unique name (exclusive create, mode 0600),
 * is fsynced, renamed into new/, and new/ is fsynced, so a 2xx-equivalent outcome means the file is durable and
 * complete, and a reader never sees a partial message. A failure removes the temporary file.
 *
 * Lines end in LF in the Maildir (Unix mailbox convention, as Postfix and Dovecot write them); `lineEndings:
 * 'crlf'` keeps the wire form. A Return-Path and a Delivered-To header go on top.
 *
 * Trust: the local part comes from the envelope: every byte outside [A-Za-z0-9._+=-] is %XX-encoded and a leading
 * dot too, so no address can name a path outside ROOT ("../", "/", NUL). The domain is the canonical one.
 * LMTP and SMTP local next hops go through outbound.ts.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { DeliveryRecipient, RecipientOutcome } from '../queue/deliverer.ts';
import { domainOf } from './routing.ts';
import { bounced, deferred, failureOutcome } from './outcome.ts';

export interface MaildirOptions {
  readonly root: string;
  /**
   * True when the address is a known local recipient (the receive path's recipient tables). A Maildir is created
   * only for known recipients: anything else bounces with 5.1.1 and no directory is made. Absent: all are known.
   */
  readonly isKnown?: (address: string) => boolean;
  readonly lineEndings?: 'lf' | 'crlf';
  /** For unique names; default os.hostname(). */
  readonly hostname?: string;
}

export interface MaildirMessage {
  readonly queueId: string;
  readonly sender: string;
  openBody(): Readable | AsyncIterable<Uint8Array>;
}

let counter = 0;

/** The directory of a recipient's Maildir under root. */
export function maildirPath(root: string, address: string): string {
  const domain = domainOf(address) || 'localhost';
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  return join(root, encodeSegment(domain), encodeSegment(local === '' ? '_' : local));
}

function encodeSegment(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const ch = String.fromCharCode(b);
    out += /[A-Za-z0-9_+=-]/.test(ch) || (ch === '.' && out !== '') ? ch : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function uniqueName(host: string): string {
  const now = Date.now();
  const sec = Math.floor(now / 1000);
  const usec = (now % 1000) * 1000;
  const safeHost = host.replace(/\//g, '\\057').replace(/:/g, '\\072');
  return `${sec}.M${usec}P${process.pid}Q${++counter}R${randomBytes(8).toString('hex')}.${safeHost}`;
}

async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

class BodyError extends Error {}

async function writeBody(h: FileHandle, prefix: string, body: Readable | AsyncIterable<Uint8Array>, lf: boolean): Promise<void> {
  await h.write(Buffer.from(lf ? prefix.replace(/\r\n/g, '\n') : prefix, 'utf8'));
  let pendingCr = false;
  try {
    for await (const raw of body as AsyncIterable<Uint8Array | string>) {
      let chunk = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
      if (lf) {
        if (pendingCr) chunk = Buffer.concat([Buffer.from('\r'), chunk]);
        pendingCr = chunk.length > 0 && chunk[chunk.length - 1] === 0x0d;
        if (pendingCr) chunk = chunk.subarray(0, chunk.length - 1);
        chunk = Buffer.from(chunk.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
      }
      if (chunk.length > 0) await h.write(chunk);
    }
  } catch (err) {
    throw new BodyError(`message body unreadable: ${(err as Error).message}`, { cause: err });
  }
  if (pendingCr) await h.write(Buffer.from('\r'));
}

/** Delivers one copy into one recipient's Maildir. Throws on failure (the temporary file is removed). */
export async function deliverToMaildir(options: MaildirOptions, message: MaildirMessage, address: string): Promise<string> {
  const dir = maildirPath(options.root, address);
  for (const sub of ['tmp', 'new', 'cur']) await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
  const name = uniqueName(options.hostname ?? osHostname());
  const tmp = join(dir, 'tmp', name);
  const dest = join(dir, 'new', name);
  const h = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
  let done = false;
  const body = message.openBody();
  try {
    const prefix = `Return-Path: <${message.sender}>\r\nDelivered-To: ${address}\r\n`;
    await writeBody(h, prefix, body, (options.lineEndings ?? 'lf') === 'lf');
    await h.sync();
    await h.close();
    await rename(tmp, dest);
    done = true;
    await fsyncDir(join(dir, 'new'));
    return dest;
  } finally {
    if (typeof (body as Readable).destroy === 'function') (body as Readable).destroy();
    if (!done) {
      await h.close().catch(() => {});
      await unlink(tmp).catch(() => {});
    }
  }
}

/** Maildir delivery for a group of local recipients, one outcome each. */
export async function deliverLocalMaildir(options: MaildirOptions, message: MaildirMessage, recipients: readonly DeliveryRecipient[]): Promise<{ outcomes: RecipientOutcome[]; bodyFailed: boolean }> {
  const outcomes: RecipientOutcome[] = [];
  let bodyFailed = false;
  for (const r of recipients) {
    if (bodyFailed) {
      outcomes.push(failureOutcome(r.address, deferred('4.3.0', 'message body unreadable: delivery stopped')));
      continue;
    }
    if (options.isKnown && !options.isKnown(r.address)) {
      outcomes.push(failureOutcome(r.address, bounced('5.1.1', 'user unknown: no such local mailbox')));
      continue;
    }
    try {
      await deliverToMaildir(options, message, r.address);
      outcomes.push({ address: r.address, outcome: 'delivered', reply: { code: 250, enhanced: '2.0.0', text: 'delivered to maildir' }, remoteMta: 'maildir' });
    } catch (err) {
      if (err instanceof BodyError) bodyFailed = true;
      const code = (err as { code?: unknown }).code;
      const status = code === 'ENOSPC' || code === 'EDQUOT' ? '4.3.1' : bodyFailed ? '4.3.0' : '4.2.0';
      outcomes.push(failureOutcome(r.address, deferred(status, `maildir delivery failed: ${typeof code === 'string' ? code : (err as Error).message}`)));
    }
  }
  return { outcomes, bodyFailed };
}
