/**
 * Every refusal explained (issue 9, field report 1 M1): each command the SMTP engine refuses by itself produces
 * one `command refused` event (src/smtp/refusals.ts) with the client, HELO, sender, recipient (for RCPT), the
 * command verb, the reply and a stable reason code, the way Postfix logs `NOQUEUE: reject`; refusals the relay
 * handler decides (relay decisions, AUTH outcomes) are logged once, by the handler.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import type { LogRecord } from '../../src/core/log.ts';
import { RawSmtpClient, p1, expectReply, expectClosed } from './hostile-helpers.ts';

const OUTSIDE = '127.0.0.2';
let h: Harness; // trusts 127.0.0.1 only; small limits
let t: Harness; // short idle timeout, one connection per address

before(async () => {
  h = await startRelay({
    trustedNetworks: ['127.0.0.1/32'],
    limits: { messageSize: 100_000, recipients: 2, errors: 6, commandLineLength: 512 },
    greetDelayMs: 0,
  });
  t = await startRelay({ limits: { idleTimeoutMs: 300, connectionsPerIp: 1 } });
});

after(async () => {
  await h?.close();
  await t?.close();
});

const FIELD_ORDER = ['client_ip', 'session_id', 'listener', 'helo', 'mail_from', 'rcpt', 'command', 'excerpt', 'after', 'reply', 'reason'];

function refused(harness: Harness, mark: number): LogRecord[] {
  return harness.logs.slice(mark).filter((r) => r.msg === 'command refused');
}

/** The one `command refused` event since mark, with its fields in the documented order. */
function only(harness: Harness, mark: number): Record<string, unknown> {
  const r = refused(harness, mark);
  assert.equal(r.length, 1, `expected one refusal event, got:\n${r.map((x) => JSON.stringify(x)).join('\n')}`);
  const f = r[0]!.fields;
  const keys = Object.keys(f);
  assert.deepEqual(keys, FIELD_ORDER.filter((k) => keys.includes(k)), `field order ${keys.join(', ')}`);
  assert.equal(keys[0], 'client_ip');
  return f;
}

