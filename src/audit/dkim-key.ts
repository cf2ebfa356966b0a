/**
 * DKIM public key records (RFC 6376 section 3.6.1, RFC 8463) for the self-audit: parse "v=DKIM1; k=rsa; p=..." and
 * say whether it publishes the public half of a configured signing key.
 *
 * Trust: records are untrusted text; key material is compared, never logged.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';

export interface DkimKeyRecord {
  readonly k: string;
  /** base64 public key; '' = revoked. */
  readonly p: string;
  readonly t: readonly string[];
  readonly h: readonly string[] | null;
  readonly s: readonly string[];
}

export type DkimKeyParse = { readonly ok: true; readonly record: DkimKeyRecord; readonly warnings: readonly string[] } | { readonly ok: false; readonly error: string };

export function parseDkimKey(text: string): DkimKeyParse {
  const tags: Record<string, string> = {};
  const warnings: string[] = [];
  const parts = text.split(';');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!.trim();
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) return { ok: false, error: `"${part.slice(0, 40)}" is not a tag=value pair` };
    const name = part.slice(0, eq).trim();
    if (!/^[a-zA-Z][a-zA-Z0-9_]*$/.test(name)) return { ok: false, error: `bad tag name "${name}"` };
    if (name in tags) return { ok: false, error: `tag "${name}" appears twice` };
    if (name === 'v' && Object.keys(tags).length > 0) return { ok: false, error: '"v" must be the first tag' };
    tags[name] = part.slice(eq + 1).replace(/\s+/g, '');
  }
  if (tags.v !== undefined && tags.v !== 'DKIM1') return { ok: false, error: `v: "${tags.v}" is not "DKIM1"` };
  if (tags.p === undefined) return { ok: false, error: 'the required tag "p" is missing' };
  if (tags.p !== '' && !/^[A-Za-z0-9+/]+={0,2}$/.test(tags.p)) return { ok: false, error: 'p: not base64' };
  const k = (tags.k ?? 'rsa').toLowerCase();
  if (k !== 'rsa' && k !== 'ed25519') warnings.push(`k: unknown key type "${k}"`);
  const t = tags.t === undefined ? [] : tags.t.split(':');
  if (t.includes('y')) warnings.push('t=y: the domain is testing DKIM (verifiers may treat signatures as unsigned)');
  return { ok: true, record: { k, p: tags.p, t, h: tags.h === undefined ? null : tags.h.split(':'), s: tags.s === undefined ? ['*'] : tags.s.split(':') }, warnings };
}

/** The "p=" value a private key's public half has: SPKI DER base64 (RSA), raw 32 octets base64 (Ed25519). */
export function expectedDkimP(privateKeyPem: string): { k: 'rsa' | 'ed25519'; p: string } {
  const pub = createPublicKey(createPrivateKey(privateKeyPem));
  const der = pub.export({ type: 'spki', format: 'der' });
  if (pub.asymmetricKeyType === 'ed25519') return { k: 'ed25519', p: der.subarray(-32).toString('base64') };
  if (pub.asymmetricKeyType === 'rsa') return { k: 'rsa', p: der.toString('base64') };
  throw new TypeError(`Unsupported DKIM key type "${pub.asymmetricKeyType}"`);
}

/** Compares the published p= with the expected one; RSA may be published as SPKI or as bare PKCS#1 RSAPublicKey. */
export function dkimKeyMatches(record: DkimKeyRecord, privateKeyPem: string): boolean {
  const want = expectedDkimP(privateKeyPem);
  if (record.p === '') return false;
  if (want.k !== record.k) return false;
  if (record.p === want.p) return true;
  if (want.k === 'rsa') {
    try {
      const published = createPublicKey({ key: Buffer.from(record.p, 'base64'), format: 'der', type: 'pkcs1' });
      return published.export({ type: 'spki', format: 'der' }).toString('base64') === want.p;
    } catch {
      return false;
    }
  }
  return false;
}
