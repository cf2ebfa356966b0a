/**
 * TSIG (RFC 8945) with HMAC-SHA256: the ORDB checks the signature of a zone transfer request and signs every
 * message of its answer, and signs the NOTIFY it sends to a secondary that has a key (field report D3).
 *
 *   parseTsig(msg, at)        the TSIG record at offset `at` (the last additional record), or null if malformed
 *   verifyRequest(...)        checks a signed request: the key is known, the MAC matches (constant-time), the time
 *                             is within the fudge; the TSIG error to answer with otherwise (BADKEY, BADSIG, BADTIME)
 *   signMessage(...)          appends a TSIG record to a message: a request, an answer to a signed request (the
 *                             request MAC is part of the digest), or the next message of a multi-message answer
 *                             (the prior MAC and the timers only, RFC 8945 section 5.3.1)
 *
 * Names go into the digest in canonical form (lower case, uncompressed). Only hmac-sha256 is offered: the
 * algorithm every current secondary supports and RFC 8945 makes mandatory; others get BADKEY.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const TYPE_TSIG = 250;
export const CLASS_ANY = 255;
export const TSIG_BADSIG = 16;
export const TSIG_BADKEY = 17;
export const TSIG_BADTIME = 18;
export const RCODE_NOTAUTH = 9;
export const HMAC_SHA256 = 'hmac-sha256';
const DEFAULT_FUDGE = 300;

export interface TsigKey {
  /** Key name, lower case, no trailing dot. */
  readonly name: string;
  readonly algorithm: typeof HMAC_SHA256;
  readonly secret: Buffer;
}

export interface TsigRecord {
  /** Offset of the TSIG record in the message (what the digest leaves out). */
  readonly start: number;
  readonly keyName: string;
  readonly algorithm: string;
  /** Seconds since the epoch (48 bits). */
  readonly timeSigned: number;
  readonly fudge: number;
  readonly mac: Buffer;
  readonly originalId: number;
  readonly error: number;
  readonly other: Buffer;
}

export type VerifyResult =
  | { readonly ok: true; readonly key: TsigKey }
  | { readonly ok: false; readonly error: number; readonly key: TsigKey | null; readonly reason: string };

/** A name read from `msg` at `off` (compression followed backwards only), lower case; null if malformed. */
function readName(msg: Uint8Array, off: number): { name: string; end: number } | null {
  const labels: string[] = [];
  let pos = off;
  let end = -1;
  let hops = 0;
  for (;;) {
    if (pos >= msg.length) return null;
    const len = msg[pos]!;
    if (len === 0) return { name: labels.join('.').toLowerCase(), end: end < 0 ? pos + 1 : end };
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= msg.length) return null;
      const target = ((len & 0x3f) << 8) | msg[pos + 1]!;
      if (end < 0) end = pos + 2;
      if (target >= pos || ++hops > 64) return null;
      pos = target;
      continue;
    }
    if (len & 0xc0 || pos + 1 + len > msg.length) return null;
    labels.push(Buffer.from(msg.subarray(pos + 1, pos + 1 + len)).toString('latin1'));
    pos += 1 + len;
  }
}

/** Canonical wire form of a name (RFC 4034 section 6.2: lower case, uncompressed). */
export function canonicalName(name: string): Buffer {
  const parts = name.toLowerCase().replace(/\.$/, '').split('.').filter((l) => l !== '');
  const out: Buffer[] = [];
  for (const p of parts) out.push(Buffer.from([p.length]), Buffer.from(p, 'latin1'));
  out.push(Buffer.from([0]));
  return Buffer.concat(out);
}

