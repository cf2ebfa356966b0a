/**
 * OB-01..OB-15 (hostile-inputs.md 1.9), RL-28, TLS-12, TLS-13 and SM-16 on the delivery side: the real
 * SmtpDeliverer against a scripted fake MTA (src/testing/fake-mta.ts) and a fake DNS server (fake-dns.ts), all on
 * 127.0.0.1. MX records carry no port: the deliverer's mxPort points at the fake's.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeMta, type FakeMta, type FakeCommand, type FakeSession } from '../../src/testing/fake-mta.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import { generateSelfSigned } from '../../src/smtp/tls-cert.ts';
import { StaticTlsPolicy } from '../../src/delivery/index.ts';
import type { RecipientOutcome } from '../../src/queue/deliverer.ts';
import { FAST, makeJob, signal, testDeliverer } from './delivery-helpers.ts';

let dns: FakeDns;
const fakes: FakeMta[] = [];
let cert: { cert: string; key: string };

before(async () => {
  dns = await startFakeDns();
  cert = await generateSelfSigned('mx.tls.test');
});
after(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  await dns?.close();
});

async function fake(options: Parameters<typeof startFakeMta>[0] = {}): Promise<FakeMta> {
  const f = await startFakeMta(options);
  fakes.push(f);
  return f;
}

let n = 0;
/** A fresh domain whose single MX is mx.<domain> → 127.0.0.1. */
function domainWithMx(): string {
  const d = `d${++n}.test`;
  dns.set(d, { MX: [{ preference: 10, exchange: `mx.${d}` }] });
  dns.set(`mx.${d}`, { A: ['127.0.0.1'] });
  return d;
}

function byAddress(outcomes: readonly RecipientOutcome[]): Record<string, RecipientOutcome> {
  return Object.fromEntries(outcomes.map((o) => [o.address, o]));
}

function status(o: RecipientOutcome | undefined): string | undefined {
  return o?.reply?.enhanced;
}

function rcptOf(cmd: FakeCommand): string {
  return /<([^>]*)>/.exec(cmd.arg)?.[1] ?? '';
}

test('one transaction carries every recipient of a destination; MAIL/RCPT/DATA pipelined', async () => {
  const f = await fake();
  const d = domainWithMx();
  const job = makeJob({ recipients: [`a@${d}`, `b@${d}`, `c@${d}`] });
  const out = await testDeliverer(dns, f.port).deliver(job, signal());
  assert.deepEqual(out.map((o) => o.outcome), ['delivered', 'delivered', 'delivered']);
  assert.equal(out[0]!.remoteMta, `mx.${d} [127.0.0.1]`);
  const s = f.sessions[0]!;
  assert.equal(f.sessions.length, 1);
  assert.equal(s.commands.filter((c) => c.startsWith('MAIL')).length, 1);
  assert.equal(s.commands.filter((c) => c.startsWith('RCPT')).length, 3);
  assert.match(s.commands.find((c) => c.startsWith('MAIL'))!, /^MAIL FROM:<a@src\.test> SIZE=\d+$/);
  // PIPELINING: MAIL, the RCPTs and DATA arrived in one chunk.
  assert.ok(s.chunks.some((c) => /^MAIL FROM:.*\r\nRCPT TO:.*\r\nRCPT TO:.*\r\nRCPT TO:.*\r\nDATA\r\n$/s.test(c.toString('latin1'))), 'pipelined group');
});

test('OB-01: RCPT 450/451 defers that recipient; the others are delivered', async () => {
  const f = await fake({ commands: { RCPT: (c) => (rcptOf(c).startsWith('busy') ? '450 4.2.0 Mailbox busy\r\n' : rcptOf(c).startsWith('later') ? '451 4.3.0 Try later\r\n' : '250 2.1.5 Ok\r\n') } });
  const d = domainWithMx();
  const out = byAddress(await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`ok@${d}`, `busy@${d}`, `later@${d}`] }), signal()));
  assert.equal(out[`ok@${d}`]!.outcome, 'delivered');
  assert.equal(out[`busy@${d}`]!.outcome, 'deferred');
  assert.equal(status(out[`busy@${d}`]), '4.2.0');
  assert.equal(out[`busy@${d}`]!.diagnostic, undefined, 'a next hop reply, not a local diagnostic');
  assert.equal(out[`later@${d}`]!.outcome, 'deferred');
  assert.equal(f.sessions[0]!.messages.length, 1);
});

