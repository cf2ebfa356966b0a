/**
 * TLS hardening of the SMTP listeners (field report 1, F2 and F9), with Node's own TLS client: client-initiated
 * renegotiation is refused on STARTTLS and on implicit TLS (the sockets are built by hand, so Node's
 * tls.CLIENT_RENEG_LIMIT never applied), TLS 1.2 offers no CBC suite and only ECDHE, the server's cipher order
 * wins, and ordinary sessions (TLS 1.2 with GCM or ChaCha20, TLS 1.3) still work. The openssl s_client versions of
 * these checks are in test/interop/openssl-tls.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { p1, expectReply, type RawSmtpClient } from './hostile-helpers.ts';

let h: Harness;
before(async () => {
  h = await startRelay({ users: [{ name: 'alice@local.test', password: 'pw' }] });
});
after(async () => { await h?.close(); });

const ALICE = Buffer.from('\0alice@local.test\0pw').toString('base64');

/** A session over STARTTLS on mx, EHLO done inside TLS. */
async function starttls(options: tls.ConnectionOptions = {}): Promise<RawSmtpClient> {
  const c = await p1(h.ports.mx);
  expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
  await c.startTls(options);
  expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
  return c;
}

/** Implicit TLS on submissions with these client options; resolves with the socket or the handshake error. */
function implicit(options: tls.ConnectionOptions): Promise<{ socket: tls.TLSSocket } | { error: Error }> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: h.ports.submissions, rejectUnauthorized: false, servername: 'localhost', ...options });
    s.once('secureConnect', () => resolve({ socket: s }));
    s.once('error', (error) => { s.destroy(); resolve({ error }); });
  });
}

/**
 * Asks for a renegotiation and resolves with what happened: 'refused' (an error such as "no renegotiation", or the
 * connection closed) or 'renegotiated' (a second handshake completed).
 */
function renegotiate(socket: tls.TLSSocket): Promise<{ outcome: 'refused' | 'renegotiated'; detail: string }> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (outcome: 'refused' | 'renegotiated', detail: string): void => {
      if (done) return;
      done = true;
      resolve({ outcome, detail });
    };
    socket.once('error', (err) => finish('refused', err.message));
    socket.once('close', () => finish('refused', 'closed'));
    const started = socket.renegotiate({ rejectUnauthorized: false }, (err) => {
      if (err) finish('refused', err.message);
      else finish('renegotiated', 'second handshake completed');
    });
    if (!started) finish('refused', 'renegotiate() returned false');
  });
}

test('F2 client-initiated renegotiation is refused after STARTTLS; a normal session still works', async () => {
  const c = await starttls({ maxVersion: 'TLSv1.2' });
  try {
    const r = await renegotiate(c.socket as tls.TLSSocket);
    assert.equal(r.outcome, 'refused', r.detail);
    assert.match(r.detail, /renegotiation|closed|alert/i);
  } finally {
    c.close();
  }
  const ok = await starttls();
  try {
    expectReply(await ok.cmd('NOOP'), 250, '2.0.0', ok);
  } finally {
    ok.close();
  }
});

test('F2 client-initiated renegotiation is refused on implicit TLS; a normal session still works', async () => {
  const first = await implicit({ maxVersion: 'TLSv1.2' });
  assert.ok('socket' in first, 'handshake failed');
  try {
    const r = await renegotiate(first.socket);
    assert.equal(r.outcome, 'refused', r.detail);
  } finally {
    first.socket.destroy();
  }
  const c = await p1(h.ports.submissions, { tls: true });
  try {
    expectReply(await c.cmd(`AUTH PLAIN ${ALICE}`), 235, '2.7.0', c);
    expectReply(await c.cmd('MAIL FROM:<alice@local.test>'), 250, '2.1.0', c);
  } finally {
    c.close();
  }
});

test('F2 repeated renegotiation attempts never succeed (no handshake CPU for the asking)', async () => {
  for (let i = 0; i < 5; i++) {
    const s = await implicit({ maxVersion: 'TLSv1.2' });
    assert.ok('socket' in s);
    try {
      assert.equal((await renegotiate(s.socket)).outcome, 'refused', `attempt ${i}`);
    } finally {
      s.socket.destroy();
    }
  }
});

const CBC_ONLY = [
  'ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA', 'ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA',
  'ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA384', 'AES128-SHA', 'AES256-SHA',
].join(':');

test('F9 a TLS 1.2 client offering only CBC suites fails on implicit TLS and on STARTTLS', async () => {
  const r = await implicit({ maxVersion: 'TLSv1.2', ciphers: CBC_ONLY });
  assert.ok('error' in r, 'a CBC-only handshake succeeded on implicit TLS');
  assert.match(r.error.message, /handshake failure|no shared cipher|alert/i);
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    await assert.rejects(c.startTls({ maxVersion: 'TLSv1.2', ciphers: CBC_ONLY }), /handshake failure|no shared cipher|alert/i);
  } finally {
    c.close();
  }
});

test('F9 a TLS 1.2 client with only static RSA key exchange (no forward secrecy) fails', async () => {
  const r = await implicit({ maxVersion: 'TLSv1.2', ciphers: 'AES128-GCM-SHA256:AES256-GCM-SHA384' });
  assert.ok('error' in r, 'a non-ECDHE handshake succeeded');
});

test('F9 GCM and ChaCha20 clients work over TLS 1.2; TLS 1.3 works; the server picks its own order', async () => {
  for (const cipher of ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305']) {
    const r = await implicit({ maxVersion: 'TLSv1.2', ciphers: cipher });
    assert.ok('socket' in r, `${cipher}: ${'error' in r ? r.error.message : ''}`);
    assert.equal(r.socket.getCipher().name, cipher);
    assert.equal(r.socket.getProtocol(), 'TLSv1.2');
    r.socket.destroy();
    const c = await starttls({ maxVersion: 'TLSv1.2', ciphers: cipher });
    try {
      assert.equal((c.socket as tls.TLSSocket).getCipher().name, cipher);
      expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
    } finally {
      c.close();
    }
  }
  // The client prefers AES128 and lists it first; the server's order (AES256 first) wins (honorCipherOrder).
  const ordered = await implicit({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384' });
  assert.ok('socket' in ordered);
  assert.equal(ordered.socket.getCipher().name, 'ECDHE-ECDSA-AES256-GCM-SHA384');
  ordered.socket.destroy();
  // TLS 1.3 is untouched by the TLS 1.2 list.
  const t13 = await implicit({});
  assert.ok('socket' in t13);
  assert.equal(t13.socket.getProtocol(), 'TLSv1.3');
  t13.socket.destroy();
});
