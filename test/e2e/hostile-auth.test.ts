/**
 * AU-*: AUTH PLAIN / LOGIN abuse (hostile-inputs.md section 1.5), over implicit TLS (submissions) and STARTTLS.
 * Several inputs are built so that a lenient decoder WOULD sign in (valid credentials hidden behind junk), so the
 * tests fail if the engine ever decodes leniently.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { RawSmtpClient, p1, expectReply, expectNoMoreReplies, connect220 } from './hostile-helpers.ts';

let h: Harness;
const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');
const ALICE = b64('\0alice@local.test\0pw');

before(async () => {
  h = await startRelay({
    users: [{ name: 'alice@local.test', password: 'pw' }, { name: 'user', password: 'correct horse' }],
    authMaxFailures: 1000, // AU-11 uses its own harness
  });
});

after(async () => { await h?.close(); });

/** Connects to submissions (implicit TLS) and says EHLO; optional source address keeps throttling apart. */
function sub(localAddress = '127.0.0.1'): Promise<RawSmtpClient> {
  return p1(h.ports.submissions, { tls: true, localAddress });
}

/** After a refused AUTH the session is unauthenticated: MAIL on submission needs AUTH. */
async function expectNotAuthenticated(c: RawSmtpClient): Promise<void> {
  expectReply(await c.cmd('MAIL FROM:<alice@local.test>'), 530, '5.7.0', c);
}

test('AU-01 wrong password: 535 5.7.8; one log line with the client address in brackets', async () => {
  const mark = h.logs.length;
  const c = await sub('127.0.0.11');
  try {
    expectReply(await c.cmd('AUTH PLAIN AHVzZXIAcGFzcw=='), 535, '5.7.8', c);
    await expectNotAuthenticated(c);
  } finally {
    c.close();
  }
  const lines = h.logs.slice(mark).filter((l) => l.msg === 'auth failed');
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.fields.client, '[127.0.0.11]');
  assert.equal(lines[0]!.fields.client_ip, '127.0.0.11');
});

test('AU-02 non-canonical base64 is 501 5.5.2, never decoded leniently (even when it hides valid credentials)', async () => {
  const c = await sub();
  try {
    const inputs = [
      'AUTH PLAIN !!!!',
      'AUTH PLAIN AHVz ZXIA cGFzcw',
      'AUTH PLAIN AHVzZXIAcGFzcw==$$$AAAA',
      // Valid alice credentials behind the same tricks: a lenient decoder would sign in.
      `AUTH PLAIN ${ALICE}$$$AAAA`,
      `AUTH PLAIN ${ALICE.replace(/=+$/, '')}`,
      `AUTH PLAIN ${ALICE.slice(0, 8)} ${ALICE.slice(8)}`,
      `AUTH PLAIN ${ALICE}\t`,
    ];
    for (const line of inputs) {
      const r = await c.cmd(line);
      expectReply(r, 501, '5.5.2', c);
    }
    await expectNotAuthenticated(c);
    // Control: the canonical form signs in.
    expectReply(await c.cmd(`AUTH PLAIN ${ALICE}`), 235, '2.7.0', c);
  } finally {
    c.close();
  }
});

test('AU-03 AUTH PLAIN then "*": 501 5.7.0 Authentication aborted', async () => {
  const c = await sub();
  try {
    const ch = await c.cmd('AUTH PLAIN');
    expectReply(ch, 334, null, c);
    assert.equal(ch.lines[0], '334 ');
    expectReply(await c.cmd('*'), 501, '5.7.0', c);
    await expectNotAuthenticated(c);
    // The session goes on; a new AUTH starts clean.
    expectReply(await c.cmd(`AUTH PLAIN ${ALICE}`), 235, '2.7.0', c);
  } finally {
    c.close();
  }
});

