/**
 * Delivery against real peers on 127.0.0.1:
 * - a private Postfix as the receiving next hop (MX for peers.test through the fake DNS), delivering into a
 *   Maildir on its side with virtual(8); the stored message is compared byte for byte with what was submitted
 *   (after Postfix's own trace headers at the top, and with LF line ends, as virtual(8) writes them);
 * - Postfix's smtp-sink with its fault options: 4xx/5xx per command (-r/-f), 421 and disconnect (-Q), and a
 *   disconnect without a reply to DATA or to the final dot (-q);
 * - aiosmtpd as a plain next hop.
 * A missing peer fails the test with the package to install; every process is stopped in `after`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chown, mkdtemp, readdir, readFile, rm, chmod } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostfix, hasBinary, type PostfixInstance } from '../../src/testing/postfix.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import { freePort } from '../../src/testing/ports.ts';
import { makeJob, signal, testDeliverer, FAST } from '../e2e/delivery-helpers.ts';
import { requirePeer, PYTHON } from './peers.ts';

const SMTP_SINK = '/usr/sbin/smtp-sink';
const NOBODY = 65534;
const NOGROUP = 65534;

let dns: FakeDns;
let postfix: PostfixInstance | undefined;
let mailDir: string;
const children: ChildProcess[] = [];

before(async () => {
  assert.ok(hasBinary('/usr/sbin/postfix'), '/usr/sbin/postfix is missing: install the Debian package "postfix"');
  requirePeer(SMTP_SINK, 'postfix');
  requirePeer(PYTHON, 'python3');
  dns = await startFakeDns({
    zone: {
      'peers.test': { MX: [{ preference: 10, exchange: 'mx.peers.test' }] },
      'mx.peers.test': { A: ['127.0.0.1'] },
      'sink.test': { MX: [{ preference: 10, exchange: 'mx.sink.test' }] },
      'mx.sink.test': { A: ['127.0.0.1'] },
    },
  });
  mailDir = await mkdtemp(join(tmpdir(), 'relayguard-pfmail-'));
  await chmod(mailDir, 0o755);
  await chown(mailDir, NOBODY, NOGROUP);
  postfix = await startPostfix({
    mode: 'discard',
    relayDomains: ['relay-only.test'],
    extraMain: {
      virtual_mailbox_domains: 'peers.test',
      virtual_mailbox_base: mailDir,
      virtual_mailbox_maps: 'static:Maildir/',
      virtual_uid_maps: `static:${NOBODY}`,
      virtual_gid_maps: `static:${NOGROUP}`,
      virtual_minimum_uid: '100',
      virtual_transport: 'virtual',
      local_header_rewrite_clients: '',
      smtputf8_enable: 'yes',
      message_size_limit: '10240000',
    },
  });
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await postfix?.stop();
  await dns?.close();
  if (mailDir) await rm(mailDir, { recursive: true, force: true });
});

async function waitForFile(dir: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const files = await readdir(dir).catch(() => [] as string[]);
    if (files.length > 0) return join(dir, files[0]!);
    if (Date.now() > deadline) throw new Error(`no file in ${dir} after ${timeoutMs} ms; postfix log:\n${(await postfix?.readLog()) ?? ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Drops the header lines Postfix put on top (trace and delivery headers) with their continuation lines. */
function stripPostfixHeaders(stored: string): string {
  const lines = stored.split('\n');
  let i = 0;
  while (i < lines.length && /^(Return-Path|X-Original-To|Delivered-To|Received):/i.test(lines[i]!)) {
    i++;
    while (i < lines.length && /^[ \t]/.test(lines[i]!)) i++;
  }
  return lines.slice(i).join('\n');
}

test('Postfix next hop: the message lands in its Maildir byte for byte', async () => {
  const body = Buffer.from([
    'From: Alice <alice@src.test>',
    'To: Bob <bob@peers.test>',
    'Subject: interop =?utf-8?q?caf=C3=A9?=',
    'Date: Tue, 2 Jan 2024 03:04:05 +0000',
    'Message-ID: <interop-1@src.test>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    '.a line starting with a dot',
    '..two dots',
    '.',
    'caf\u00e9 8-bit text \u2713',
    `${'x'.repeat(990)}`,
    '',
    'last line',
    '',
  ].join('\r\n'), 'utf8');
  const deliverer = testDeliverer(dns, postfix!.port, { timeouts: { ...FAST, dataDone: 10_000 } });
  const out = await deliverer.deliver(makeJob({ sender: 'alice@src.test', recipients: ['bob@peers.test'], body, mailParams: { BODY: '8BITMIME' } }), signal());
  assert.equal(out[0]!.outcome, 'delivered', JSON.stringify(out));
  assert.match(out[0]!.reply?.enhanced ?? '', /^2\./);
  const file = await waitForFile(join(mailDir, 'Maildir', 'new'), 15_000);
  const stored = await readFile(file);
  const expected = body.toString('latin1').replace(/\r\n/g, '\n');
  assert.equal(stripPostfixHeaders(stored.toString('latin1')), expected);
  assert.match(stored.toString('latin1'), /^Return-Path: <alice@src\.test>\n/);
});

