/**
 * Delivery wired to the real queue: QueueStore + QueueRunner + SmtpDeliverer + DsnBouncer, next hops are fake
 * MTAs behind the fake DNS. A 5xx recipient becomes an RFC 3464 report queued from <> through the store's receive
 * path and delivered to the sender's MX; a report that itself fails is never bounced (OB-14). Also: DKIM
 * signatures that verify at the receiving end, Maildir and LMTP local transports.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { finished } from 'node:stream/promises';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { QueueStore, QueueRunner } from '../../src/queue/index.ts';
import { MemoryLogger } from '../../src/core/log.ts';
import { startFakeMta, type FakeMta } from '../../src/testing/fake-mta.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import { DsnBouncer, MailauthDkimSigner, generateDkimKey } from '../../src/delivery/index.ts';
import { makeJob, signal, testDeliverer, SIMPLE_BODY } from './delivery-helpers.ts';

let dns: FakeDns;
const fakes: FakeMta[] = [];
const dirs: string[] = [];

before(async () => {
  dns = await startFakeDns();
});
after(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  await dns?.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function fake(options: Parameters<typeof startFakeMta>[0] = {}): Promise<FakeMta> {
  const f = await startFakeMta(options);
  fakes.push(f);
  return f;
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'relayguard-dq-'));
  dirs.push(d);
  return d;
}

function mx(domain: string): void {
  dns.set(domain, { MX: [{ preference: 10, exchange: `mx.${domain}` }] });
  dns.set(`mx.${domain}`, { A: ['127.0.0.1'] });
}

/** Unstuffs what a fake MTA received in DATA (content through "\r\n.\r\n"). */
function unstuff(wire: Buffer): string {
  const s = wire.toString('latin1');
  return s.slice(0, s.length - 3).split('\r\n').map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n');
}

test('a 5xx recipient → DSN queued from <> via the store and delivered to the sender; a failing DSN is never bounced (OB-14)', async () => {
  const dataDir = await tempDir();
  const logger = new MemoryLogger();
  const store = QueueStore.open({ dataDir, logger });
  let rejectDsn = false;
  const f = await fake({
    commands: {
      RCPT: (c) => (/<nobody@/.test(c.arg) || (rejectDsn && /<sender@/.test(c.arg)) ? '550 5.1.1 No such user\r\n' : '250 2.1.5 Ok\r\n'),
    },
  });
  mx('peers.test');
  mx('src.test');
  const enqueue = async (envelope: { sender: ''; recipients: readonly { address: string }[]; mailParams: Record<string, string | true> }, content: Buffer): Promise<void> => {
    const m = await store.beginMessage();
    m.body.end(content);
    await finished(m.body);
    await m.commit({ sender: envelope.sender, recipients: envelope.recipients, clientIp: '127.0.0.1', helo: null, user: null, listener: 'bounce', mailParams: envelope.mailParams });
  };
  const deliverer = testDeliverer(dns, f.port, { logger });
  const bouncer = new DsnBouncer({ hostname: 'relay.test', enqueue, logger });
  const runner = new QueueRunner({ store, deliverer, bouncer, logger, retry: { minimalBackoffMs: 60_000 } });
  try {
    const m = await store.beginMessage();
    m.body.end(Buffer.from(SIMPLE_BODY.replace('a@src.test', 'sender@src.test')));
    await finished(m.body);
    await m.commit({ sender: 'sender@src.test', recipients: [{ address: 'ok@peers.test' }, { address: 'nobody@peers.test' }], clientIp: '127.0.0.1', helo: 'c', user: null, listener: 'mx' });

    await runner.runOnce();
    // The original: ok delivered, nobody bounced → a DSN was queued; the next pass delivers it.
    await runner.runOnce();
    const all = f.sessions.flatMap((s) => s.messages.map((msg, i) => ({ s, msg, i })));
    const dsn = all.find(({ msg }) => /multipart\/report/.test(msg.toString('latin1')));
    assert.ok(dsn, `a DSN reached the sender's MX; logs: ${JSON.stringify(logger.records.map((r) => r.msg))}`);
    const text = unstuff(dsn.msg);
    assert.match(text, /\r\nTo: <sender@src\.test>\r\n/);
    assert.match(text, /Final-Recipient: rfc822; nobody@peers\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx\.peers\.test\r\nDiagnostic-Code: smtp; 550 5\.1\.1 No such user\r\n/);
    assert.match(text, /Content-Type: text\/rfc822-headers\r\n\r\nFrom: sender@src\.test\r\n/);
    assert.ok(dsn.s.commands.some((c) => /^MAIL FROM:<>( |$)/.test(c)), 'DSN sent from <>');
    assert.doesNotMatch(text, /ok@peers\.test/, 'only the failed recipient is reported');

    // OB-14: a DSN whose delivery fails for good is dropped, not bounced again.
    rejectDsn = true;
    const complete = (): number => f.sessions.reduce((n, s) => n + s.messages.filter((x) => x.toString('latin1').endsWith('\r\n.\r\n')).length, 0);
    const before = complete();
    const m2 = await store.beginMessage();
    m2.body.end(Buffer.from(SIMPLE_BODY));
    await finished(m2.body);
    await m2.commit({ sender: 'sender@src.test', recipients: [{ address: 'nobody@peers.test' }], clientIp: '127.0.0.1', helo: 'c', user: null, listener: 'mx' });
    await runner.runOnce();
    await runner.runOnce();
    await runner.runOnce();
    const rcpts = f.sessions.flatMap((s) => s.commands.filter((c) => c.startsWith('RCPT')));
    assert.ok(rcpts.filter((c) => /<sender@src\.test>/.test(c)).length >= 1, 'the second DSN was attempted');
    const after = complete();
    assert.equal(after, before, 'nothing delivered: no bounce of the bounce');
    assert.ok(logger.records.some((r) => r.msg === 'bounce of a bounce discarded' || r.msg === 'bounce of a bounce dropped'), 'logged');
  } finally {
    await runner.stop();
    await deliverer.close();
    await store.close();
  }
});

