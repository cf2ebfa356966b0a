import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile, mkdir, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { RelayguardError } from '../core/errors.ts';
import { MemoryLogger } from '../core/log.ts';
import { ensureCertificate, loadCertificate } from './tls-cert.ts';

describe('ensureCertificate', () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'relayguard-tls-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('generates once, 0600 key, then reuses the same pair', async () => {
    const logger = new MemoryLogger();
    const first = await ensureCertificate({ dir, hostname: 'mx.example.test', logger });
    assert.equal(first.generated, true);
    assert.match(first.cert, /^-----BEGIN CERTIFICATE-----/);
    assert.match(first.key, /PRIVATE KEY-----/);
    assert.ok(logger.records.some((r) => r.msg === 'generated self-signed TLS certificate'));
    const keyStat = await stat(join(dir, 'tls', 'key.pem'));
    assert.equal(keyStat.mode & 0o777, 0o600);
    assert.deepEqual((await readdir(join(dir, 'tls'))).sort(), ['cert.pem', 'key.pem']); // no temp files left

    const x509 = new X509Certificate(first.cert);
    assert.equal(first.fingerprint256, x509.fingerprint256);
    assert.match(x509.subjectAltName ?? '', /DNS:mx\.example\.test/);
    assert.match(x509.subjectAltName ?? '', /DNS:localhost/);
    assert.match(x509.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
    assert.match(x509.subjectAltName ?? '', /IP Address:0:0:0:0:0:0:0:1/);
    assert.equal(x509.publicKey.asymmetricKeyType, 'ec');
    const days = (x509.validToDate.getTime() - Date.now()) / 86_400_000;
    assert.ok(days > 364 && days < 366, `validity ${days} days`);

    const second = await ensureCertificate({ dir, hostname: 'other.example.test' });
    assert.equal(second.generated, false);
    assert.equal(second.cert, first.cert);
    assert.equal(second.key, first.key);
    assert.equal(second.fingerprint256, first.fingerprint256);
  });

  it('serves TLSv1.3 to a client that trusts it', async () => {
    const { cert, key } = await ensureCertificate({ dir, hostname: 'mx.example.test' });
    const server = createServer({ cert, key, minVersion: 'TLSv1.3' }, (socket) => socket.end('220 hello\r\n'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      for (const servername of ['mx.example.test', 'localhost']) {
        const { protocol, authorized, data } = await new Promise<{ protocol: string | null; authorized: boolean; data: string }>(
          (resolve, reject) => {
            const socket: TLSSocket = connect({ host: '127.0.0.1', port, ca: cert, servername, minVersion: 'TLSv1.3' }, () => {
              let data = '';
              socket.setEncoding('utf8');
              socket.on('data', (d: string) => { data += d; });
              socket.on('end', () => resolve({ protocol: socket.getProtocol(), authorized: socket.authorized, data }));
            });
            socket.on('error', reject);
          },
        );
        assert.equal(protocol, 'TLSv1.3');
        assert.equal(authorized, true);
        assert.equal(data, '220 hello\r\n');
      }
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('refuses to overwrite a lone cert.pem', async () => {
    const other = await mkdtemp(join(tmpdir(), 'relayguard-tls-'));
    try {
      await mkdir(join(other, 'tls'));
      await writeFile(join(other, 'tls', 'cert.pem'), 'mine');
      await assert.rejects(ensureCertificate({ dir: other, hostname: 'x.test' }), (err: unknown) => {
        assert.ok(err instanceof RelayguardError);
        assert.equal(err.code, 'ERR_TLS_CERT');
        return true;
      });
      assert.equal(await readFile(join(other, 'tls', 'cert.pem'), 'utf8'), 'mine');
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});

describe('loadCertificate', () => {
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'relayguard-tls-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  const isCertError = (pattern: RegExp) => (err: unknown): boolean => {
    assert.ok(err instanceof RelayguardError, String(err));
    assert.equal(err.code, 'ERR_TLS_CERT');
    assert.match(err.message, pattern);
    return true;
  };

  it('fails clearly for missing, garbage and mismatched files', async () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    const { cert: certA } = await ensureCertificate({ dir: a, hostname: 'a.test' });
    const { key: keyB } = await ensureCertificate({ dir: b, hostname: 'b.test' });
    const certPath = join(a, 'tls', 'cert.pem');
    const keyPath = join(a, 'tls', 'key.pem');
    assert.equal((await loadCertificate(certPath, keyPath)).cert, certA);

    await assert.rejects(loadCertificate(join(dir, 'nope.pem'), keyPath), isCertError(/Cannot read TLS certificate/));
    await assert.rejects(loadCertificate(certPath, join(dir, 'nope.pem')), isCertError(/Cannot read TLS private key/));
    const garbage = join(dir, 'garbage.pem');
    await writeFile(garbage, 'not a certificate\n');
    await assert.rejects(loadCertificate(garbage, keyPath), isCertError(/not a valid PEM certificate/));
    await assert.rejects(loadCertificate(certPath, garbage), isCertError(/invalid or do not match/));
    const otherKey = join(dir, 'other-key.pem');
    await writeFile(otherKey, keyB);
    await assert.rejects(loadCertificate(certPath, otherKey), isCertError(/invalid or do not match/));
  });
});