test('OB-02: RCPT 550 5.1.1 bounces that recipient only', async () => {
  const f = await fake({ commands: { RCPT: (c) => (rcptOf(c).startsWith('nobody') ? '550 5.1.1 <nobody>: Recipient address rejected\r\n' : '250 2.1.5 Ok\r\n') } });
  const d = domainWithMx();
  const out = byAddress(await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`ok@${d}`, `nobody@${d}`] }), signal()));
  assert.equal(out[`ok@${d}`]!.outcome, 'delivered');
  assert.equal(out[`nobody@${d}`]!.outcome, 'bounced');
  assert.equal(out[`nobody@${d}`]!.reply?.code, 550);
  assert.equal(status(out[`nobody@${d}`]), '5.1.1');
});

test('OB-03: greeting 421 or 554 → the next MX; all MX refusing → deferred, never bounced', async () => {
  const bad421 = await fake({ host: '127.0.0.1', greeting: { reply: '421 4.3.2 Service not available\r\n', then: 'close' } });
  const good = await fake({ host: '127.0.0.2' });
  const d = `ob03-${++n}.test`;
  dns.set(d, { MX: [{ preference: 10, exchange: `mx1.${d}` }, { preference: 20, exchange: `mx2.${d}` }] });
  dns.set(`mx1.${d}`, { A: ['127.0.0.1'] });
  dns.set(`mx2.${d}`, { A: ['127.0.0.2'] });
  const ports = (host: string): number => (host.startsWith('mx1.') ? bad421.port : good.port);
  const out = await testDeliverer(dns, ports).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  assert.equal(out[0]!.remoteMta, `mx2.${d} [127.0.0.2]`);
  assert.equal(bad421.sessions.length, 1);
  assert.equal(good.sessions[0]!.messages.length, 1);

  const bad554 = await fake({ greeting: '554 5.7.1 Go away\r\n' });
  const d2 = domainWithMx();
  const out2 = await testDeliverer(dns, bad554.port).deliver(makeJob({ recipients: [`u@${d2}`] }), signal());
  assert.equal(out2[0]!.outcome, 'deferred');
  assert.match(out2[0]!.diagnostic ?? '', /refused to talk to me: 554/);
  assert.equal(bad554.sessions[0]!.commands.some((c) => c.startsWith('MAIL')), false);
});

