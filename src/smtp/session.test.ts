import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { SmtpServer } from './server.ts';
import type { SessionHandler } from './handler.ts';
import { generateSelfSigned } from './tls-cert.ts';
import { NULL_LOGGER } from '../core/log.ts';
import { RawSmtpClient, p1 } from '../testing/smtp-client.ts';

const stored: string[] = [];
const handler: SessionHandler = {
  async onAuth({ username, password }) {
    return username === 'alice' && password === 'secret' ? { ok: true, user: 'alice' } : { ok: false, reply: { code: 535, enhanced: '5.7.8', text: 'Error: authentication failed' } };
  },
  async onMailFrom() { return { ok: true }; },
  async onRcptTo({ path }) {
    return path.mailbox?.domain.toLowerCase() === 'local.test' ? { ok: true } : { ok: false, reply: { code: 554, enhanced: '5.7.1', text: 'Relay access denied' } };
  },
  async onData({ body }) {
    const parts: Buffer[] = [];
    for await (const c of body) parts.push(c as Buffer);
    stored.push(Buffer.concat(parts).toString('latin1'));
    return { ok: true, queueId: `Q${stored.length}` };
  },
};

let server: SmtpServer;
let mx = 0, sub = 0, smtps = 0;

before(async () => {
  const { cert, key } = await generateSelfSigned('localhost');
  server = new SmtpServer({
    hostname: 'mx.local.test',
    listeners: [
      { name: 'mx', role: 'mx', address: '127.0.0.1', port: 0, tls: 'starttls' },
      { name: 'submission', role: 'submission', address: '127.0.0.1', port: 0, tls: 'starttls' },
      { name: 'submissions', role: 'submission', address: '127.0.0.1', port: 0, tls: 'implicit' },
    ],
    handler,
    logger: NULL_LOGGER,
    limits: { messageSize: 10000, recipients: 5, errors: 20, idleTimeoutMs: 2000, sessionTimeoutMs: 60000, hopCount: 30, commandLineLength: 2048, connections: 100, connectionsPerIp: 50 },
    tls: { cert, key },
    isTrustedProxy: () => false,
    lineEndings: 'reject',
    authRequiresTls: true,
  });
  const bound = await server.listen();
  [mx, sub, smtps] = bound.map((b) => b.port) as [number, number, number];
});

after(async () => { await server.close({ graceMs: 500 }); });

test('smtp: a plain transaction is accepted and stored once', async () => {
  const c = await p1(mx);
  assert.equal((await c.cmd('MAIL FROM:<a@client.test>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<u@local.test>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<v@remote.test>')).code, 554);
  assert.equal((await c.cmd('DATA')).code, 354);
  const r = await c.cmd('Subject: hi\r\n\r\n..dot\r\n.');
  assert.equal(r.code, 250);
  assert.match(r.text, /queued as Q\d+/);
  assert.equal(stored.at(-1), 'Subject: hi\r\n\r\n.dot\r\n');
  assert.equal((await c.cmd('QUIT')).code, 221);
  assert.ok(await c.waitClosed());
});

test('smtp: pipelined MAIL/RCPT/DATA group works, data before 354 is a violation', async () => {
  const c = await p1(mx);
  c.write('MAIL FROM:<a@client.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n');
  assert.equal((await c.readReply()).code, 250);
  assert.equal((await c.readReply()).code, 250);
  assert.equal((await c.readReply()).code, 354);
  c.write('x\r\n.\r\n');
  assert.equal((await c.readReply()).code, 250);
  c.write('MAIL FROM:<a@client.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nSubject: 2\r\n\r\ny\r\n.\r\n');
  assert.equal((await c.readReply()).code, 250);
  assert.equal((await c.readReply()).code, 250);
  const sync = await c.readReply();
  assert.equal(sync.code, 554);
  assert.equal(sync.enhanced, '5.5.0');
  assert.ok(await c.waitClosed());
});

test('smtp: STARTTLS discards injected plaintext and resets the session (TLS-01, TLS-03)', async () => {
  const c = await p1(mx);
  c.write('STARTTLS\r\nEHLO injected\r\nMAIL FROM:<inj@evil.test>\r\n');
  const r = await c.readReply();
  assert.equal(r.code, 220);
  await c.startTls();
  const after = await c.cmd('RCPT TO:<u@local.test>');
  assert.equal(after.code, 503);
  const ehlo = await c.cmd('EHLO x');
  assert.equal(ehlo.code, 250);
  assert.ok(!ehlo.text.includes('STARTTLS'));
  assert.ok(ehlo.text.includes('AUTH PLAIN LOGIN'));
  assert.equal((await c.cmd('STARTTLS')).code, 554);
  c.close();
});