test('DKIM: mail from a configured domain arrives with a signature that verifies', async () => {
  const f = await fake();
  mx('dkim-peer.test');
  const key = generateDkimKey('src.test', 'rg1');
  const deliverer = testDeliverer(dns, f.port, { dkim: new MailauthDkimSigner({ keys: [key] }) });
  const body = 'From: Alice <a@src.test>\r\nTo: b@dkim-peer.test\r\nSubject: signed\r\nMessage-ID: <k1@src.test>\r\n\r\n.leading dot\r\nbody\r\n';
  const job = makeJob({ recipients: ['b@dkim-peer.test'], body });
  const out = await deliverer.deliver(job, signal());
  assert.equal(out[0]!.outcome, 'delivered');
  const received = unstuff(f.sessions[0]!.messages[0]!);
  assert.match(received, /^DKIM-Signature: /);
  assert.ok(received.endsWith(body));
  const mail = f.sessions[0]!.commands.find((c) => c.startsWith('MAIL'))!;
  assert.equal(mail, `MAIL FROM:<a@src.test> SIZE=${Buffer.byteLength(received)}`, 'SIZE counts the signature');
  const res = await dkimVerify(received, { resolver: async (name: string) => (name === key.dnsName ? [[key.txt]] : Promise.reject(Object.assign(new Error('nx'), { code: 'ENOTFOUND' }))) });
  assert.deepEqual(res.results.map((r: { status: { result: string } }) => r.status.result), ['pass']);
});

test('local transports: Maildir and LMTP', async () => {
  const root = await tempDir();
  const maildir = testDeliverer(dns, 9, { routing: { localDomains: ['local.test'], localTransport: { kind: 'maildir', root } } });
  const out = await maildir.deliver(makeJob({ recipients: ['u@local.test', 'v@LOCAL.test'] }), signal());
  assert.deepEqual(out.map((o) => o.outcome), ['delivered', 'delivered']);
  const files = await readdir(join(root, 'local.test', 'u', 'new'));
  assert.equal(files.length, 1);
  assert.match(await readFile(join(root, 'local.test', 'u', 'new', files[0]!), 'utf8'), /^Return-Path: <a@src\.test>\nDelivered-To: u@local\.test\nFrom: a@src\.test\n/);

  const lmtp = await fake({ commands: { LHLO: '250-lmtp.test\r\n250 PIPELINING\r\n', RCPT: (c) => (/<bad@/.test(c.arg) ? '550 5.1.1 unknown\r\n' : '250 2.1.5 Ok\r\n') } });
  const viaLmtp = testDeliverer(dns, 9, { routing: { localDomains: ['local.test'], localTransport: { kind: 'lmtp', host: '127.0.0.1', port: lmtp.port } } });
  const out2 = await viaLmtp.deliver(makeJob({ recipients: ['a@local.test', 'bad@local.test', 'c@local.test'] }), signal());
  assert.deepEqual(out2.map((o) => o.outcome), ['delivered', 'bounced', 'delivered']);
  const s = lmtp.sessions[0]!;
  assert.equal(s.commands[0], 'LHLO relay.test');
  assert.equal(s.messages.length, 2, 'one transaction per recipient');

  const none = testDeliverer(dns, 9);
  const out3 = await none.deliver(makeJob({ recipients: ['u@local.test'] }), signal());
  assert.equal(out3[0]!.outcome, 'deferred', 'no local transport configured');
});
