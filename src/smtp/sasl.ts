/**
 * SASL decoding for AUTH PLAIN (RFC 4616) and LOGIN: strict base64 (Node's decoder is lenient and would
 * accept junk), exactly two NULs in PLAIN, identities and passwords of at most 255 octets without controls.
 */
import type { Reply } from '../core/reply.ts';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_FIELD = 255;

/** Decodes base64 only if it is canonical; null otherwise. */
export function decodeStrictBase64(s: string): Buffer | null {
  if (!BASE64.test(s)) return null;
  return Buffer.from(s, 'base64');
}

export type PlainCredentials =
  | { readonly ok: true; readonly authzid: string; readonly username: string; readonly password: string }
  | { readonly ok: false; readonly reply: Reply };

const UTF8 = new TextDecoder('utf-8', { fatal: true });

export function decodeSaslPlain(raw: Buffer): PlainCredentials {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0) { parts.push(raw.subarray(start, i)); start = i + 1; }
  }
  parts.push(raw.subarray(start));
  const invalid: PlainCredentials = { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'Error: authentication failed: invalid credentials format' } };
  if (parts.length !== 3) return invalid;
  const [z, u, p] = parts as [Buffer, Buffer, Buffer];
  if (z.length > MAX_FIELD || u.length > MAX_FIELD || p.length > MAX_FIELD) {
    return { ok: false, reply: { code: 500, enhanced: '5.5.6', text: 'Authentication Exchange line is too long' } };
  }
  if (u.length === 0 || p.length === 0) return invalid;
  let authzid: string, username: string, password: string;
  try {
    authzid = UTF8.decode(z);
    username = UTF8.decode(u);
    password = UTF8.decode(p);
  } catch {
    return invalid;
  }
  if (/[\x00-\x1f\x7f]/.test(authzid + username)) return invalid;
  if (authzid !== '' && authzid !== username) {
    return { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'Error: authentication failed: authorization identity not permitted' } };
  }
  return { ok: true, authzid, username, password };
}
