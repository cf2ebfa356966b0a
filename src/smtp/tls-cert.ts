/**
 * The server certificate: load `<dir>/tls/cert.pem` + `key.pem`, or create a self-signed one on first start so
 * that STARTTLS works out of the box. Generated keys are EC P-256, written 0600 via temp file + rename.
 */
import { constants as cryptoConstants, randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import { chmod, lstat, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RelayguardError } from '../core/errors.ts';
import { NULL_LOGGER, type Logger } from '../core/log.ts';

export interface LoadedCertificate {
  /** PEM certificate (chain). */
  cert: string;
  /** PEM private key. */
  key: string;
  /** SHA-256 fingerprint of the leaf certificate, "AB:CD:..." as node:crypto prints it. */
  fingerprint256: string;
}

export interface EnsuredCertificate extends LoadedCertificate {
  /** True when this call created the certificate. */
  generated: boolean;
}

const VALIDITY_MS = 365 * 24 * 60 * 60 * 1000;

/**
 * TLS 1.2 suites the SMTP listeners offer: ECDHE only (forward secrecy), AEAD only (no CBC: no LUCKY13 class), for
 * ECDSA (the generated key) and RSA certificates, strongest first. With `honorCipherOrder` the server's order wins.
 */
export const SERVER_TLS12_CIPHERS: readonly string[] = [
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
];

/** TLS 1.3 suites (all AEAD). Node sets these from the same `ciphers` string; leaving them out would turn 1.3 off. */
export const SERVER_TLS13_CIPHERS: readonly string[] = ['TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256', 'TLS_AES_128_GCM_SHA256'];

/**
 * The secure context of every server-side TLS socket (STARTTLS and implicit TLS): TLS 1.2 or later, the cipher
 * lists above in server order, and client-initiated renegotiation refused. The listeners build their TLSSockets by
 * hand (no tls.Server), so Node's own renegotiation limit (tls.CLIENT_RENEG_LIMIT) never applies: OpenSSL's
 * SSL_OP_NO_RENEGOTIATION on the context answers a renegotiating ClientHello with a no_renegotiation alert, which
 * ends the connection (TLS 1.3 has no renegotiation at all).
 */
export function createServerSecureContext(options: { cert: string; key: string; minVersion?: 'TLSv1.2' | 'TLSv1.3' }): SecureContext {
  return createSecureContext({
    cert: options.cert,
    key: options.key,
    minVersion: options.minVersion ?? 'TLSv1.2',
    ciphers: [...SERVER_TLS13_CIPHERS, ...SERVER_TLS12_CIPHERS].join(':'),
    honorCipherOrder: true,
    secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
  });
}

function certError(message: string, cause?: unknown): RelayguardError {
  return new RelayguardError('ERR_TLS_CERT', message, cause === undefined ? undefined : { cause });
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Reads a PEM certificate and key and checks that they parse and belong together (tls.createSecureContext).
 * Throws RelayguardError ERR_TLS_CERT otherwise.
 */
export async function loadCertificate(certPath: string, keyPath: string): Promise<LoadedCertificate> {
  let cert: string;
  let key: string;
  try {
    cert = await readFile(certPath, 'utf8');
  } catch (err) {
    throw certError(`Cannot read TLS certificate ${certPath}: ${describe(err)}`, err);
  }
  try {
    key = await readFile(keyPath, 'utf8');
  } catch (err) {
    throw certError(`Cannot read TLS private key ${keyPath}: ${describe(err)}`, err);
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw certError(`TLS certificate ${certPath} is not a valid PEM certificate: ${describe(err)}`, err);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw certError(`TLS certificate ${certPath} and key ${keyPath} are invalid or do not match: ${describe(err)}`, err);
  }
  return { cert, key, fingerprint256: x509.fingerprint256 };
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw certError(`Cannot inspect ${path}: ${describe(err)}`, err);
  }
}

/** Writes data to path atomically: a temp file beside it with the final mode, then rename. */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await chmod(tmp, mode); // the umask may have narrowed it; never widened beyond `mode`
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Generates a self-signed EC P-256 certificate for hostname, localhost, 127.0.0.1 and ::1, valid one year. */
export async function generateSelfSigned(hostname: string, now: Date = new Date()): Promise<{ cert: string; key: string }> {
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] = [];
  const seen = new Set<string>();
  const add = (name: string): void => {
    const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
    const lower = bare.toLowerCase();
    if (lower === '' || seen.has(lower)) return;
    seen.add(lower);
    altNames.push(isIP(bare) ? { type: 7, ip: bare } : { type: 2, value: lower });
  };
  for (const n of [hostname, 'localhost', '127.0.0.1', '::1']) add(n);
  const notBeforeDate = new Date(now.getTime() - 5 * 60 * 1000); // tolerate small clock skew
  // loaded on first use: the certificate library costs ~200 ms of start-up that processes without a generated
  // certificate (the tester, the CLI, serve with a configured one) need not pay
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: hostname || 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate: new Date(now.getTime() + VALIDITY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/**
 * Returns the certificate in `<dir>/tls/`, creating a self-signed one if neither cert.pem nor key.pem exists.
 * If only one of the two exists, throws ERR_TLS_CERT rather than overwrite it.
 */
export async function ensureCertificate(options: { dir: string; hostname: string; logger?: Logger }): Promise<EnsuredCertificate> {
  const logger = options.logger ?? NULL_LOGGER;
  const tlsDir = join(options.dir, 'tls');
  const certPath = join(tlsDir, 'cert.pem');
  const keyPath = join(tlsDir, 'key.pem');
  const [haveCert, haveKey] = await Promise.all([exists(certPath), exists(keyPath)]);
  if (haveCert && haveKey) {
    const loaded = await loadCertificate(certPath, keyPath);
    await warnAboutLoaded(loaded, keyPath, logger);
    return { ...loaded, generated: false };
  }
  if (haveCert !== haveKey) {
    const [present, missing] = haveCert ? [certPath, keyPath] : [keyPath, certPath];
    throw certError(`TLS: ${present} exists but ${missing} does not; supply both, or remove ${present} to generate a self-signed pair`);
  }
  try {
    await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw certError(`Cannot create ${tlsDir}: ${describe(err)}`, err);
  }
  let pair: { cert: string; key: string };
  try {
    pair = await generateSelfSigned(options.hostname);
  } catch (err) {
    throw certError(`Cannot generate a self-signed certificate for ${options.hostname}: ${describe(err)}`, err);
  }
  try {
    // Key first: a cert.pem on disk always has its key.
    await writeAtomic(keyPath, pair.key, 0o600);
    await writeAtomic(certPath, pair.cert, 0o644);
  } catch (err) {
    throw certError(`Cannot write the TLS certificate to ${tlsDir}: ${describe(err)}`, err);
  }
  // Read back what is on disk: if another process raced us, this fails loudly instead of pairing mismatched files.
  const loaded = await loadCertificate(certPath, keyPath);
  logger.info('generated self-signed TLS certificate', {
    cert_path: certPath,
    hostname: options.hostname,
    fingerprint256: loaded.fingerprint256,
  });
  return { ...loaded, generated: true };
}

async function warnAboutLoaded(loaded: LoadedCertificate, keyPath: string, logger: Logger): Promise<void> {
  const validTo = new X509Certificate(loaded.cert).validToDate;
  if (!(validTo.getTime() > Date.now())) {
    logger.warn('TLS certificate has expired', { valid_to: validTo.toISOString(), fingerprint256: loaded.fingerprint256 });
  }
  try {
    const s = await stat(keyPath);
    if ((s.mode & 0o077) !== 0) logger.warn('TLS private key is readable by group or others', { key_path: keyPath });
  } catch {
    // loadCertificate just read it; a vanished file is not worth a second error
  }
}