test('OB-04: connection closed half-way through the body, or reset → deferred (lost connection while sending message body)', async () => {
  for (const data of [{ closeAfterBytes: 40 }, { resetAfterBytes: 40 }]) {
    const f = await fake({ commands: { DATA: { reply: '354 go\r\n', then: 'data', data } } });
    const d = domainWithMx();
    const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`], body: `Subject: x\r\n\r\n${'line of text\r\n'.repeat(20000)}` }), signal());
    assert.equal(out[0]!.outcome, 'deferred', JSON.stringify(data));
    assert.equal(status(out[0]), '4.4.2');
    assert.match(out[0]!.diagnostic ?? '', /while sending message body|Lost connection|ECONNRESET/i);
  }
});

test('OB-05: no reply to the final dot → deferred after the data-done timeout (never retried elsewhere in the attempt)', async () => {
  const f = await fake({ commands: { DATA: { reply: '354 go\r\n', then: 'data', data: { end: 'none' } } } });
  const second = await fake({ host: '127.0.0.2' });
  const d = `ob05-${++n}.test`;
  dns.set(d, { MX: [{ preference: 10, exchange: `mx1.${d}` }, { preference: 20, exchange: `mx2.${d}` }] });
  dns.set(`mx1.${d}`, { A: ['127.0.0.1'] });
  dns.set(`mx2.${d}`, { A: ['127.0.0.2'] });
  const t0 = Date.now();
  const out = await testDeliverer(dns, (h) => (h.startsWith('mx1.') ? f.port : second.port), { timeouts: { ...FAST, dataDone: 400 } })
    .deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.match(out[0]!.diagnostic ?? '', /Timed out .*end of data/);
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(second.sessions.length, 0, 'the message may have arrived: not sent to another MX');
});

test('OB-06: hostile replies end the attempt with a deferral, bounded memory', async () => {
  const cases: [string, Parameters<typeof startFakeMta>[0]][] = [
    ['2500 ok', { commands: { MAIL: '2500 ok\r\n' } }],
    ['25', { commands: { MAIL: '25\r\n' } }],
    ['no CRLF before close', { commands: { RCPT: { reply: '250 ok', then: 'close' } } }],
    ['endless 250- continuations', { commands: { MAIL: { reply: '250-more\r\n'.repeat(5000) } } }],
    ['1 MB reply line', { commands: { MAIL: { reply: `250 ${'x'.repeat(1024 * 1024)}\r\n` } } }],
    ['NUL bytes', { commands: { MAIL: '250 o\0k\r\n' } }],
    ['changed code mid-reply', { commands: { EHLO: '250-fake.test\r\n550 PIPELINING\r\n' } }],
  ];
  for (const [name, options] of cases) {
    const f = await fake(options);
    const d = domainWithMx();
    const before = process.memoryUsage().heapUsed;
    const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
    assert.equal(out[0]!.outcome, 'deferred', name);
    assert.ok(process.memoryUsage().heapUsed - before < 64 * 1024 * 1024, `${name}: memory bounded`);
    assert.equal(f.sessions[0]!.messages.length, 0, `${name}: no message sent`);
  }
});

test('OB-07: 452 after some RCPTs → the rest go in another transaction; 552 at RCPT is temporary too', async () => {
  for (const code of ['452 4.5.3 Too many recipients', '552 5.5.3 Too many recipients']) {
    let inTx = 0;
    const f = await fake({
      commands: {
        MAIL: () => { inTx = 0; return '250 2.1.0 Ok\r\n'; },
        RCPT: () => (++inTx > 2 ? `${code}\r\n` : '250 2.1.5 Ok\r\n'),
      },
    });
    const d = domainWithMx();
    const rcpts = [1, 2, 3, 4, 5].map((i) => `r${i}@${d}`);
    const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: rcpts }), signal());
    assert.deepEqual(out.map((o) => o.outcome), ['delivered', 'delivered', 'delivered', 'delivered', 'delivered'], code);
    assert.equal(f.sessions.length, 1, 'same connection');
    assert.equal(f.sessions[0]!.messages.length, 3, 'three transactions of at most two recipients');
  }
  // A hop that takes no recipient at all: deferred (no endless loop).
  const f = await fake({ commands: { RCPT: '452 4.5.3 Too many recipients\r\n' } });
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`a@${d}`, `b@${d}`] }), signal());
  assert.deepEqual(out.map((o) => o.outcome), ['deferred', 'deferred']);
  assert.equal(status(out[0]), '4.5.3');
});

test('OB-08: MX lookup SERVFAIL or timeout → deferred 4.4.3, no connection', async () => {
  const f = await fake();
  for (const mode of ['SERVFAIL', 'TIMEOUT'] as const) {
    const d = `ob08-${mode.toLowerCase()}-${++n}.test`;
    dns.set(d, { mode });
    const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
    assert.equal(out[0]!.outcome, 'deferred', mode);
    assert.equal(status(out[0]), '4.4.3', mode);
  }
  // SERVFAIL on the MX host's address lookup: deferred as well.
  const d = `ob08-host-${++n}.test`;
  dns.set(d, { MX: [{ preference: 10, exchange: `mx.${d}` }] });
  dns.set(`mx.${d}`, { mode: 'SERVFAIL' });
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.equal(status(out[0]), '4.4.3');
  assert.equal(f.sessions.length, 0);
});

test('OB-09: NXDOMAIN → bounced 5.4.4 (Host or domain name not found)', async () => {
  const f = await fake();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: ['u@no-such-domain.test'] }), signal());
  assert.equal(out[0]!.outcome, 'bounced');
  assert.equal(status(out[0]), '5.4.4');
  assert.match(out[0]!.diagnostic ?? '', /Host or domain name not found/);
  assert.equal(f.sessions.length, 0);
});

test('OB-10: no MX records (ENODATA) → implicit MX: the domain A record', async () => {
  const f = await fake();
  const d = `ob10-${++n}.test`;
  dns.set(d, { A: ['127.0.0.1'] });
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  assert.equal(out[0]!.remoteMta, `${d} [127.0.0.1]`);
  assert.equal(f.sessions[0]!.messages.length, 1);
});

test('OB-11: null MX "MX 0 ." → bounced 5.1.10 without connecting', async () => {
  const f = await fake();
  const d = `ob11-${++n}.test`;
  dns.set(d, { MX: [{ preference: 0, exchange: '.' }], A: ['127.0.0.1'] });
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'bounced');
  assert.equal(status(out[0]), '5.1.10');
  assert.match(out[0]!.diagnostic ?? '', /does not accept mail \(nullMX\)/);
  assert.equal(f.sessions.length, 0);
  assert.ok(!dns.queries.some((q) => q.name === d && q.type === 'A'), 'no A fallback for a null MX');
});

test('OB-12: REFUSED from the resolver → deferred 4.4.3 (a broken resolver never bounces mail)', async () => {
  const d = `ob12-${++n}.test`;
  dns.set(d, { mode: 'REFUSED' });
  const out = await testDeliverer(dns, 9).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.equal(status(out[0]), '4.4.3');
});

test('OB-13: destination down (connection refused) → deferred 4.4.1 with the connect diagnostic', async () => {
  const f = await fake();
  const port = f.port;
  await f.close();
  const d = domainWithMx();
  const out = await testDeliverer(dns, port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.equal(status(out[0]), '4.4.1');
  assert.match(out[0]!.diagnostic ?? '', /connect to mx\..*ECONNREFUSED/);
});

test('OB-14 (delivery side): a bounce leaves with MAIL FROM:<>', async () => {
  const f = await fake();
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ sender: '', recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  assert.match(f.sessions[0]!.commands.find((c) => c.startsWith('MAIL'))!, /^MAIL FROM:<>( |$)/);
});

test('OB-15 / RL-28: MX pointing at loopback, a private address or our own listener → bounced 5.4.6 "loops back to myself"', async () => {
  const f = await fake();
  const d = domainWithMx();
  // Production defaults: loopback is ourselves.
  let out = await testDeliverer(dns, f.port, { allowLoopback: false }).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'bounced');
  assert.equal(status(out[0]), '5.4.6');
  assert.match(out[0]!.diagnostic ?? '', new RegExp(`mail for ${d.replace('.', '\\.')} loops back to myself`));
  // Our own listener (address and port) even when loopback is allowed.
  out = await testDeliverer(dns, f.port, { self: [{ address: '0.0.0.0', port: f.port }] }).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'bounced');
  assert.equal(status(out[0]), '5.4.6');
  // RFC 1918.
  const p = `rl28-private-${++n}.test`;
  dns.set(p, { MX: [{ preference: 10, exchange: `mx.${p}` }] });
  dns.set(`mx.${p}`, { A: ['10.1.2.3'] });
  out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${p}`] }), signal());
  assert.equal(out[0]!.outcome, 'bounced');
  assert.equal(status(out[0]), '5.4.6');
  assert.equal(f.sessions.length, 0);
  // We are a backup MX (preference 20) and a better MX exists: it gets the mail; hosts at our preference or worse are cut.
  const better = await fake({ host: '127.0.0.2' });
  const b = `rl28-backup-${++n}.test`;
  dns.set(b, { MX: [{ preference: 10, exchange: `primary.${b}` }, { preference: 20, exchange: `us.${b}` }, { preference: 30, exchange: `worse.${b}` }] });
  dns.set(`primary.${b}`, { A: ['127.0.0.2'] });
  dns.set(`us.${b}`, { A: ['127.0.0.1'] });
  dns.set(`worse.${b}`, { A: ['127.0.0.3'] });
  out = await testDeliverer(dns, better.port, { self: [{ address: '127.0.0.1', port: better.port }] }).deliver(makeJob({ recipients: [`u@${b}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  assert.equal(out[0]!.remoteMta, `primary.${b} [127.0.0.2]`);
});

test('EHLO refused → HELO fallback', async () => {
  const f = await fake({ commands: { EHLO: '502 5.5.2 Error: command not recognized\r\n' } });
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  assert.ok(f.sessions[0]!.commands.includes('HELO relay.test'));
  assert.match(f.sessions[0]!.commands.find((c) => c.startsWith('MAIL'))!, /^MAIL FROM:<a@src\.test>$/, 'no ESMTP parameters after HELO');
});

test('SIZE: a message larger than the advertised limit bounces 5.3.4 without MAIL', async () => {
  const f = await fake({ capabilities: ['PIPELINING', 'SIZE 100'] });
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`], body: `Subject: big\r\n\r\n${'x'.repeat(500)}\r\n` }), signal());
  assert.equal(out[0]!.outcome, 'bounced');
  assert.equal(status(out[0]), '5.3.4');
  assert.equal(f.sessions[0]!.commands.some((c) => c.startsWith('MAIL')), false);
});

