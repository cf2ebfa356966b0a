/**
 * Interop with Python's stdlib smtplib (run by /usr/bin/python3 through test/interop/smtplib_client.py, bound to
 * the untrusted 127.0.0.2) against a real `relayguard serve` that trusts only 127.0.0.1: delivery to a local
 * domain over mx, AUTH submission over STARTTLS and implicit TLS to a remote domain, refused relay attempts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ServeProcess } from '../../src/testing/serve-process.ts';
import {
  OUTSIDE, PYTHON, addUser, assertNoOpenRelay, expectAuthLogged, expectQueued, explain, logMark, messageId, queueList,
  relayDecisions, requirePeer, run, startOutsideServe,
} from './peers.ts';

const SCRIPT = join(import.meta.dirname, 'smtplib_client.py');
const ALICE = 'alice@local.test';
const ALICE_PW = 'smtplib-alice-pw';
const BOB = 'bob@local.test';

let serve: ServeProcess;
const attemptSenders: string[] = [];

before(async () => {
  requirePeer(PYTHON, 'python3');
  serve = await startOutsideServe();
  await Promise.all([addUser(serve, ALICE, ALICE_PW), addUser(serve, BOB, 'smtplib-bob-pw')]);
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

interface Outcome {
  outcome: 'sent' | 'auth_failed' | 'sender_refused' | 'recipients_refused' | 'data_refused';
  code: number | null;
  message: string | null;
  refused: Record<string, [number, string]>;
  tls: boolean;
  features: string[];
  auth: 'PLAIN' | 'LOGIN' | null;
}

interface Send {
  port: 'mx' | 'submission' | 'submissions';
  mode?: 'plain' | 'starttls' | 'ssl';
  auth?: { user: string; password: string; mech: 'PLAIN' | 'LOGIN' };
  sender: string;
  rcpts: string[];
  id: string;
}

/** One smtplib transaction from 127.0.0.2; returns the script's JSON outcome. */
async function smtplib(s: Send): Promise<Outcome> {
  const args = [
    SCRIPT, '--port', String(serve.ports[s.port]), '--source', OUTSIDE, '--mode', s.mode ?? (s.port === 'submissions' ? 'ssl' : 'plain'),
    '--sender', s.sender, '--message-id', s.id, ...s.rcpts.flatMap((r) => ['--rcpt', r]),
    ...(s.auth ? ['--user', s.auth.user, '--password', s.auth.password, '--mech', s.auth.mech] : []),
  ];
  const r = await run(PYTHON, args, { timeoutMs: 20_000 });
  assert.equal(r.timedOut, false, `smtplib client timed out\n${explain(r)}`);
  assert.equal(r.code, 0, `smtplib client crashed\n${explain(r)}`);
  try {
    return JSON.parse(r.stdout) as Outcome;
  } catch {
    assert.fail(`smtplib client printed no JSON\n${explain(r)}`);
  }
}

test('delivers to a local domain over mx from an untrusted client (plain and STARTTLS); queued', async () => {
  for (const mode of ['plain', 'starttls'] as const) {
    const id = messageId('smtplib', `mx-${mode}`);
    const o = await smtplib({ port: 'mx', mode, sender: 'sender@remote.test', rcpts: ['u@local.test'], id });
    assert.equal(o.outcome, 'sent', JSON.stringify(o));
    assert.deepEqual(o.refused, {});
    assert.equal(o.tls, mode === 'starttls');
    expectQueued(await queueList(serve), id, ['u@local.test'], 'sender@remote.test');
  }
  const d = relayDecisions(serve, 'u@local.test');
  assert.ok(d.length >= 2 && d.every((l) => l['client_ip'] === OUTSIDE && l['action'] !== 'reject'), JSON.stringify(d));
});

test('AUTH over submission with STARTTLS (PLAIN, LOGIN): relays to a remote domain as the own address; queued', async () => {
  for (const mech of ['PLAIN', 'LOGIN'] as const) {
    const id = messageId('smtplib', `sub-${mech}`);
    const mark = logMark(serve);
    const o = await smtplib({ port: 'submission', mode: 'starttls', auth: { user: ALICE, password: ALICE_PW, mech }, sender: ALICE, rcpts: ['v@remote.test'], id });
    assert.equal(o.outcome, 'sent', JSON.stringify(o));
    assert.equal(o.tls, true);
    assert.equal(o.auth, mech);
    assert.ok(o.features.includes('auth'), `AUTH not offered after STARTTLS: ${JSON.stringify(o)}`);
    await expectAuthLogged(serve, mark, ALICE, mech);
    expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
  }
});

