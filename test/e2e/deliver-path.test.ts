/**
 * The deliver path end to end, with `relayguard serve` as a real child process (delivery on):
 *
 *   (a) swaks submits with AUTH PLAIN over submission + STARTTLS → relayguard queues it → the runner looks up
 *       the MX of remote.test in a fake DNS (→ 127.0.0.1, port = a private Postfix) → Postfix's virtual(8)
 *       stores it in a Maildir: the body arrives intact;
 *   (b) Postfix refuses the recipient (550 5.1.1, unknown in its virtual mailbox table) → relayguard queues an
 *       RFC 3464 report from <> → it lands in the sender's local Maildir under relayguard's data dir;
 *   (c) kill -9 of relayguard while deliveries to a slow next hop are in flight, restart on the same data dir and
 *       ports → every message reaches the next hop at least once (duplicates allowed and reported, losses not).
 *
 * MX on loopback: remote.test's MX (from the fake DNS) points at 127.0.0.1, which serve would refuse as a loop
 * without `delivery.allowLoopbackMx` (src/delivery/mx.ts); our own listeners stay refused either way.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import { startPostfix, hasBinary, type PostfixInstance } from '../../src/testing/postfix.ts';
import { startFakeMta, type FakeMta, type FakeStep } from '../../src/testing/fake-mta.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import { OUTSIDE, SWAKS, addUser, cli, explain, requirePeer, run } from '../interop/peers.ts';

/** delivery.* keys that send remote mail by MX (fake DNS: MX remote.test -> 127.0.0.1) to 127.0.0.1:port. */
function routeTo(port: number): Record<string, unknown> {
  return { dnsServers: [`${dns.host}:${dns.port}`], mxPort: port, allowLoopbackMx: true };
}

const NOBODY = 65534;
const NOGROUP = 65534;
const ALICE = 'alice@local.test';
const ALICE_PW = 'deliver-path-alice-pw';

const FAST_RETRY = { minimalBackoff: '1s', maximalBackoff: '2s', lifetime: '1h' };

let dns: FakeDns;
let postfix: PostfixInstance | undefined;
let pfMail: string;
let serve: ServeProcess | undefined;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  requirePeer(SWAKS, 'swaks');
  assert.ok(hasBinary('/usr/sbin/postfix'), '/usr/sbin/postfix is missing: install the Debian package "postfix"');
  dns = await startFakeDns({
    zone: {
      'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] },
      'mx.remote.test': { A: ['127.0.0.1'] },
      'slow.test': { MX: [{ preference: 10, exchange: 'mx.slow.test' }] },
      'mx.slow.test': { A: ['127.0.0.1'] },
    },
  });
  // Postfix: remote.test is a virtual mailbox domain with one known user; unknown users get 550 5.1.1 at RCPT.
  pfMail = await mkdtemp(join(tmpdir(), 'relayguard-deliver-path-pf-'));
  await chmod(pfMail, 0o755);
  const boxes = join(pfMail, 'boxes');
  const map = join(pfMail, 'vmailbox');
  await writeFile(map, 'bob@remote.test bob/Maildir/\n', { mode: 0o644 });
  await mkdir(boxes, { mode: 0o755 });
  await chown(boxes, NOBODY, NOGROUP);
  postfix = await startPostfix({
    mode: 'discard',
    relayDomains: ['relay-only.test'],
    extraMain: {
      virtual_mailbox_domains: 'remote.test',
      virtual_mailbox_base: boxes,
      virtual_mailbox_maps: `texthash:${map}`,
      virtual_uid_maps: `static:${NOBODY}`,
      virtual_gid_maps: `static:${NOGROUP}`,
      virtual_minimum_uid: '100',
      virtual_transport: 'virtual',
      local_header_rewrite_clients: '',
      message_size_limit: '10240000',
    },
  });
  serve = await startServe({
    config: {
      trustedNetworks: ['127.0.0.1/32'], // swaks binds 127.0.0.2: an outside client that must AUTH
      delivery: { enabled: true, localTransport: { maildir: 'mailboxes' }, retry: FAST_RETRY, ...routeTo(postfix.port) },
    },
  });
  await addUser(serve, ALICE, ALICE_PW);
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await serve?.stop();
  await serve?.cleanup();
  await postfix?.stop();
  await dns?.close();
  if (pfMail) await rm(pfMail, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits for a file in `dir` whose content matches `pattern`; returns its content. */
async function waitForMail(dir: string, pattern: RegExp, timeoutMs: number, explainFailure: () => Promise<string>): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const f of await readdir(dir).catch(() => [] as string[])) {
      const text = await readFile(join(dir, f), 'latin1').catch(() => '');
      if (pattern.test(text)) return text;
    }
    if (Date.now() > deadline) throw new Error(`no mail matching ${pattern} in ${dir} after ${timeoutMs} ms\n${await explainFailure()}`);
    await sleep(100);
  }
}