test('connection reuse: the next job to the same next hop uses the idle connection', async () => {
  const f = await fake();
  const d = domainWithMx();
  const deliverer = testDeliverer(dns, f.port, { connectionCache: { idleTimeoutMs: 2000 } });
  try {
    for (let i = 0; i < 3; i++) {
      // Each job's signal fires after its job: the cached connection must not die with it.
      const ac = new AbortController();
      const out = await deliverer.deliver(makeJob({ recipients: [`u${i}@${d}`] }), ac.signal);
      ac.abort(new Error('the runner cleans up the finished job'));
      assert.equal(out[0]!.outcome, 'delivered');
    }
    assert.equal(f.sessions.length, 1);
    assert.equal(f.sessions[0]!.messages.length, 3);
  } finally {
    await deliverer.close();
  }
  // A cached connection the server dropped meanwhile is replaced transparently.
  const g = await fake();
  const d2 = domainWithMx();
  const deliverer2 = testDeliverer(dns, g.port, { connectionCache: { idleTimeoutMs: 5000 } });
  try {
    assert.equal((await deliverer2.deliver(makeJob({ recipients: [`a@${d2}`] }), signal()))[0]!.outcome, 'delivered');
    (await g.session(0)).end();
    await g.sessions[0]!.closed;
    assert.equal((await deliverer2.deliver(makeJob({ recipients: [`b@${d2}`] }), signal()))[0]!.outcome, 'delivered');
    assert.equal(g.sessions.length, 2);
  } finally {
    await deliverer2.close();
  }
});

