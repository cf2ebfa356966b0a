/**
 * F5 (field report 1): the AUTH throttle holds under concurrency. 50 connections from one address send a wrong
 * AUTH PLAIN at the same instant, over implicit TLS and over STARTTLS: at most the configured limit (10) get 535,
 * every other one gets the 450 4.7.1 throttled reply, and the address stays throttled afterwards, while another
 * address signs in normally.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { p1, expectReply, type RawSmtpClient } from './hostile-helpers.ts';

const LIMIT = 10;
const b64 = (s: string): string => Buffer.from(s, 'latin1').toString('base64');
const GOOD = b64('\0alice@local.test\0pw');
const BAD = b64('\0alice@local.test\0wrong');

let h: Harness;
before(async () => {
  h = await startRelay({ users: [{ name: 'alice@local.test', password: 'pw' }], authMaxFailures: LIMIT });
});
after(async () => { await h?.close(); });

/** Opens `n` sessions from `from`, then sends AUTH PLAIN on all of them in the same tick; returns the reply codes. */
async function parallelGuesses(n: number, from: string, open: () => Promise<RawSmtpClient>): Promise<number[]> {
  const clients = await Promise.all(Array.from({ length: n }, open));
  try {
    const replies = await Promise.all(clients.map((c) => c.cmd(`AUTH PLAIN ${BAD}`, 30_000)));
    for (const [i, r] of replies.entries()) {
      assert.ok(r.code === 535 || r.code === 450, `client ${i} from ${from}: ${r.lines.join(' | ')}`);
      if (r.code === 535) assert.equal(r.enhanced, '5.7.8');
      else assert.equal(r.enhanced, '4.7.1');
    }
    return replies.map((r) => r.code);
  } finally {
    for (const c of clients) c.close();
  }
}

test('F5 50 parallel wrong AUTH PLAIN over implicit TLS from one address: at most the limit get 535', async () => {
  const from = '127.0.0.21';
  const codes = await parallelGuesses(50, from, () => p1(h.ports.submissions, { tls: true, localAddress: from }));
  const failed = codes.filter((c) => c === 535).length;
  assert.ok(failed <= LIMIT, `${failed} of 50 parallel guesses reached the password check (limit ${LIMIT})`);
  assert.ok(failed >= 1, 'some guesses were checked');
  assert.equal(codes.filter((c) => c === 450).length, 50 - failed);
  const logged = h.logs.filter((l) => l.msg === 'auth failed' && l.fields.client_ip === from).length;
  assert.equal(logged, failed, 'one "auth failed" line per 535');
  // The address stays throttled, even with the right password.
  const again = await p1(h.ports.submissions, { tls: true, localAddress: from });
  try {
    expectReply(await again.cmd(`AUTH PLAIN ${GOOD}`), 450, '4.7.1', again);
  } finally {
    again.close();
  }
  // Another address is unaffected.
  const other = await p1(h.ports.submissions, { tls: true, localAddress: '127.0.0.22' });
  try {
    expectReply(await other.cmd(`AUTH PLAIN ${GOOD}`), 235, '2.7.0', other);
  } finally {
    other.close();
  }
});

test('F5 50 parallel wrong AUTH PLAIN over STARTTLS from one address: at most the limit get 535', async () => {
  const from = '127.0.0.23';
  const codes = await parallelGuesses(50, from, async () => {
    const c = await p1(h.ports.submission, { localAddress: from });
    expectReply(await c.cmd('STARTTLS'), 220, '2.0.0', c);
    await c.startTls();
    expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
    return c;
  });
  const failed = codes.filter((c) => c === 535).length;
  assert.ok(failed <= LIMIT && failed >= 1, `${failed} of 50 parallel guesses reached the password check (limit ${LIMIT})`);
});

test('F5 a successful AUTH refunds its attempt: sign-ins alone never throttle an address', async () => {
  const from = '127.0.0.24';
  for (let round = 0; round < 2; round++) {
    const clients = await Promise.all(Array.from({ length: LIMIT + 5 }, () => p1(h.ports.submissions, { tls: true, localAddress: from })));
    try {
      const replies = await Promise.all(clients.map((c) => c.cmd(`AUTH PLAIN ${GOOD}`, 30_000)));
      // While in flight a sign-in counts like a guess (so more than LIMIT at one instant may get 450); each
      // success is refunded when it completes.
      for (const r of replies) assert.ok(r.code === 235 || r.code === 450, r.lines.join(' | '));
      assert.ok(replies.some((r) => r.code === 235));
    } finally {
      for (const c of clients) c.close();
    }
  }
  // Every attempt was refunded: one more sign-in from the address works.
  const c = await p1(h.ports.submissions, { tls: true, localAddress: from });
  try {
    expectReply(await c.cmd(`AUTH PLAIN ${GOOD}`), 235, '2.7.0', c);
  } finally {
    c.close();
  }
});