test('smtp: AUTH only after TLS; submission requires AUTH before MAIL', async () => {
  const d = await p1(sub);
  assert.equal((await d.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')).code, 530);
  assert.equal((await d.cmd('MAIL FROM:<alice@local.test>')).code, 530);
  assert.equal((await d.cmd('STARTTLS')).code, 220);
  await d.startTls();
  assert.equal((await d.cmd('EHLO x')).code, 250);
  assert.equal((await d.cmd('AUTH PLAIN !!!!')).code, 501);
  assert.equal((await d.cmd('AUTH PLAIN AGFsaWNlAHdyb25n')).code, 535);
  assert.equal((await d.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')).code, 235);
  assert.equal((await d.cmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')).code, 503);
  assert.equal((await d.cmd('MAIL FROM:<alice@local.test>')).code, 250);
  d.close();
});

test('smtp: implicit TLS listener and AUTH LOGIN', async () => {
  const c = await p1(smtps, { tls: true });
  assert.equal((await c.cmd('AUTH LOGIN')).code, 334);
  assert.equal((await c.cmd(Buffer.from('alice').toString('base64'))).code, 334);
  assert.equal((await c.cmd(Buffer.from('secret').toString('base64'))).code, 235);
  c.close();
});

test('smtp: BDAT chunks are binary transparent (BD-04)', async () => {
  const c = await p1(mx);
  await c.cmd('MAIL FROM:<a@client.test>');
  await c.cmd('RCPT TO:<u@local.test>');
  c.write('BDAT 11\r\nab\r\n.\r\ncd\r\n');
  assert.equal((await c.readReply()).code, 250);
  c.write('BDAT 4 LAST\r\nef\r\n');
  const r = await c.readReply();
  assert.equal(r.code, 250);
  assert.equal(stored.at(-1), 'ab\r\n.\r\ncd\r\nef\r\n');
  c.close();
});

/** A raw connection that records every chunk it receives (one chunk per TCP read on loopback). */
function rawChunks(port: number): Promise<{ socket: Socket; chunks: string[]; ended: Promise<string | null>; until(re: RegExp): Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: string[] = [];
    let waiters: (() => void)[] = [];
    const ended = new Promise<string | null>((r) => {
      socket.on('end', () => r(null));
      socket.on('error', (err: NodeJS.ErrnoException) => r(err.code ?? err.message));
    });
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => { chunks.push(d); for (const w of waiters) w(); });
    const until = (re: RegExp): Promise<void> => new Promise((r, j) => {
      const t = setTimeout(() => j(new Error(`timeout waiting for ${re} in ${JSON.stringify(chunks.join(''))}`)), 5000);
      const check = (): void => { if (re.test(chunks.join(''))) { clearTimeout(t); waiters = waiters.filter((w) => w !== check); r(); } };
      waiters.push(check);
      check();
    });
    socket.once('connect', () => resolve({ socket, chunks, ended, until }));
    socket.once('error', reject);
  });
}

test('smtp RFC 2920: the replies to a pipelined group leave in one write, in order', async () => {
  const c = await rawChunks(mx);
  await c.until(/^220 /m);
  c.socket.write('EHLO client.test\r\n');
  await c.until(/^250 /m);
  const before = c.chunks.length;
  c.socket.write('MAIL FROM:<a@client.test>\r\nRCPT TO:<u@local.test>\r\nRCPT TO:<v@remote.test>\r\nRCPT TO:<w@local.test>\r\nDATA\r\n');
  await c.until(/^354 /m);
  const group = c.chunks.slice(before);
  assert.equal(group.length, 1, `one write for the group's replies, got ${JSON.stringify(group)}`);
  assert.deepEqual(group[0]!.split('\r\n').filter((l) => l !== '').map((l) => l.slice(0, 3)), ['250', '250', '554', '250', '354']);
  c.socket.write('Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n');
  await c.until(/^221 /m);
  assert.equal(await c.ended, null, 'orderly close (FIN) after 221');
  c.socket.destroy();
});

test('smtp: after QUIT the client reads 221 and then an orderly end of stream, also when it resets at once', async () => {
  const c = await rawChunks(mx);
  await c.until(/^220 /m);
  c.socket.write('EHLO client.test\r\n');
  await c.until(/^250 /m);
  c.socket.write('QUIT\r\n');
  await c.until(/^221 2\.0\.0 Bye\r\n/m);
  assert.equal(await c.ended, null);
  c.socket.destroy();
  // A client that resets right after reading 221 (smtp-source does): the server takes the next connection as usual.
  const d = await rawChunks(mx);
  await d.until(/^220 /m);
  d.socket.write('QUIT\r\n');
  await d.until(/^221 /m);
  d.socket.resetAndDestroy();
  const e = await p1(mx);
  assert.equal((await e.cmd('NOOP')).code, 250);
  e.close();
});