test('TLS-12: STARTTLS response injection is ignored; EHLO is sent again inside TLS', async () => {
  const f = await fake({
    tls: cert,
    commands: { STARTTLS: { reply: '220 2.0.0 Ready\r\n250-INJECTED\r\n250 PIPELINING\r\n', then: 'starttls' } },
  });
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  const s = f.sessions[0]!;
  assert.equal(s.tls, true);
  const i = s.commands.indexOf('STARTTLS');
  assert.ok(i > 0);
  assert.equal(s.commands[i + 1], 'EHLO relay.test', 'EHLO again right after the handshake');
  assert.equal(s.messages.length, 1);
});

test('TLS-13: TLS required and the next hop omits STARTTLS, answers 454, or fails the handshake → deferred 4.7.x, never plaintext', async () => {
  const variants: [string, Parameters<typeof startFakeMta>[0]][] = [
    ['not offered', {}],
    ['454', { tls: cert, commands: { STARTTLS: '454 4.7.0 TLS not available due to local problem\r\n' } }],
    ['handshake garbage', { tls: cert, commands: { STARTTLS: { reply: '220 go ahead\r\ngarbage garbage\r\n', then: 'close' } } }],
  ];
  for (const [name, options] of variants) {
    const f = await fake(options);
    const d = domainWithMx();
    const deliverer = testDeliverer(dns, f.port, { tlsPolicy: new StaticTlsPolicy({ domains: { [d]: 'required' } }) });
    const out = await deliverer.deliver(makeJob({ recipients: [`u@${d}`] }), signal());
    assert.equal(out[0]!.outcome, 'deferred', name);
    assert.match(status(out[0]) ?? '', /^4\.7\.[45]$/, name);
    for (const s of f.sessions) {
      assert.equal(s.commands.some((c) => /^(MAIL|RCPT|DATA)/i.test(c)), false, `${name}: never MAIL FROM in the clear`);
    }
  }
  // Opportunistic: 454 → on in plaintext.
  const f = await fake({ tls: cert, commands: { STARTTLS: '454 4.7.0 TLS not available\r\n' } });
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
});