test('AU-04 AUTH PLAIN = (empty initial response): 535/501, no crash', async () => {
  const c = await sub();
  try {
    const r = await c.cmd('AUTH PLAIN =');
    assert.ok(r.code === 535 || r.code === 501, r.lines.join(' | '));
    await expectNoMoreReplies(c, 50);
    await expectNotAuthenticated(c);
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('AU-05 PLAIN without NULs or with three NULs: 535/501, not signed in', async () => {
  const c = await sub();
  try {
    for (const line of ['AUTH PLAIN dXNlcnBhc3M=', 'AUTH PLAIN AHVzZXIAcGFzcwBleHRyYQ==', `AUTH PLAIN ${b64('\0alice@local.test\0pw\0')}`]) {
      const r = await c.cmd(line);
      assert.ok(r.code === 535 || r.code === 501, `${line}: ${r.lines.join(' | ')}`);
    }
    await expectNotAuthenticated(c);
  } finally {
    c.close();
  }
});

test('AU-06 authzid differs from authcid: 535, never signed in as the authzid (nor as the authcid)', async () => {
  const c = await sub();
  try {
    expectReply(await c.cmd('AUTH PLAIN YWRtaW4AdXNlcgBwYXNz'), 535, '5.7.8', c);
    // With alice's valid password and authzid "admin".
    expectReply(await c.cmd(`AUTH PLAIN ${b64('admin\0alice@local.test\0pw')}`), 535, '5.7.8', c);
    await expectNotAuthenticated(c);
  } finally {
    c.close();
  }
});

test('AU-07 CRLF inside the username: 535, not signed in, nothing unescaped in the logs', async () => {
  const mark = h.logs.length;
  const c = await sub();
  try {
    const r = await c.cmd('AUTH PLAIN AHVzZXINCk1BSUwgRlJPTTo8eEB5PgBwYXNz');
    assert.ok(r.code === 535 || r.code === 500 || r.code === 501, r.lines.join(' | '));
    await expectNoMoreReplies(c, 50);
    await expectNotAuthenticated(c);
  } finally {
    c.close();
  }
  for (const l of h.logs.slice(mark)) {
    for (const v of Object.values(l.fields)) {
      if (typeof v === 'string') assert.ok(!/[\r\n]/.test(v), `raw CR/LF in log field: ${JSON.stringify(l)}`);
    }
  }
});

test('AU-08 authcid or password over 255 octets, and an over-long response line: 500 5.5.6', async () => {
  const c = await sub();
  try {
    expectReply(await c.cmd(`AUTH PLAIN ${b64(`\0${'u'.repeat(256)}\0pw`)}`), 500, '5.5.6', c);
    expectReply(await c.cmd(`AUTH PLAIN ${b64(`\0alice@local.test\0${'p'.repeat(256)}`)}`), 500, '5.5.6', c);
    expectReply(await c.cmd('AUTH PLAIN'), 334, null, c);
    expectReply(await c.cmd('A'.repeat(6000)), 500, '5.5.6', c);
    expectReply(await c.cmd('AUTH LOGIN'), 334, null, c);
    expectReply(await c.cmd('B'.repeat(6000)), 500, '5.5.6', c);
    await expectNotAuthenticated(c);
    // The session is still in step.
    expectReply(await c.cmd('NOOP'), 250, '2.0.0', c);
  } finally {
    c.close();
  }
});

test('AU-09 AUTH before EHLO, during a transaction, after success, unknown mechanism', async () => {
  const a = await connect220(h.ports.submissions, { tls: true });
  try {
    expectReply(await a.cmd(`AUTH PLAIN ${ALICE}`), 503, '5.5.1', a);
  } finally {
    a.close();
  }
  // During a transaction: on mx after STARTTLS (MAIL is possible there without AUTH).
  const b = await p1(h.ports.mx);
  try {
    expectReply(await b.cmd('STARTTLS'), 220, '2.0.0', b);
    await b.startTls();
    expectReply(await b.cmd('EHLO client.test'), 250, undefined, b);
    expectReply(await b.cmd('MAIL FROM:<a@client.test>'), 250, '2.1.0', b);
    const r = await b.cmd(`AUTH PLAIN ${ALICE}`);
    expectReply(r, 503, '5.5.1', b);
    assert.match(r.text, /transaction in progress/i);
  } finally {
    b.close();
  }
  const c = await sub();
  try {
    expectReply(await c.cmd('AUTH FOO'), 504, '5.5.4', c);
    expectReply(await c.cmd(`AUTH PLAIN ${ALICE}`), 235, '2.7.0', c);
    const again = await c.cmd(`AUTH PLAIN ${ALICE}`);
    expectReply(again, 503, '5.5.1', c);
    assert.match(again.text, /already authenticated/i);
  } finally {
    c.close();
  }
});

test('AU-10 LOGIN aborted half-way, or failed, then PLAIN: each attempt starts clean', async () => {
  const c = await sub();
  try {
    expectReply(await c.cmd('AUTH LOGIN'), 334, null, c);
    expectReply(await c.cmd(b64('alice@local.test')), 334, null, c);
    expectReply(await c.cmd('*'), 501, '5.7.0', c);
    await expectNotAuthenticated(c);
    // A failed LOGIN (right user, wrong password), then PLAIN with the right one.
    expectReply(await c.cmd('AUTH LOGIN'), 334, null, c);
    expectReply(await c.cmd(b64('alice@local.test')), 334, null, c);
    expectReply(await c.cmd(b64('wrong')), 535, '5.7.8', c);
    await expectNotAuthenticated(c);
    // LOGIN with an initial response, aborted at the password prompt, then PLAIN with a different user's bad secret.
    expectReply(await c.cmd(`AUTH LOGIN ${b64('alice@local.test')}`), 334, null, c);
    expectReply(await c.cmd('*'), 501, '5.7.0', c);
    expectReply(await c.cmd(`AUTH PLAIN ${b64('\0user\0pw')}`), 535, '5.7.8', c);
    await expectNotAuthenticated(c);
    expectReply(await c.cmd(`AUTH PLAIN ${ALICE}`), 235, '2.7.0', c);
    expectReply(await c.cmd('MAIL FROM:<alice@local.test>'), 250, '2.1.0', c);
  } finally {
    c.close();
  }
});

test('AU-11 AUTH failures are throttled per IP across connections; other IPs unaffected', async () => {
  const t = await startRelay({ users: [{ name: 'alice@local.test', password: 'pw' }], authMaxFailures: 3 });
  try {
    const bad = b64('\0alice@local.test\0wrong');
    const c = await p1(t.ports.submissions, { tls: true, localAddress: '127.0.0.2' });
    try {
      for (let i = 0; i < 3; i++) expectReply(await c.cmd(`AUTH PLAIN ${bad}`), 535, '5.7.8', c);
      const r = await c.cmd(`AUTH PLAIN ${bad}`);
      expectReply(r, 450, '4.7.1', c);
      assert.match(r.text, /127\.0\.0\.2/);
    } finally {
      c.close();
    }
    // A new connection from the same IP: still refused, even with the right password.
    const d = await p1(t.ports.submissions, { tls: true, localAddress: '127.0.0.2' });
    try {
      const r = await d.cmd(`AUTH PLAIN ${ALICE}`);
      assert.equal(Math.floor(r.code / 100), 4, r.lines.join(' | '));
      expectReply(r, 450, '4.7.1', d);
      expectReply(await d.cmd('MAIL FROM:<alice@local.test>'), 530, '5.7.0', d);
    } finally {
      d.close();
    }
    // Same on the other listener (counters are per process, not per listener).
    const s = await p1(t.ports.submission, { localAddress: '127.0.0.2' });
    try {
      expectReply(await s.cmd('STARTTLS'), 220, '2.0.0', s);
      await s.startTls();
      expectReply(await s.cmd('EHLO client.test'), 250, undefined, s);
      expectReply(await s.cmd(`AUTH PLAIN ${ALICE}`), 450, '4.7.1', s);
    } finally {
      s.close();
    }
    // Another IP is unaffected.
    const e = await p1(t.ports.submissions, { tls: true, localAddress: '127.0.0.3' });
    try {
      expectReply(await e.cmd(`AUTH PLAIN ${ALICE}`), 235, '2.7.0', e);
    } finally {
      e.close();
    }
    assert.ok(t.logs.some((l) => l.msg === 'auth throttled' && l.fields.client_ip === '127.0.0.2'));
  } finally {
    await t.close();
  }
});