// ---------------------------------------------------------------------------------------------------------

async function waitListening(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startSink(args: string[]): Promise<{ port: number; stop(): void }> {
  const port = await freePort();
  const child = spawn(SMTP_SINK, ['-u', 'nobody', ...args, `127.0.0.1:${port}`, '10'], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  try {
    await waitListening(port);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`smtp-sink ${args.join(' ')} did not start: ${stderr}`, { cause: err });
  }
  return { port, stop: () => child.kill('SIGKILL') };
}

const SINK_CASES: { name: string; args: string[]; outcomes: string[]; status?: RegExp }[] = [
  { name: 'plain sink: delivered', args: [], outcomes: ['delivered', 'delivered'] },
  { name: '-r RCPT (4xx): deferred', args: ['-r', 'RCPT'], outcomes: ['deferred', 'deferred'], status: /^4\./ },
  { name: '-f RCPT (5xx): bounced', args: ['-f', 'RCPT'], outcomes: ['bounced', 'bounced'], status: /^5\./ },
  { name: '-r MAIL (4xx): deferred', args: ['-r', 'MAIL'], outcomes: ['deferred', 'deferred'] },
  { name: '-f MAIL (5xx): bounced', args: ['-f', 'MAIL'], outcomes: ['bounced', 'bounced'] },
  { name: '-f DATA (5xx): bounced', args: ['-f', 'DATA'], outcomes: ['bounced', 'bounced'] },
  { name: '-r . (4xx to the final dot): deferred', args: ['-r', '.'], outcomes: ['deferred', 'deferred'] },
  { name: '-f . (5xx to the final dot): bounced', args: ['-f', '.'], outcomes: ['bounced', 'bounced'] },
  { name: '-Q MAIL (421 and disconnect): deferred', args: ['-Q', 'MAIL'], outcomes: ['deferred', 'deferred'] },
  { name: '-q DATA (disconnect after DATA): deferred', args: ['-q', 'DATA'], outcomes: ['deferred', 'deferred'] },
  { name: '-q . (no reply to the final dot): deferred', args: ['-q', '.'], outcomes: ['deferred', 'deferred'], status: /^4\.4\.2$/ },
  { name: '-Q CONNECT (421 greeting): deferred', args: ['-Q', 'CONNECT'], outcomes: ['deferred', 'deferred'] },
];

for (const c of SINK_CASES) {
  test(`smtp-sink ${c.name}`, async () => {
    const sink = await startSink(c.args);
    try {
      const out = await testDeliverer(dns, sink.port).deliver(makeJob({ recipients: ['a@sink.test', 'b@sink.test'] }), signal());
      assert.deepEqual(out.map((o) => o.outcome), c.outcomes, JSON.stringify(out));
      if (c.status) for (const o of out) assert.match(o.reply?.enhanced ?? '', c.status, JSON.stringify(o));
    } finally {
      sink.stop();
    }
  });
}

test('aiosmtpd as the next hop: delivered, content arrives', async () => {
  const port = await freePort();
  const child = spawn(PYTHON, ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${port}`, '-c', 'aiosmtpd.handlers.Debugging', 'stdout'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  try {
    await waitListening(port, 10_000).catch((err: unknown) => { throw new Error(`aiosmtpd did not start (python3-aiosmtpd installed?): ${stderr}`, { cause: err }); });
    const out = await testDeliverer(dns, port).deliver(makeJob({ recipients: ['a@sink.test', 'b@sink.test'], body: 'Subject: aiosmtpd check\r\n\r\n.dotted\r\nbody\r\n' }), signal());
    assert.deepEqual(out.map((o) => o.outcome), ['delivered', 'delivered'], JSON.stringify(out));
    const deadline = Date.now() + 5000;
    while (!stdout.includes('.dotted') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.match(stdout, /Subject: aiosmtpd check/);
    assert.match(stdout, /\n\.dotted\n|\r?\n\.dotted\r?\n/, 'dot-unstuffed by the peer: exactly one dot');
  } finally {
    child.kill('SIGKILL');
  }
});