test('TLS "verify": a self-signed certificate is not trusted → deferred 4.7.5; trusted with its CA → delivered', async () => {
  const f = await fake({ tls: cert });
  const d = `mx.tls.test`.replace('mx.', '');
  dns.set(d, { MX: [{ preference: 10, exchange: 'mx.tls.test' }] });
  dns.set('mx.tls.test', { A: ['127.0.0.1'] });
  let out = await testDeliverer(dns, f.port, { tlsPolicy: new StaticTlsPolicy({ domains: { [d]: 'verify' } }) }).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  assert.equal(status(out[0]), '4.7.5');
  out = await testDeliverer(dns, f.port, { tlsPolicy: new StaticTlsPolicy({ domains: { [d]: 'verify' }, ca: [cert.cert] }) }).deliver(makeJob({ recipients: [`u@${d}`] }), signal());
  assert.equal(out[0]!.outcome, 'delivered', JSON.stringify(out));
});

test('SM-16: wire bytes are CRLF-only, dot-stuffed, with exactly one terminator', async () => {
  const f = await fake();
  const d = domainWithMx();
  const body = Buffer.from('Subject: smuggle\r\n\r\n.leading dot\r\nbare LF\nthen\r\n.\nfake end\n.\r\nMAIL FROM:<x@evil.test>\r\nbare CR\rhere\r\n..two dots\r\nno final newline', 'latin1');
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`], body }), signal());
  assert.equal(out[0]!.outcome, 'delivered');
  const wire = f.sessions[0]!.messages[0]!.toString('latin1');
  assert.ok(wire.endsWith('\r\n.\r\n'));
  const content = wire.slice(0, -3);
  assert.equal(content.split('\r\n.\r\n').length, 1, 'one terminator only');
  assert.doesNotMatch(content.replace(/\r\n/g, ''), /[\r\n]/, 'no bare CR or LF');
  for (const line of content.split('\r\n')) if (line.startsWith('.')) assert.ok(line.startsWith('..'), `stuffed: ${JSON.stringify(line)}`);
  assert.equal(f.sessions[0]!.commands.filter((c) => c.startsWith('MAIL')).length, 1, 'no smuggled MAIL');
});

test('a damaged spool body: no final dot, everything deferred, reported as a body fault', async () => {
  let session: FakeSession | undefined;
  const f = await fake();
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`u@${d}`], failAfter: 10 }), signal());
  assert.equal(out[0]!.outcome, 'deferred');
  session = f.sessions[0]!;
  await session.closed;
  assert.equal(session.messages.length === 0 || !session.messages[0]!.toString('latin1').endsWith('\r\n.\r\n'), true, 'never terminated');
});

test('abort: deliver() rejects promptly when the signal fires mid-session', async () => {
  const f = await fake({ commands: { MAIL: { then: 'hang' } } });
  const d = domainWithMx();
  const ac = new AbortController();
  const t0 = Date.now();
  const p = testDeliverer(dns, f.port, { timeouts: { ...FAST, command: 30_000 } }).deliver(makeJob({ recipients: [`u@${d}`] }), ac.signal);
  setTimeout(() => ac.abort(new Error('stopping')), 200);
  await assert.rejects(p);
  assert.ok(Date.now() - t0 < 3000);
});

test('DSN parameters pass through when the next hop offers DSN; dropped otherwise', async () => {
  const f = await fake({ capabilities: ['PIPELINING', 'SIZE 1000000', 'DSN', '8BITMIME'] });
  const d = domainWithMx();
  const job = makeJob({
    recipients: [{ address: `u@${d}`, params: { NOTIFY: 'FAILURE,DELAY', ORCPT: `rfc822;U@${d}` } }],
    mailParams: { RET: 'HDRS', ENVID: 'env123', BODY: '8BITMIME' },
  });
  assert.equal((await testDeliverer(dns, f.port).deliver(job, signal()))[0]!.outcome, 'delivered');
  const c = f.sessions[0]!.commands;
  assert.match(c.find((x) => x.startsWith('MAIL'))!, /^MAIL FROM:<a@src\.test> SIZE=\d+ BODY=8BITMIME RET=HDRS ENVID=env123$/);
  assert.equal(c.find((x) => x.startsWith('RCPT')), `RCPT TO:<u@${d}> NOTIFY=FAILURE,DELAY ORCPT=rfc822;U@${d}`);
  const g = await fake({ capabilities: ['PIPELINING'] });
  const d2 = domainWithMx();
  assert.equal((await testDeliverer(dns, g.port).deliver(makeJob({ recipients: [{ address: `u@${d2}`, params: { NOTIFY: 'NEVER' } }], mailParams: { RET: 'FULL', BODY: '8BITMIME' } }), signal()))[0]!.outcome, 'delivered');
  assert.equal(g.sessions[0]!.commands.find((x) => x.startsWith('MAIL')), 'MAIL FROM:<a@src.test>');
  assert.equal(g.sessions[0]!.commands.find((x) => x.startsWith('RCPT')), `RCPT TO:<u@${d2}>`);
});

test('SMTPUTF8 needed but not offered → bounced 5.6.7 without MAIL', async () => {
  const f = await fake();
  const d = domainWithMx();
  const out = await testDeliverer(dns, f.port).deliver(makeJob({ recipients: [`\u00fcser@${d}`], mailParams: { SMTPUTF8: true } }), signal());
  assert.equal(out[0]!.outcome, 'bounced');
  assert.equal(status(out[0]), '5.6.7');
  assert.equal(f.sessions[0]!.commands.some((c) => c.startsWith('MAIL')), false);
});

test('smart host: AUTH only inside TLS; no STARTTLS → deferred without credentials', async () => {
  const ehlo = (_c: FakeCommand, s: FakeSession): string => {
    const caps = ['fake.test', 'PIPELINING', ...(s.tls ? ['AUTH PLAIN LOGIN'] : ['STARTTLS'])];
    return caps.map((l, i) => `250${i === caps.length - 1 ? ' ' : '-'}${l}\r\n`).join('');
  };
  const f = await fake({ tls: cert, commands: { EHLO: ehlo, AUTH: (c) => (c.arg === `PLAIN ${Buffer.from('\0user\0secret').toString('base64')}` ? '235 2.7.0 Authentication successful\r\n' : '535 5.7.8 no\r\n') } });
  const routing = { localDomains: ['local.test'], smartHost: { host: '127.0.0.1', port: f.port, auth: { username: 'user', password: 'secret' }, verifyCertificate: false } };
  const out = await testDeliverer(dns, 9, { routing }).deliver(makeJob({ recipients: ['x@anywhere.test', 'y@elsewhere.test'] }), signal());
  assert.deepEqual(out.map((o) => o.outcome), ['delivered', 'delivered']);
  const s = f.sessions[0]!;
  assert.equal(f.sessions.length, 1, 'one destination, one connection');
  assert.ok(s.commands.indexOf('STARTTLS') < s.commands.findIndex((c) => c.startsWith('AUTH')));
  assert.equal(s.messages.length, 1);

  const plain = await fake({ commands: { EHLO: '250-fake.test\r\n250 AUTH PLAIN\r\n' } });
  const out2 = await testDeliverer(dns, 9, { routing: { ...routing, smartHost: { ...routing.smartHost, port: plain.port } } }).deliver(makeJob({ recipients: ['x@anywhere.test'] }), signal());
  assert.equal(out2[0]!.outcome, 'deferred');
  assert.equal(status(out2[0]), '4.7.4');
  assert.equal(plain.sessions[0]!.commands.some((c) => c.startsWith('AUTH')), false, 'no credentials in the clear');

  const wrong = await fake({ tls: cert, commands: { EHLO: ehlo, AUTH: '535 5.7.8 Authentication failed\r\n' } });
  const out3 = await testDeliverer(dns, 9, { routing: { ...routing, smartHost: { ...routing.smartHost, port: wrong.port } } }).deliver(makeJob({ recipients: ['x@anywhere.test'] }), signal());
  assert.equal(out3[0]!.outcome, 'deferred');
  assert.match(out3[0]!.diagnostic ?? '', /SASL authentication failed/);
});
