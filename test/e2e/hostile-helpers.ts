/**
 * Shared helpers for the hostile-input e2e suites (test/e2e/hostile-*.test.ts): the P1/P2 prefixes of the
 * catalogue (/work/shared/reference/hostile-inputs.md section 0), queue assertions, and small waits.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Harness } from '../../src/testing/relay-harness.ts';
import { RawSmtpClient, p1, type TestReply } from '../../src/testing/smtp-client.ts';

export { RawSmtpClient, p1, type TestReply };

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Asserts a reply's code (and enhanced code when given), with the transcript in the failure message. */
export function expectReply(r: TestReply, code: number, enhanced?: string | null, c?: RawSmtpClient): void {
  const ctx = `got ${r.lines.join(' | ')}${c ? `\ntranscript:\n${c.transcript}` : ''}`;
  assert.equal(r.code, code, ctx);
  if (enhanced !== undefined) assert.equal(r.enhanced, enhanced, ctx);
}

/** Asserts the reply is in a class: 4 = 4xx, 5 = 5xx, 2 = 2xx. */
export function expectClass(r: TestReply, cls: 2 | 3 | 4 | 5, c?: RawSmtpClient): void {
  assert.equal(Math.floor(r.code / 100), cls, `expected ${cls}xx, got ${r.lines.join(' | ')}${c ? `\ntranscript:\n${c.transcript}` : ''}`);
}

/** P2: after P1, MAIL / RCPT / DATA one at a time (each after the previous reply). */
export async function p2(c: RawSmtpClient, from = 'a@client.test', to = 'u@local.test'): Promise<void> {
  expectReply(await c.cmd(`MAIL FROM:<${from}>`), 250, '2.1.0', c);
  expectReply(await c.cmd(`RCPT TO:<${to}>`), 250, '2.1.5', c);
  expectReply(await c.cmd('DATA'), 354, undefined, c);
}

/** Asserts the server closes the connection (waitClosed) within the time. */
export async function expectClosed(c: RawSmtpClient, timeoutMs = 3000): Promise<void> {
  assert.ok(await c.waitClosed(timeoutMs), `server did not close the connection; transcript:\n${c.transcript}`);
}

/** Asserts the session is still open and in the "ready" state with no transaction (RCPT gets 503 need MAIL). */
export async function expectTxnReset(c: RawSmtpClient): Promise<void> {
  const r = await c.cmd('RCPT TO:<u@local.test>');
  expectReply(r, 503, '5.5.1', c);
  assert.match(r.text, /need MAIL/i);
  expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
}

/** Waits a little and asserts that no further reply bytes arrived (the "exactly one reply" invariant). */
export async function expectNoMoreReplies(c: RawSmtpClient, waitMs = 100): Promise<void> {
  await sleep(waitMs);
  assert.equal(c.unread, '', `unexpected extra reply bytes: ${JSON.stringify(c.unread)}\ntranscript:\n${c.transcript}`);
}

/** Every recipient currently in the queue. */
export function queuedRecipients(h: Harness): string[] {
  return h.queue.list().flatMap((m) => [...m.recipients]);
}

/** The relay invariant: no queued message has a recipient outside the local domain (local.test). */
export function assertNothingRemoteQueued(h: Harness, localDomains: readonly string[] = ['local.test']): void {
  for (const m of h.queue.list()) {
    for (const r of m.recipients) {
      const domain = r.slice(r.lastIndexOf('@') + 1).toLowerCase();
      assert.ok(r.includes('@') && localDomains.includes(domain), `queued a non-local recipient ${r} (message ${m.queueId})`);
    }
  }
}

/** The stored body of a queued message (inline or spool file: our Received header, then the client's bytes). */
export function storedBody(h: Harness, queueId: string): Buffer {
  const body = h.queue.readBody(queueId);
  assert.ok(body, `no queued message ${queueId}`);
  return body;
}

/** The stored body without the Received: trace header the relay prepends. */
export function clientContent(h: Harness, queueId: string): string {
  const s = storedBody(h, queueId).toString('latin1');
  const m = /^Received: [^\r\n]*(?:\r\n\t[^\r\n]*)*\r\n/.exec(s);
  assert.ok(m, `stored body does not start with our Received header: ${JSON.stringify(s.slice(0, 200))}`);
  return s.slice(m[0].length);
}

/** The queue id from a "250 2.0.0 Ok: queued as X" reply. */
export function queueIdOf(r: TestReply): string {
  const m = /queued as (\S+)/.exec(r.text);
  assert.ok(m, `no queue id in ${r.lines.join(' | ')}`);
  return m[1]!;
}

/** Asserts the bytes hold only CRLF line endings and no NUL (what may go out to a next hop). */
export function assertCanonicalText(b: Buffer | string): void {
  const s = typeof b === 'string' ? b : b.toString('latin1');
  assert.doesNotMatch(s, /\r(?!\n)/, 'bare CR stored');
  assert.doesNotMatch(s, /(?<!\r)\n/, 'bare LF stored');
  assert.doesNotMatch(s, /\x00/, 'NUL stored');
}

/**
 * Captures the first flight a Node TLS client sends (a real ClientHello), by connecting to a throw-away TCP
 * server that records the bytes and hangs up.
 */
export async function captureClientHello(servername: string): Promise<Buffer> {
  const server = net.createServer();
  const got = new Promise<Buffer>((resolve) => {
    server.once('connection', (s) => {
      s.once('data', (d: Buffer) => { resolve(d); s.destroy(); });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const client = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
  client.on('error', () => {});
  try {
    return await got;
  } finally {
    client.destroy();
    server.close();
  }
}

/** A PROXY protocol v2 header (PROXY command, TCP over IPv4). */
export function proxyV2(src: string, dst: string, srcPort: number, dstPort: number): Buffer {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const addr = Buffer.alloc(12);
  src.split('.').forEach((o, i) => { addr[i] = Number(o); });
  dst.split('.').forEach((o, i) => { addr[4 + i] = Number(o); });
  addr.writeUInt16BE(srcPort, 8);
  addr.writeUInt16BE(dstPort, 10);
  const hdr = Buffer.from([0x21, 0x11, 0x00, 0x0c]); // v2 PROXY, AF_INET STREAM, length 12
  return Buffer.concat([sig, hdr, addr]);
}

/** Connects and reads the greeting; asserts it is 220. */
export async function connect220(port: number, options: { localAddress?: string; tls?: boolean } = {}): Promise<RawSmtpClient> {
  const c = await RawSmtpClient.connect(port, options);
  expectReply(await c.readReply(), 220, undefined, c);
  return c;
}

/** Counts "NNN " final reply lines with a given code in a transcript. */
export function countFinalReplies(transcript: string, code: number): number {
  let n = 0;
  const needle = `${code} `;
  for (const line of transcript.split('\r\n')) if (line.startsWith(needle)) n++;
  return n;
}
