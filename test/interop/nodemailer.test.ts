/**
 * Interop with nodemailer's SMTP transport (bound to the untrusted 127.0.0.2 with localAddress) against a real
 * `relayguard serve` that trusts only 127.0.0.1: delivery to a local domain over mx, AUTH submission over
 * STARTTLS and implicit TLS to a remote domain, refused relay attempts, wrong passwords and spoofed senders.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createTransport } from 'nodemailer';
import type { ServeProcess } from '../../src/testing/serve-process.ts';
import {
  OUTSIDE, addUser, assertNoOpenRelay, expectAuthLogged, expectQueued, logMark, messageId, queueList, relayDecisions,
  startOutsideServe, waitForLogs,
} from './peers.ts';

const ALICE = 'alice@local.test';
const ALICE_PW = 'nodemailer-alice-pw';
const BOB = 'bob@local.test';

let serve: ServeProcess;
const attemptSenders: string[] = [];

before(async () => {
  serve = await startOutsideServe();
  await Promise.all([addUser(serve, ALICE, ALICE_PW), addUser(serve, BOB, 'nodemailer-bob-pw')]);
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

interface Send {
  port: 'mx' | 'submission' | 'submissions';
  /** mx: 'plain' (ignoreTLS) or 'starttls' (requireTLS); submission: STARTTLS; submissions: implicit TLS. */
  tls?: 'plain' | 'starttls';
  auth?: { user: string; pass: string; method?: 'PLAIN' | 'LOGIN' };
  from: string;
  to: string[];
  id: string;
}

interface SendResult {
  accepted: string[];
  rejected: string[];
  response: string;
  rejectedErrors?: { responseCode?: number; response?: string; recipient?: string }[];
}

interface SendError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
}

/** One nodemailer sendMail from 127.0.0.2, with every timeout short; resolves to the info or the error. */
async function send(s: Send): Promise<{ ok: true; info: SendResult } | { ok: false; err: SendError }> {
  const transport = createTransport({
    host: '127.0.0.1',
    port: serve.ports[s.port],
    localAddress: OUTSIDE,
    name: 'nodemailer.interop.test',
    secure: s.port === 'submissions',
    ...(s.port === 'submission' || s.tls === 'starttls' ? { requireTLS: true } : {}),
    ...(s.port === 'mx' && s.tls !== 'starttls' ? { ignoreTLS: true } : {}),
    tls: { rejectUnauthorized: false },
    ...(s.auth ? { auth: { user: s.auth.user, pass: s.auth.pass }, authMethod: s.auth.method ?? 'PLAIN' } : {}),
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 10_000,
  });
  try {
    const info = (await transport.sendMail({
      from: s.from,
      to: s.to,
      subject: 'relayguard interop: nodemailer',
      text: 'Sent by nodemailer.\n',
      messageId: `<${s.id}>`,
    })) as unknown as SendResult;
    return { ok: true, info };
  } catch (err) {
    return { ok: false, err: err as SendError };
  } finally {
    transport.close();
  }
}

function expectSent(r: Awaited<ReturnType<typeof send>>): SendResult {
  assert.ok(r.ok, `sendMail failed: ${r.ok ? '' : `${r.err.code} ${r.err.responseCode} ${r.err.response ?? r.err.message}`}`);
  assert.match(r.info.response, /^250 2\.0\.0 Ok: queued as /, JSON.stringify(r.info));
  return r.info;
}

function expectError(r: Awaited<ReturnType<typeof send>>, responseCode: number, response: RegExp): SendError {
  assert.ok(!r.ok, `sendMail was accepted: ${r.ok ? JSON.stringify(r.info) : ''}`);
  assert.equal(r.err.responseCode, responseCode, `${r.err.code} ${r.err.response ?? r.err.message}`);
  assert.match(r.err.response ?? '', response, `${r.err.code} ${r.err.response ?? r.err.message}`);
  return r.err;
}