test('AUTH over implicit TLS (submissions, SMTP_SSL): relays to a remote domain; queued', async () => {
  const id = messageId('smtplib', 'subs');
  const mark = logMark(serve);
  const o = await smtplib({ port: 'submissions', auth: { user: ALICE, password: ALICE_PW, mech: 'PLAIN' }, sender: ALICE, rcpts: ['v@remote.test'], id });
  assert.equal(o.outcome, 'sent', JSON.stringify(o));
  assert.equal(o.tls, true);
  await expectAuthLogged(serve, mark, ALICE, 'PLAIN');
  expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
});

test('submission does not offer AUTH before STARTTLS', async () => {
  // smtplib without STARTTLS on submission: no AUTH keyword in EHLO, and MAIL is refused (530).
  const sender = 'relay-smtplib-submission@remote.test';
  attemptSenders.push(sender);
  const o = await smtplib({ port: 'submission', mode: 'plain', sender, rcpts: ['v@remote.test'], id: messageId('smtplib', 'sub-notls') });
  assert.ok(!o.features.includes('auth'), JSON.stringify(o));
  assert.equal(o.outcome, 'sender_refused', JSON.stringify(o));
  assert.equal(o.code, 530);
});

test('relay attempt over mx without AUTH (plain and STARTTLS): 554 5.7.1, nothing queued', async () => {
  for (const mode of ['plain', 'starttls'] as const) {
    const sender = `relay-smtplib-${mode}@remote.test`;
    attemptSenders.push(sender);
    const o = await smtplib({ port: 'mx', mode, sender, rcpts: ['v@remote.test'], id: messageId('smtplib', `relay-${mode}`) });
    assert.equal(o.outcome, 'recipients_refused', JSON.stringify(o));
    assert.equal(o.code, 554);
    assert.match(o.message ?? '', /^5\.7\.1 <v@remote\.test>: Relay access denied/);
    assert.deepEqual((await queueList(serve)).filter((m) => m.sender === sender), [], 'the refused attempt was queued');
  }
});

test('relay attempt mixed with a local recipient: remote refused 554 5.7.1, queued only for the local one', async () => {
  const sender = 'relay-smtplib-mixed@remote.test';
  const id = messageId('smtplib', 'relay-mixed');
  const o = await smtplib({ port: 'mx', sender, rcpts: ['v@remote.test', 'u@local.test'], id });
  assert.equal(o.outcome, 'sent', JSON.stringify(o));
  assert.deepEqual(Object.keys(o.refused), ['v@remote.test']);
  assert.equal(o.refused['v@remote.test']?.[0], 554);
  assert.match(o.refused['v@remote.test']?.[1] ?? '', /^5\.7\.1 /);
  expectQueued(await queueList(serve), id, ['u@local.test'], sender);
});

test('AUTH with a wrong password: 535 (STARTTLS and implicit TLS)', async () => {
  for (const [port, mech] of [['submission', 'PLAIN'], ['submissions', 'LOGIN']] as const) {
    const o = await smtplib({ port, mode: port === 'submission' ? 'starttls' : 'ssl', auth: { user: ALICE, password: 'wrong-password', mech }, sender: ALICE, rcpts: ['v@remote.test'], id: messageId('smtplib', 'badpw') });
    assert.equal(o.outcome, 'auth_failed', JSON.stringify(o));
    assert.equal(o.code, 535);
  }
});

test("sending as another user's address after AUTH: 553 5.7.1, nothing queued", async () => {
  const id = messageId('smtplib', 'spoof');
  const o = await smtplib({ port: 'submission', mode: 'starttls', auth: { user: ALICE, password: ALICE_PW, mech: 'PLAIN' }, sender: BOB, rcpts: ['v@remote.test'], id });
  assert.equal(o.outcome, 'sender_refused', JSON.stringify(o));
  assert.equal(o.code, 553);
  assert.match(o.message ?? '', /^5\.7\.1 <bob@local\.test>/);
  assert.deepEqual((await queueList(serve)).filter((m) => m.sender === BOB || m.messageId === `<${id}>`), []);
});

test('queue invariant: every remote recipient came from AUTH, no refused attempt was queued', async () => {
  assertNoOpenRelay(await queueList(serve), [ALICE], attemptSenders);
});