function serveLog(s: ServeProcess, pred: (l: Record<string, unknown>) => boolean): Record<string, unknown>[] {
  return s.logs.filter(pred);
}

async function diagnostics(): Promise<string> {
  const logs = serve!.logs.filter((l) => /recipient|next hop|bounce|queued|deliver/i.test(String(l['msg']))).map((l) => JSON.stringify(l));
  return `--- relayguard log (delivery)\n${logs.slice(-40).join('\n')}\n--- postfix maillog\n${(await postfix?.readLog()) ?? ''}`;
}

function swaksSubmit(to: string, data: string): ReturnType<typeof run> {
  return run(SWAKS, [
    '--server', `127.0.0.1:${serve!.ports.submission}`, '--local-interface', OUTSIDE, '--timeout', '10s',
    '--helo', 'swaks.deliver-path.test', '-tls', '--auth', 'PLAIN', '--auth-user', ALICE, '--auth-password', ALICE_PW,
    '--from', ALICE, '--to', to, '--data', '-',
  ], { timeoutMs: 20_000, input: data });
}

function uniqueId(tag: string): string {
  return `${tag}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}@deliver-path.test`;
}

test('(a) swaks AUTH + STARTTLS → relayguard → next hop on loopback → Postfix Maildir, body intact', async (t) => {
  const id = uniqueId('a');
  const body = [
    'First line of the body.',
    '.a line starting with a dot',
    '..two dots',
    '',
    `${'x'.repeat(900)}`,
    'tab\there, trailing spaces   ',
    'last line',
  ].join('\n');
  const data = [
    `From: Alice <${ALICE}>`,
    'To: Bob <bob@remote.test>',
    'Subject: deliver path (a)',
    'Date: Tue, 2 Jan 2024 03:04:05 +0000',
    `Message-ID: <${id}>`,
    '',
    body, // no newline at the end: swaks adds CRLF before its "." (with one here, the body would gain a blank line)
  ].join('\n');
  const r = await swaksSubmit('bob@remote.test', data);
  assert.equal(r.code, 0, explain(r));
  assert.match(r.stdout, /=== TLS started with cipher TLSv1\.[23]/, explain(r));
  assert.match(r.stdout, /<~ +235 2\.7\.0/, explain(r));
  assert.match(r.stdout, /<~ +250 2\.0\.0 Ok: queued as /, explain(r));

  const stored = await waitForMail(join(pfMail, 'boxes', 'bob', 'Maildir', 'new'), new RegExp(`Message-ID: <${id.replace(/[.]/g, '\\.')}>`), 30_000, diagnostics);
  // virtual(8) stores with LF line ends. Headers: Postfix's and relayguard's trace lines on top, then ours as sent.
  const sep = stored.indexOf('\n\n');
  assert.ok(sep > 0, stored);
  assert.equal(stored.slice(sep + 2), `${body}\n`, 'the body arrives byte for byte');
  const headers = stored.slice(0, sep + 1);
  assert.match(headers, /^Return-Path: <alice@local\.test>\n/);
  assert.match(headers, /\nReceived: from [^\n]*(\n[ \t][^\n]*)*by mx\.local\.test/i, 'relayguard added its Received line');
  assert.ok(headers.endsWith(`From: Alice <${ALICE}>\nTo: Bob <bob@remote.test>\nSubject: deliver path (a)\nDate: Tue, 2 Jan 2024 03:04:05 +0000\nMessage-ID: <${id}>\n`), headers);

  const delivered = serveLog(serve!, (l) => l['msg'] === 'recipient delivered' && l['rcpt'] === 'bob@remote.test');
  assert.ok(delivered.length >= 1, await diagnostics());
  assert.ok(dns.queries.some((q) => q.name === 'remote.test' && q.type === 'MX'), `no MX query for remote.test: ${JSON.stringify(dns.queries)}`);
  assert.ok(delivered.some((l) => /mx\.remote\.test/.test(String(l['relay']))), JSON.stringify(delivered));
  // Postfix saw it come from relayguard (its Received line names relayguard's EHLO).
  assert.match(headers, /Received: from mx\.local\.test \(/);
});

test('(b) Postfix refuses the recipient (550 5.1.1) → a DSN from <> lands in alice\'s local Maildir', async (t) => {
  const id = uniqueId('b');
  const data = [
    `From: Alice <${ALICE}>`,
    'To: <nobody@remote.test>',
    'Subject: deliver path (b), will bounce',
    `Message-ID: <${id}>`,
    '',
    'This one has nowhere to go.',
  ].join('\n');
  const r = await swaksSubmit('nobody@remote.test', data);
  assert.equal(r.code, 0, explain(r));
  assert.match(r.stdout, /<~ +250 2\.0\.0 Ok: queued as /, explain(r));

  const box = join(serve!.dataDir, 'mailboxes', 'local.test', 'alice', 'new');
  const dsn = await waitForMail(box, new RegExp(id.replace(/[.]/g, '\\.')), 30_000, diagnostics);
  assert.match(dsn, /^Return-Path: <>\n/, 'delivered with the null sender');
  assert.match(dsn, /\nDelivered-To: alice@local\.test\n/);
  assert.match(dsn, /\nContent-Type: multipart\/report;[^\n]*(\n[ \t][^\n]*)*report-type="?delivery-status"?/i);
  assert.match(dsn, /\nTo: <?alice@local\.test>?\n/);
  assert.match(dsn, /\nFinal-Recipient: rfc822; ?nobody@remote\.test\n/i);
  assert.match(dsn, /\nAction: failed\n/);
  assert.match(dsn, /\nStatus: 5\.\d{1,3}\.\d{1,3}\n/);
  assert.match(dsn, /\nStatus: 5\.1\.1\n/, 'Postfix\'s enhanced code is carried over');
  assert.match(dsn, /\nDiagnostic-Code: smtp; ?550 5\.1\.1 [^\n]*nobody@remote\.test/i);
  assert.match(dsn, /Content-Type: (text\/rfc822-headers|message\/rfc822)/i);
  assert.match(dsn, new RegExp(`Message-ID: <${id.replace(/[.]/g, '\\.')}>`), 'the original headers are returned');

  const bounced = serveLog(serve!, (l) => l['msg'] === 'recipient bounced' && l['rcpt'] === 'nobody@remote.test');
  assert.equal(bounced.length, 1, await diagnostics());
  assert.match(String(bounced[0]!['status']), /^5\.1\.1$/);
  // The report itself went through the queue from <> and was delivered locally.
  const q = await cli(serve!, ['queue', 'list', '--json']);
  assert.equal(q.code, 0, explain(q));
  assert.equal(q.stdout.trim(), '', `the queue is empty once the DSN is delivered:\n${q.stdout}`);
});

test('(c) kill -9 of relayguard with deliveries in flight: after a restart every message arrives at least once', async (t) => {
  const N = 30;
  let slow = true;
  const ackDelayMs = 3000;
  const ids = Array.from({ length: N }, (_, i) => uniqueId(`c${i}`));
  // The slow next hop: answers the final dot after ackDelayMs while `slow`, at once afterwards.
  const sink: FakeMta = await startFakeMta({
    commands: {
      DATA: (): FakeStep => ({
        reply: '354 End data with <CR><LF>.<CR><LF>\r\n',
        then: 'data',
        data: { end: { delayMs: slow ? ackDelayMs : 0, reply: '250 2.0.0 Ok: queued\r\n' } },
      }),
    },
  });
  cleanups.push(() => sink.close());
  const dataDir = await mkdtemp(join(tmpdir(), 'relayguard-deliver-path-kill-'));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const config = { delivery: { enabled: true, localTransport: { maildir: 'mailboxes' }, retry: FAST_RETRY, ...routeTo(sink.port) } };
  let rg = await startServe({ dataDir, config });
  cleanups.push(() => rg.stop());
  const ports = rg.ports;

  // Queue N messages over mx from 127.0.0.1 (trusted: relays without AUTH), one session.
  const c = await p1(ports.mx);
  try {
    for (const [i, id] of ids.entries()) {
      assert.equal((await c.cmd('MAIL FROM:<sender@local.test>')).code, 250);
      assert.equal((await c.cmd(`RCPT TO:<user${i}@slow.test>`)).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      const reply = await c.cmd(`From: sender@local.test\r\nTo: user${i}@slow.test\r\nSubject: kill test ${i}\r\nMessage-ID: <${id}>\r\n\r\nbody ${i}\r\n.`, 10_000);
      assert.equal(reply.code, 250, reply.text);
    }
    await c.cmd('QUIT');
  } finally {
    c.close();
  }

  // Wait until deliveries are in flight: the sink holds complete messages it has not answered yet.
  const complete = (): Buffer[] => sink.sessions.flatMap((s) => s.messages.filter((m) => m.subarray(-5).toString('latin1') === '\r\n.\r\n'));
  const deadline = Date.now() + 20_000;
  while (complete().length < 5) {
    if (Date.now() > deadline) throw new Error(`no delivery reached the slow sink within 20 s (sessions: ${sink.sessions.length})`);
    await sleep(50);
  }
  const beforeKill = complete().length;
  const deliveredBeforeKill = serveLog(rg, (l) => l['msg'] === 'recipient delivered').length;
  await rg.kill9();
  t.diagnostic(`SIGKILL with ${beforeKill} message(s) received by the sink (unacknowledged, ${ackDelayMs} ms ack delay), ` +
    `${deliveredBeforeKill} recorded as delivered by relayguard`);
  assert.ok(deliveredBeforeKill < N, 'the kill came while deliveries were still outstanding');

  slow = false;
  rg = await startServe({ dataDir, ports, config });
  cleanups.push(() => rg.stop());

  // Every Message-ID at the sink, and relayguard's queue empty (it knows all were delivered).
  const idOf = (m: Buffer): string | null => /\r\nMessage-ID: <([^>]+)>\r\n/i.exec(`\r\n${m.toString('latin1')}`)?.[1] ?? null;
  const until = Date.now() + 60_000;
  for (;;) {
    const seen = new Set(complete().map(idOf));
    if (ids.every((id) => seen.has(id))) break;
    if (Date.now() > until) {
      const missing = ids.filter((id) => !seen.has(id));
      assert.fail(`lost after kill -9: ${missing.length} of ${N} never reached the next hop: ${missing.join(', ')}`);
    }
    await sleep(100);
  }
  const waitEmpty = Date.now() + 30_000;
  for (;;) {
    const q = await cli(rg, ['queue', 'list', '--json']);
    assert.equal(q.code, 0, explain(q));
    if (q.stdout.trim() === '') break;
    if (Date.now() > waitEmpty) assert.fail(`relayguard's queue is not empty after every message arrived:\n${q.stdout}`);
    await sleep(200);
  }
  const counts = new Map<string, number>();
  for (const m of complete()) {
    const id = idOf(m);
    if (id !== null) counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const dups = [...counts.values()].filter((n) => n > 1);
  t.diagnostic(`all ${N} Message-IDs arrived; ${complete().length} copies in all, ${dups.length} message(s) duplicated ` +
    `(${dups.reduce((a, n) => a + n - 1, 0)} extra copies): at-least-once`);
  for (const id of ids) assert.ok((counts.get(id) ?? 0) >= 1, id);
  assert.equal([...counts.keys()].filter((k) => !ids.includes(k)).length, 0, 'nothing unexpected arrived');
  await rg.stop();
});