async function waitForLog(harness: Harness, mark: number, pred: (r: LogRecord) => boolean): Promise<LogRecord> {
  for (let i = 0; i < 400; i++) {
    const found = harness.logs.slice(mark).find(pred);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no such log record; got:\n${harness.logs.slice(mark).map((x) => JSON.stringify(x)).join('\n')}`);
}

test('syntax: a bad sender and a bad recipient are logged with the command, an excerpt and the reply (501 5.1.7, 501 5.1.3)', async () => {
  const c = await p1(h.ports.mx, { localAddress: OUTSIDE, helo: 'bad.example' });
  try {
    let mark = h.logs.length;
    expectReply(await c.cmd('MAIL FROM:<a b@c>'), 501, '5.1.7', c);
    let f = only(h, mark);
    assert.equal(h.logs[mark + h.logs.slice(mark).findIndex((r) => r.msg === 'command refused')]!.level, 'warn');
    assert.deepEqual(
      { ...f, session_id: typeof f['session_id'] },
      {
        client_ip: OUTSIDE, session_id: 'string', listener: 'mx', helo: 'bad.example', mail_from: null, command: 'MAIL',
        excerpt: 'FROM:<a b@c>', reply: '501 5.1.7 Bad sender address syntax', reason: 'syntax',
      },
    );
    expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', c);
    mark = h.logs.length;
    expectReply(await c.cmd('RCPT TO:<@@>'), 501, '5.1.3', c);
    f = only(h, mark);
    assert.equal(f['mail_from'], '<a@client.test>');
    assert.equal(f['rcpt'], null);
    assert.equal(f['command'], 'RCPT');
    assert.equal(f['excerpt'], 'TO:<@@>');
    assert.equal(f['reason'], 'syntax');
    assert.match(String(f['reply']), /^501 5\.1\.3 /);
    // A parameter that does not parse: the recipient is known by then.
    mark = h.logs.length;
    expectReply(await c.cmd('RCPT TO:<u@local.test> NOTIFY'), 501, '5.5.4', c);
    f = only(h, mark);
    assert.equal(f['rcpt'], '<u@local.test>');
    assert.equal(f['excerpt'], undefined, 'no excerpt once the address parsed');
    // An excerpt is bounded (64 characters and "...").
    mark = h.logs.length;
    expectReply(await c.cmd(`RCPT TO:<${'x'.repeat(300)}`), 501, '5.1.3', c);
    f = only(h, mark);
    assert.equal(f['excerpt'], `TO:<${'x'.repeat(60)}...`);
  } finally {
    c.close();
  }
});

test('size: SIZE over the limit is logged with the sender it tried (552 5.3.4), and a DATA over the limit too', async () => {
  const c = await p1(h.ports.mx, { helo: 'big.example' });
  try {
    let mark = h.logs.length;
    expectReply(await c.cmd('MAIL FROM:<big@client.test> SIZE=999999999'), 552, '5.3.4', c);
    let f = only(h, mark);
    assert.equal(f['mail_from'], '<big@client.test>');
    assert.equal(f['command'], 'MAIL');
    assert.equal(f['reason'], 'size');
    assert.equal(f['reply'], '552 5.3.4 Message size exceeds fixed limit');
    expectReply(await c.cmd('MAIL FROM:<big@client.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    mark = h.logs.length;
    c.write(`Subject: big\r\n\r\n${'y'.repeat(200_000)}\r\n.\r\n`);
    expectReply(await c.readReply(), 552, '5.3.4', c);
    f = only(h, mark);
    assert.equal(f['mail_from'], '<big@client.test>', 'logged before the transaction is reset');
    assert.equal(f['command'], 'DATA');
    assert.equal(f['reason'], 'size');
  } finally {
    c.close();
  }
});

test('bare-lf: a bare LF in message data (550 5.5.2) and in a command (521, closed)', async () => {
  const c = await p1(h.ports.mx);
  try {
    expectReply(await c.cmd('MAIL FROM:<lf@client.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    let mark = h.logs.length;
    c.write('Subject: lf\r\n\r\nbare\nlf\r\n.\r\n');
    expectReply(await c.readReply(), 550, '5.5.2', c);
    let f = only(h, mark);
    assert.deepEqual([f['command'], f['mail_from'], f['reason'], f['reply']], ['DATA', '<lf@client.test>', 'bare-lf', '550 5.5.2 Error: bare <LF> received']);
    mark = h.logs.length;
    c.write('NOOP\n');
    expectReply(await c.readReply(), 521, '5.5.2', c);
    await expectClosed(c);
    f = only(h, mark);
    assert.deepEqual([f['command'], f['reason']], ['NOOP', 'bare-lf']);
  } finally {
    c.close();
  }
});

test('pipelining: input after a command that ends a group (554 5.5.0) is logged as pipelining', async () => {
  const c = await RawSmtpClient.connect(h.ports.mx);
  try {
    expectReply(await c.readReply(), 220, undefined, c);
    const mark = h.logs.length;
    c.write('EHLO pipe.example\r\nNOOP\r\n');
    expectReply(await c.readReply(), 554, '5.5.0', c);
    await expectClosed(c);
    const f = only(h, mark);
    assert.deepEqual([f['command'], f['reason'], f['helo']], ['EHLO', 'pipelining', null]);
  } finally {
    c.close();
  }
});

test('limit: too many recipients (452 4.5.3) and too many errors (421 4.7.0, after the last command)', async () => {
  const c = await p1(h.ports.mx, { helo: 'many.example' });
  try {
    expectReply(await c.cmd('MAIL FROM:<m@client.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('RCPT TO:<v@local.test>'), 250, '2.1.5', c);
    let mark = h.logs.length;
    expectReply(await c.cmd('RCPT TO:<user@local.test>'), 452, '4.5.3', c);
    let f = only(h, mark);
    assert.deepEqual([f['command'], f['rcpt'], f['mail_from'], f['reason']], ['RCPT', '<user@local.test>', '<m@client.test>', 'limit']);
    // errors: 6 (the 452 above was the first).
    expectReply(await c.cmd('VRFY u'), 502, '5.5.1', c);
    expectReply(await c.cmd('EXPN u'), 502, '5.5.1', c);
    expectReply(await c.cmd('ETRN local.test'), 502, '5.5.1', c);
    expectReply(await c.cmd('TURN'), 502, '5.5.1', c);
    mark = h.logs.length;
    c.write('XYZZY\r\n');
    expectReply(await c.readReply(), 500, '5.5.2', c);
    expectReply(await c.readReply(), 421, '4.7.0', c);
    await expectClosed(c);
    const r = refused(h, mark);
    assert.equal(r.length, 2, r.map((x) => JSON.stringify(x)).join('\n'));
    assert.deepEqual([r[0]!.fields['command'], r[0]!.fields['reason'], r[0]!.fields['excerpt']], ['UNKNOWN', 'unknown-command', undefined]);
    f = r[1]!.fields;
    assert.deepEqual([f['command'], f['after'], f['reason'], f['reply']], [null, 'UNKNOWN', 'limit', '421 4.7.0 mx.local.test Error: too many errors']);
  } finally {
    c.close();
  }
});

test('limit: a connection over the per-address limit is refused with 421 and logged before its session starts', async () => {
  const first = await RawSmtpClient.connect(t.ports.mx, { localAddress: '127.0.0.9' });
  try {
    expectReply(await first.readReply(), 220, undefined, first);
    const mark = t.logs.length;
    const second = await RawSmtpClient.connect(t.ports.mx, { localAddress: '127.0.0.9' });
    try {
      expectReply(await second.readReply(), 421, '4.7.0', second);
      const f = only(t, mark);
      assert.deepEqual(
        f,
        {
          client_ip: '127.0.0.9', session_id: null, listener: 'mx', helo: null, mail_from: null, command: null,
          reply: '421 4.7.0 mx.local.test Error: too many connections from 127.0.0.9', reason: 'limit',
        },
      );
    } finally {
      second.close();
    }
  } finally {
    first.close();
  }
});

test('timeout: an idle client gets 421 4.4.2, logged at info with the last command', async () => {
  const c = await p1(t.ports.mx, { localAddress: '127.0.0.10', helo: 'slow.example' });
  try {
    const mark = t.logs.length;
    expectReply(await c.readReply(10_000), 421, '4.4.2', c);
    const rec = await waitForLog(t, mark, (r) => r.msg === 'command refused');
    assert.equal(rec.level, 'info');
    assert.deepEqual(
      [rec.fields['helo'], rec.fields['command'], rec.fields['after'], rec.fields['reason']],
      ['slow.example', null, 'EHLO', 'timeout'],
    );
  } finally {
    c.close();
  }
});

test('tls: AUTH before STARTTLS (530 5.7.0), STARTTLS twice (554 5.5.1) and a TLS handshake on the plaintext port (421)', async () => {
  const c = await p1(h.ports.submission);
  try {
    let mark = h.logs.length;
    expectReply(await c.cmd('AUTH PLAIN AGZvbwBiYXI='), 530, '5.7.0', c);
    let f = only(h, mark);
    assert.deepEqual([f['command'], f['reason'], f['excerpt']], ['AUTH', 'tls', undefined]);
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    await c.startTls();
    expectReply(await c.cmd('EHLO tls.example'), 250, undefined, c);
    mark = h.logs.length;
    expectReply(await c.cmd('STARTTLS'), 554, '5.5.1', c);
    f = only(h, mark);
    assert.deepEqual([f['command'], f['reason'], f['helo']], ['STARTTLS', 'tls', 'tls.example']);
  } finally {
    c.close();
  }
  const raw = await RawSmtpClient.connect(h.ports.mx);
  try {
    expectReply(await raw.readReply(), 220, undefined, raw);
    const mark = h.logs.length;
    raw.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]));
    expectReply(await raw.readReply(), 421, '4.7.0', raw);
    const f = only(h, mark);
    assert.deepEqual([f['command'], f['reason']], [null, 'tls']);
  } finally {
    raw.close();
  }
});

test('auth: an unsupported mechanism and malformed credentials are the engine\'s (auth, syntax); a wrong password is the handler\'s only', async () => {
  await h.users.add('carol@local.test', 'right-password');
  const c = await p1(h.ports.submissions, { tls: true, localAddress: OUTSIDE });
  try {
    let mark = h.logs.length;
    expectReply(await c.cmd('AUTH CRAM-MD5'), 504, '5.5.4', c);
    assert.equal(only(h, mark)['reason'], 'auth');
    mark = h.logs.length;
    expectReply(await c.cmd('AUTH PLAIN !!!!'), 501, '5.5.2', c);
    let f = only(h, mark);
    assert.deepEqual([f['command'], f['reason'], f['excerpt']], ['AUTH', 'syntax', undefined]);
    mark = h.logs.length;
    expectReply(await c.cmd(`AUTH PLAIN ${Buffer.from('\0carol@local.test\0wrong').toString('base64')}`), 535, '5.7.8', c);
    assert.equal(refused(h, mark).length, 0, 'the handler logs a wrong password; the engine does not log it again');
    const failed = h.logs.slice(mark).filter((r) => r.msg === 'auth failed');
    assert.equal(failed.length, 1);
    assert.equal(failed[0]!.fields['client_ip'], OUTSIDE);
  } finally {
    c.close();
  }
});

test('sequence, unknown command, line too long, not SMTP; a relay refusal is logged once, by the handler', async () => {
  const c = await RawSmtpClient.connect(h.ports.mx, { localAddress: OUTSIDE });
  try {
    expectReply(await c.readReply(), 220, undefined, c);
    let mark = h.logs.length;
    expectReply(await c.cmd('MAIL FROM:<a@client.test>'), 503, '5.5.1', c);
    let f = only(h, mark);
    assert.deepEqual([f['command'], f['reason'], f['helo']], ['MAIL', 'sequence', null]);
    expectReply(await c.cmd('EHLO seq.example'), 250, undefined, c);
    mark = h.logs.length;
    expectReply(await c.cmd('RCPT TO:<u@local.test>'), 503, '5.5.1', c);
    f = only(h, mark);
    assert.deepEqual([f['command'], f['reason'], f['rcpt']], ['RCPT', 'sequence', null]);
    mark = h.logs.length;
    // Credentials pipelined after a refused AUTH arrive as "commands": never logged.
    expectReply(await c.cmd('c2VjcmV0LXBhc3N3b3Jk'), 500, '5.5.2', c);
    f = only(h, mark);
    assert.deepEqual([f['command'], f['reason']], ['UNKNOWN', 'unknown-command']);
    assert.doesNotMatch(JSON.stringify(h.logs.slice(mark)), /c2VjcmV0/);
    mark = h.logs.length;
    expectReply(await c.cmd(`NOOP ${'z'.repeat(600)}`), 500, '5.5.2', c);
    f = only(h, mark);
    assert.deepEqual([f['reason'], f['reply']], ['line-too-long', '500 5.5.2 Error: command line too long']);
    expectReply(await c.cmd('RSET'), 250, '2.0.0', c); // (errors: 4 of 6 so far)
  } finally {
    c.close();
  }
  const r = await RawSmtpClient.connect(h.ports.mx, { localAddress: OUTSIDE });
  try {
    expectReply(await r.readReply(), 220, undefined, r);
    expectReply(await r.cmd('EHLO relay.example'), 250, undefined, r);
    expectReply(await r.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', r);
    let mark = h.logs.length;
    expectReply(await r.cmd('RCPT TO:<victim@remote.example>'), 554, '5.7.1', r);
    assert.equal(refused(h, mark).length, 0, 'relay decisions are the handler\'s to log');
    const decision = h.logs.slice(mark).filter((x) => x.msg === 'relay decision');
    assert.equal(decision.length, 1);
    assert.equal(decision[0]!.fields['action'], 'reject');
    mark = h.logs.length;
    expectReply(await r.cmd('GET / HTTP/1.1'), 221, '2.7.0', r);
    await expectClosed(r);
    const f = only(h, mark);
    assert.deepEqual([f['command'], f['reason'], f['mail_from']], ['GET', 'not-smtp', '<a@client.test>']);
  } finally {
    r.close();
  }
});

test('pregreet: a client talking before the greeting is logged (554 5.5.0, pregreet)', async () => {
  const g = await startRelay({ greetDelayMs: 300 });
  try {
    const mark = g.logs.length;
    const sock = net.connect({ host: '127.0.0.1', port: g.ports.mx });
    let got = '';
    sock.setEncoding('latin1').on('data', (d: string) => { got += d; });
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.write('EHLO early.example\r\n');
    await new Promise<void>((resolve) => sock.once('close', () => resolve()));
    assert.match(got, /^554 5\.5\.0 /);
    const rec = await waitForLog(g, mark, (r) => r.msg === 'command refused');
    assert.deepEqual([rec.fields['command'], rec.fields['after'], rec.fields['reason']], [null, null, 'pregreet']);
  } finally {
    await g.close();
  }
});

test('a failed TLS handshake (implicit TLS) is logged at info with the client, not as a refused command', async () => {
  const mark = h.logs.length;
  const sock = net.connect({ host: '127.0.0.1', port: h.ports.submissions, localAddress: OUTSIDE });
  await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
  sock.on('error', () => {});
  sock.end('EHLO not-tls.example\r\n');
  await new Promise<void>((resolve) => sock.once('close', () => resolve()));
  const rec = await waitForLog(h, mark, (r) => r.msg === 'tls handshake failed');
  assert.equal(rec.level, 'info');
  assert.equal(Object.keys(rec.fields)[0], 'client_ip');
  assert.equal(rec.fields['client_ip'], OUTSIDE);
  assert.equal(refused(h, mark).length, 0);
});

test('every refusal above had its own reason (none fell back to "protocol")', () => {
  const all = [...h.logs, ...t.logs].filter((r) => r.msg === 'command refused');
  assert.ok(all.length > 20);
  assert.deepEqual(all.filter((r) => r.fields['reason'] === 'protocol'), []);
});