test('delivers to a local domain over mx from an untrusted client (plain and STARTTLS); queued', async () => {
  for (const tls of ['plain', 'starttls'] as const) {
    const id = messageId('nodemailer', `mx-${tls}`);
    const mark = logMark(serve);
    const info = expectSent(await send({ port: 'mx', tls, from: 'sender@remote.test', to: ['u@local.test'], id }));
    assert.deepEqual(info.accepted, ['u@local.test']);
    const closed = await waitForLogs(serve, mark, (l) => l['msg'] === 'session closed' && l['listener'] === 'mx' && l['client_ip'] === OUTSIDE);
    assert.equal(closed[0]?.['tls'], tls === 'starttls', `session TLS state: ${JSON.stringify(closed)}`);
    expectQueued(await queueList(serve), id, ['u@local.test'], 'sender@remote.test');
  }
  const d = relayDecisions(serve, 'u@local.test');
  assert.ok(d.length >= 2 && d.every((l) => l['client_ip'] === OUTSIDE && l['action'] !== 'reject'), JSON.stringify(d));
});

test('AUTH over submission with STARTTLS (PLAIN, LOGIN): relays to a remote domain as the own address; queued', async () => {
  for (const method of ['PLAIN', 'LOGIN'] as const) {
    const id = messageId('nodemailer', `sub-${method}`);
    const mark = logMark(serve);
    const info = expectSent(await send({ port: 'submission', auth: { user: ALICE, pass: ALICE_PW, method }, from: ALICE, to: ['v@remote.test'], id }));
    assert.deepEqual(info.accepted, ['v@remote.test']);
    await expectAuthLogged(serve, mark, ALICE, method);
    expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
  }
});

test('AUTH over implicit TLS (submissions): relays to a remote domain; queued', async () => {
  const id = messageId('nodemailer', 'subs');
  const mark = logMark(serve);
  expectSent(await send({ port: 'submissions', auth: { user: ALICE, pass: ALICE_PW }, from: ALICE, to: ['v@remote.test'], id }));
  await expectAuthLogged(serve, mark, ALICE, 'PLAIN');
  expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
});

test('relay attempt over mx without AUTH (plain and STARTTLS): 554 5.7.1, nothing queued', async () => {
  for (const tls of ['plain', 'starttls'] as const) {
    const sender = `relay-nodemailer-${tls}@remote.test`;
    attemptSenders.push(sender);
    const err = expectError(
      await send({ port: 'mx', tls, from: sender, to: ['v@remote.test'], id: messageId('nodemailer', `relay-${tls}`) }),
      554, /^554 5\.7\.1 <v@remote\.test>: Relay access denied/,
    );
    assert.equal(err.code, 'EENVELOPE');
    assert.deepEqual((await queueList(serve)).filter((m) => m.sender === sender), [], 'the refused attempt was queued');
  }
});

test('relay attempt mixed with a local recipient: remote refused 554 5.7.1, queued only for the local one', async () => {
  const sender = 'relay-nodemailer-mixed@remote.test';
  const id = messageId('nodemailer', 'relay-mixed');
  const info = expectSent(await send({ port: 'mx', from: sender, to: ['v@remote.test', 'u@local.test'], id }));
  assert.deepEqual(info.accepted, ['u@local.test']);
  assert.deepEqual(info.rejected, ['v@remote.test']);
  assert.equal(info.rejectedErrors?.[0]?.responseCode, 554);
  assert.match(info.rejectedErrors?.[0]?.response ?? '', /^554 5\.7\.1 /);
  expectQueued(await queueList(serve), id, ['u@local.test'], sender);
});

test('AUTH with a wrong password: 535 (STARTTLS and implicit TLS)', async () => {
  for (const port of ['submission', 'submissions'] as const) {
    const err = expectError(
      await send({ port, auth: { user: ALICE, pass: 'wrong-password' }, from: ALICE, to: ['v@remote.test'], id: messageId('nodemailer', 'badpw') }),
      535, /^535 5\.7\.8 /,
    );
    assert.equal(err.code, 'EAUTH');
  }
});

test("sending as another user's address after AUTH: 553 5.7.1, nothing queued", async () => {
  const id = messageId('nodemailer', 'spoof');
  expectError(
    await send({ port: 'submission', auth: { user: ALICE, pass: ALICE_PW }, from: BOB, to: ['v@remote.test'], id }),
    553, /^553 5\.7\.1 <bob@local\.test>/,
  );
  assert.deepEqual((await queueList(serve)).filter((m) => m.sender === BOB || m.messageId === `<${id}>`), []);
});

test('queue invariant: every remote recipient came from AUTH, no refused attempt was queued', async () => {
  assertNoOpenRelay(await queueList(serve), [ALICE], attemptSenders);
});
