/**
 * DKIM (RFC 6376, RFC 8463) signing of outgoing mail for configured domains, with mailauth's dkimSign
 * (relaxed/relaxed; rsa-sha256 or ed25519-sha256 by key type), and key generation for `relayguard dkim keygen`.
 *
 * Which key: the domain of the From: header (DMARC alignment), else the envelope sender's domain; a message
 * from neither configured domain is sent unsigned. The signature is computed once per job over the spool body
 * and prepended to every copy sent (deliverer.ts); the body itself is never rewritten.
 * Trust: the header block read to find From: is bounded (64 KiB); key files are written 0600.
 */
import { canonicalDomain } from '../core/canonical.ts';
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { NULL_LOGGER, type Logger } from '../core/log.ts';
import { domainOf } from './routing.ts';

export interface DkimSigner {
  /** The DKIM-Signature header(s) (CRLF line ends) for this message, or null when it is not to be signed. */
  sign(sender: string, openBody: () => Readable | AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<string | null>;
}

export interface DkimKey {
  readonly domain: string;
  readonly selector: string;
  /** PEM (PKCS#8 or PKCS#1 RSA, PKCS#8 Ed25519). */
  readonly privateKey: string;
}

export interface DkimSignerOptions {
  readonly keys: readonly DkimKey[];
  /** Header fields to sign; default mailauth's set (From, To, Subject, Date, Message-ID, MIME headers...). */
  readonly headerList?: readonly string[];
  readonly logger?: Logger;
}

const MAX_HEADER_BYTES = 64 * 1024;

async function readHeaderBlock(body: Readable | AsyncIterable<Uint8Array>): Promise<string> {
  let buf = Buffer.alloc(0);
  try {
    for await (const chunk of body as AsyncIterable<Uint8Array>) {
      buf = Buffer.concat([buf, Buffer.from(chunk)]);
      const end = buf.indexOf('\r\n\r\n');
      if (end >= 0) return buf.subarray(0, end + 2).toString('latin1');
      if (buf.length >= MAX_HEADER_BYTES) break;
    }
    return buf.subarray(0, MAX_HEADER_BYTES).toString('latin1');
  } finally {
    if (typeof (body as Readable).destroy === 'function') (body as Readable).destroy();
  }
}

/** The domain of the first address in the (unfolded) From: header, lower case; null if none. */
export function fromHeaderDomain(headers: string): string | null {
  const m = /(?:^|\r\n)From:((?:[^\r]|\r(?!\n)|\r\n[ \t])*)/i.exec(headers);
  if (!m) return null;
  const value = m[1]!.replace(/\r\n[ \t]/g, ' ').replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\([^()]*\)/g, '');
  const angle = /<([^<>]*)>/.exec(value)?.[1] ?? value;
  const at = angle.lastIndexOf('@');
  if (at < 0) return null;
  const raw = angle.slice(at + 1).trim().replace(/[>,;\s].*$/, '');
  const d = canonicalDomain(raw); // one canonical form (core/canonical.ts): a U-label From: matches an A-label key
  return d !== null && /^[a-z0-9.-]+$/.test(d) ? d : null;
}

export class MailauthDkimSigner implements DkimSigner {
  readonly #keys = new Map<string, DkimKey>();
  readonly #headerList: readonly string[] | undefined;
  readonly #logger: Logger;

  constructor(options: DkimSignerOptions) {
    for (const k of options.keys) {
      if (!/^[a-z0-9.-]+$/i.test(k.domain) || !/^[a-z0-9._-]+$/i.test(k.selector)) throw new TypeError(`Bad DKIM domain or selector: ${k.domain} / ${k.selector}`);
      this.#keys.set(canonicalDomain(k.domain) ?? k.domain.toLowerCase().replace(/\.$/, ''), k);
    }
    this.#headerList = options.headerList;
    this.#logger = options.logger ?? NULL_LOGGER;
  }