/** The TSIG record that starts at `at` and must end the message; null when it is malformed. */
export function parseTsig(msg: Uint8Array, at: number): TsigRecord | null {
  const owner = readName(msg, at);
  if (owner === null || owner.end + 10 > msg.length) return null;
  let p = owner.end;
  const type = (msg[p]! << 8) | msg[p + 1]!;
  const klass = (msg[p + 2]! << 8) | msg[p + 3]!;
  const rdlen = (msg[p + 8]! << 8) | msg[p + 9]!;
  p += 10;
  const end = p + rdlen;
  if (type !== TYPE_TSIG || klass !== CLASS_ANY || end !== msg.length) return null;
  const alg = readName(msg, p);
  if (alg === null || alg.end + 10 > end) return null;
  p = alg.end;
  const b = Buffer.from(msg.buffer, msg.byteOffset, msg.length);
  const timeSigned = b.readUIntBE(p, 6);
  const fudge = b.readUInt16BE(p + 6);
  const macLen = b.readUInt16BE(p + 8);
  p += 10;
  if (p + macLen + 6 > end) return null;
  const mac = Buffer.from(b.subarray(p, p + macLen));
  p += macLen;
  const originalId = b.readUInt16BE(p);
  const error = b.readUInt16BE(p + 2);
  const otherLen = b.readUInt16BE(p + 4);
  p += 6;
  if (p + otherLen !== end) return null;
  return { start: at, keyName: owner.name, algorithm: alg.name, timeSigned, fudge, mac, originalId, error, other: Buffer.from(b.subarray(p, end)) };
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u48(n: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUIntBE(n, 0, 6);
  return b;
}

/** The message as the digest sees it: without the TSIG record, ARCOUNT one less, the original ID. */
function strippedMessage(msg: Uint8Array, t: TsigRecord): Buffer {
  const m = Buffer.from(msg.subarray(0, t.start));
  m.writeUInt16BE(t.originalId, 0);
  m.writeUInt16BE(m.readUInt16BE(10) - 1, 10);
  return m;
}

function variables(key: TsigKey, timeSigned: number, fudge: number, error: number, other: Buffer, timersOnly: boolean): Buffer {
  const timers = Buffer.concat([u48(timeSigned), u16(fudge)]);
  if (timersOnly) return timers;
  return Buffer.concat([canonicalName(key.name), u16(CLASS_ANY), Buffer.alloc(4), canonicalName(key.algorithm), timers, u16(error), u16(other.length), other]);
}

function hmac(key: TsigKey, parts: readonly Buffer[]): Buffer {
  const h = createHmac('sha256', key.secret);
  for (const p of parts) h.update(p);
  return h.digest();
}

const withLength = (mac: Buffer): Buffer => Buffer.concat([u16(mac.length), mac]);

/** Checks a signed request (RFC 8945 section 5.2). `nowSeconds`: the server's clock. */
export function verifyRequest(msg: Uint8Array, t: TsigRecord, keys: ReadonlyMap<string, TsigKey>, nowSeconds: number): VerifyResult {
  const key = keys.get(t.keyName) ?? null;
  if (key === null) return { ok: false, error: TSIG_BADKEY, key: null, reason: `unknown key ${t.keyName}` };
  if (t.algorithm !== key.algorithm) return { ok: false, error: TSIG_BADKEY, key: null, reason: `algorithm ${t.algorithm} for key ${t.keyName}` };
  const expected = hmac(key, [strippedMessage(msg, t), variables(key, t.timeSigned, t.fudge, t.error, t.other, false)]);
  // A truncated MAC (RFC 8945 5.2.2.1) must keep at least half the digest and 10 bytes; we take whole MACs only.
  if (t.mac.length !== expected.length || !timingSafeEqual(t.mac, expected)) return { ok: false, error: TSIG_BADSIG, key: null, reason: 'signature does not match' };
  if (Math.abs(nowSeconds - t.timeSigned) > t.fudge) return { ok: false, error: TSIG_BADTIME, key, reason: `time signed ${t.timeSigned} is ${nowSeconds - t.timeSigned} s off` };
  return { ok: true, key };
}

export interface SignOptions {
  readonly nowSeconds: number;
  /** The request's MAC: this message answers a signed request (its first message). */
  readonly requestMac?: Buffer | undefined;
  /** The previous message's MAC: this is a later message of a multi-message answer (timers only). */
  readonly priorMac?: Buffer | undefined;
  readonly error?: number | undefined;
  /** BADTIME answers carry the server's time (RFC 8945 5.2.3). */
  readonly other?: Buffer | undefined;
  readonly fudge?: number | undefined;
}

/**
 * Appends a TSIG record to `message` (a complete DNS message without TSIG) and returns the signed message and its
 * MAC (what the next message of the stream chains on). The original ID is the message's own ID.
 */
export function signMessage(message: Buffer, key: TsigKey, o: SignOptions): { bytes: Buffer; mac: Buffer } {
  const fudge = o.fudge ?? DEFAULT_FUDGE;
  const error = o.error ?? 0;
  const other = o.other ?? Buffer.alloc(0);
  const timersOnly = o.priorMac !== undefined;
  const chained = o.priorMac ?? o.requestMac;
  const parts: Buffer[] = [];
  if (chained !== undefined) parts.push(withLength(chained));
  parts.push(message, variables(key, o.nowSeconds, fudge, error, other, timersOnly));
  const mac = hmac(key, parts);
  return { bytes: appendTsig(message, key, o.nowSeconds, fudge, mac, error, other), mac };
}

/** A TSIG record with no MAC (BADKEY and BADSIG answers are not signed: RFC 8945 5.3.2). */
export function appendUnsignedTsig(message: Buffer, keyName: string, algorithm: string, nowSeconds: number, error: number): Buffer {
  return appendTsig(message, { name: keyName, algorithm: algorithm as typeof HMAC_SHA256, secret: Buffer.alloc(0) }, nowSeconds, DEFAULT_FUDGE, Buffer.alloc(0), error, Buffer.alloc(0));
}

function appendTsig(message: Buffer, key: TsigKey, timeSigned: number, fudge: number, mac: Buffer, error: number, other: Buffer): Buffer {
  const rdata = Buffer.concat([canonicalName(key.algorithm), u48(timeSigned), u16(fudge), withLength(mac), u16(message.readUInt16BE(0)), u16(error), u16(other.length), other]);
  const rr = Buffer.concat([canonicalName(key.name), u16(TYPE_TSIG), u16(CLASS_ANY), Buffer.alloc(4), u16(rdata.length), rdata]);
  const out = Buffer.concat([message, rr]);
  out.writeUInt16BE(out.readUInt16BE(10) + 1, 10);
  return out;
}

/** A key from the configuration: name, algorithm, base64 secret. */
export function tsigKey(name: string, algorithm: string, secretBase64: string): TsigKey {
  if (algorithm.toLowerCase() !== HMAC_SHA256) throw new Error(`TSIG key ${name}: algorithm ${algorithm} is not supported (hmac-sha256 only)`);
  const secret = Buffer.from(secretBase64, 'base64');
  if (secret.length < 16) throw new Error(`TSIG key ${name}: the secret must be at least 16 bytes (base64)`);
  return { name: name.toLowerCase().replace(/\.$/, ''), algorithm: HMAC_SHA256, secret };
}
