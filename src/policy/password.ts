/**
 * Password hashing with scrypt (node:crypto, async, off the main thread).
 *
 * Encoded form: `scrypt$N$r$p$saltB64$hashB64` (standard base64 with padding), e.g.
 * `scrypt$32768$8$1$3q2+7w...==$Zm9v...=`. Parameters travel with the hash, so they can be raised later;
 * `needsRehash` says when a stored hash is below the current defaults.
 * Passwords are Unicode-normalized (NFKC, as SASLprep does) before hashing, so the same password typed as
 * composed or decomposed characters verifies.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export interface ScryptParams {
  /** CPU/memory cost, a power of two. Default 32768 (2^15). */
  readonly N: number;
  /** Block size. Default 8. */
  readonly r: number;
  /** Parallelism. Default 1. */
  readonly p: number;
}

/** About 32 MiB and some tens of milliseconds per hash. */
export const DEFAULT_SCRYPT_PARAMS: ScryptParams = Object.freeze({ N: 32768, r: 8, p: 1 });

const SALT_BYTES = 16;
const HASH_BYTES = 32;
/** Bounds for parameters read back from a stored hash, so a tampered row cannot make verification hang. */
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;
const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function checkParams(params: ScryptParams): boolean {
  const { N, r, p } = params;
  return (
    Number.isInteger(N) && N >= 2 && N <= MAX_N && (N & (N - 1)) === 0 &&
    Number.isInteger(r) && r >= 1 && r <= MAX_R &&
    Number.isInteger(p) && p >= 1 && p <= MAX_P
  );
}

function derive(password: string, salt: Buffer, keylen: number, params: ScryptParams): Promise<Buffer> {
  const { N, r, p } = params;
  // scrypt needs about 128 * N * r bytes; Node refuses anything above maxmem (32 MiB by default).
  const maxmem = 128 * N * r * p + 16 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, keylen, { N, r, p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

/** Hashes a password with a fresh random salt. `params` is for tests and tuning; the default is DEFAULT_SCRYPT_PARAMS. */
export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT_PARAMS): Promise<string> {
  if (typeof password !== 'string') throw new TypeError('Password must be a string');
  if (!checkParams(params)) throw new RangeError(`Invalid scrypt parameters N=${params.N} r=${params.r} p=${params.p}`);
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, HASH_BYTES, params);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

interface DecodedHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

function decode(encoded: string): DecodedHash | null {
  if (typeof encoded !== 'string' || encoded.length > 1024) return null;
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [, nText, rText, pText, saltText, hashText] = parts as [string, string, string, string, string, string];
  const int = /^[1-9][0-9]{0,7}$/;
  if (!int.test(nText) || !int.test(rText) || !int.test(pText)) return null;
  const params = { N: Number(nText), r: Number(rText), p: Number(pText) };
  if (!checkParams(params)) return null;
  if (!B64.test(saltText) || !B64.test(hashText)) return null;
  const salt = Buffer.from(saltText, 'base64');
  const hash = Buffer.from(hashText, 'base64');
  if (salt.length < 8 || salt.length > 64 || hash.length < 16 || hash.length > 64) return null;
  return { params, salt, hash };
}

/** True when `encoded` is a well-formed hash this module can verify. */
export function isPasswordHash(encoded: string): boolean {
  return decode(encoded) !== null;
}

/**
 * Checks a password against an encoded hash in constant time (for a given hash). A malformed hash never
 * verifies: the result is false, not an exception.
 */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  if (typeof password !== 'string') return false;
  const decoded = decode(encoded);
  if (decoded === null) return false;
  const actual = await derive(password, decoded.salt, decoded.hash.length, decoded.params);
  return timingSafeEqual(actual, decoded.hash);
}

/** True when the hash is malformed or uses weaker parameters than `params`, so it should be replaced on next login. */
export function needsRehash(encoded: string, params: ScryptParams = DEFAULT_SCRYPT_PARAMS): boolean {
  const decoded = decode(encoded);
  if (decoded === null) return true;
  const d = decoded.params;
  return d.N < params.N || d.r < params.r || d.p < params.p || decoded.hash.length < HASH_BYTES;
}