  /** The key that signs mail from this domain, if any. */
  keyFor(domain: string | null): DkimKey | null {
    return domain === null ? null : this.#keys.get(domain) ?? null;
  }

  async sign(sender: string, openBody: () => Readable | AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<string | null> {
    if (this.#keys.size === 0) return null;
    const from = fromHeaderDomain(await readHeaderBlock(openBody()));
    signal?.throwIfAborted();
    const key = this.keyFor(from) ?? this.keyFor(sender === '' ? null : domainOf(sender));
    if (key === null) return null;
    const body = openBody();
    try {
      // mailauth signs what signatureData lists; the top-level copy only satisfies its type definitions.
      const result = await dkimSign(body as Readable, {
        signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey,
        canonicalization: 'relaxed/relaxed',
        ...(this.#headerList ? { headerList: [...this.#headerList] } : {}),
        signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey }],
      });
      if (!result.signatures) {
        this.#logger.warn('dkim signing produced no signature', { domain: key.domain, errors: result.errors.map((e) => String(e.err?.message ?? e)) });
        return null;
      }
      return result.signatures.replace(/\r?\n/g, '\r\n');
    } finally {
      if (typeof (body as Readable).destroy === 'function') (body as Readable).destroy();
    }
  }
}

export interface GeneratedDkimKey {
  readonly domain: string;
  readonly selector: string;
  readonly type: 'rsa' | 'ed25519';
  /** PKCS#8 PEM. */
  readonly privateKey: string;
  /** Where the record goes: "<selector>._domainkey.<domain>". */
  readonly dnsName: string;
  /** The TXT record value: "v=DKIM1; k=rsa; p=...". */
  readonly txt: string;
  /** A zone-file line, the value split into quoted strings of at most 255 octets. */
  readonly zoneLine: string;
}

/** A new DKIM key pair and the DNS record that publishes it (RSA 2048 by default, or Ed25519). */
export function generateDkimKey(domain: string, selector: string, options: { type?: 'rsa' | 'ed25519'; bits?: number } = {}): GeneratedDkimKey {
  const d = canonicalDomain(domain) ?? '';
  if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(d)) throw new TypeError(`Bad domain ${JSON.stringify(domain)}`);
  if (!/^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/i.test(selector)) throw new TypeError(`Bad selector ${JSON.stringify(selector)}`);
  const type = options.type ?? 'rsa';
  let privateKey: string;
  let p: string;
  if (type === 'rsa') {
    const bits = options.bits ?? 2048;
    if (bits < 1024 || bits > 4096) throw new RangeError('RSA key size must be 1024..4096 bits');
    const pair = generateKeyPairSync('rsa', { modulusLength: bits });
    privateKey = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    p = pair.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  } else {
    const pair = generateKeyPairSync('ed25519');
    privateKey = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    // RFC 8463: the raw 32-byte public key, not its SubjectPublicKeyInfo.
    p = pair.publicKey.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');
  }
  const txt = `v=DKIM1; k=${type}; p=${p}`;
  const dnsName = `${selector}._domainkey.${d}`;
  const chunks: string[] = [];
  for (let i = 0; i < txt.length; i += 255) chunks.push(`"${txt.slice(i, i + 255)}"`);
  return { domain: d, selector, type, privateKey, dnsName, txt, zoneLine: `${dnsName}. IN TXT ( ${chunks.join(' ')} )` };
}

/** Generates a key and writes it to DIR/<domain>.<selector>.key (mode 0600, never overwriting). */
export async function writeDkimKey(dir: string, domain: string, selector: string, options: { type?: 'rsa' | 'ed25519'; bits?: number } = {}): Promise<GeneratedDkimKey & { path: string }> {
  const key = generateDkimKey(domain, selector, options);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${key.domain}.${key.selector}.key`);
  await writeFile(path, key.privateKey, { mode: 0o600, flag: 'wx' });
  return { ...key, path };
}
