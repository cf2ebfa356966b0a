/**
 * Interop with swaks against a real `relayguard serve` (trustedNetworks 127.0.0.1/32; swaks binds 127.0.0.2,
 * so it is an untrusted client): delivery to a local domain over mx (plain, STARTTLS, pipelined), AUTH PLAIN
 * and AUTH LOGIN submission over STARTTLS (2587-style) and implicit TLS (2465-style) to a remote domain, and
 * every unauthenticated relay attempt refused with 554 5.7.1 and nothing queued for it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ServeProcess } from '../../src/testing/serve-process.ts';
import {
  OUTSIDE, SWAKS, addUser, assertNoOpenRelay, expectQueued, explain, messageId, queueList, relayDecisions, requirePeer,
  run, startOutsideServe, waitForLogs, type RunResult,
} from './peers.ts';

const ALICE = 'alice@local.test';
const ALICE_PW = 'swaks-alice-pw';
const BOB = 'bob@local.test';

let serve: ServeProcess;
/** Envelope senders of the refused relay attempts: none of them may ever appear in the queue. */
const attemptSenders: string[] = [];

before(async () => {
  requirePeer(SWAKS, 'swaks');
  serve = await startOutsideServe();
  await Promise.all([addUser(serve, ALICE, ALICE_PW), addUser(serve, BOB, 'swaks-bob-pw')]);
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

type Port = 'mx' | 'submission' | 'submissions';

/** swaks from the untrusted address to one of the serve's listeners; every run has swaks' and our timeout. */
function swaks(port: Port, args: readonly string[]): Promise<RunResult> {
  return run(SWAKS, [
    '--server', `127.0.0.1:${serve.ports[port]}`, '--local-interface', OUTSIDE, '--timeout', '10s',
    '--helo', 'swaks.interop.test', ...(port === 'submissions' ? ['--tls-on-connect'] : []), ...args,
  ], { timeoutMs: 20_000 });
}

const out = (r: RunResult): string => `${r.stdout}\n${r.stderr}`;

function expectExit(r: RunResult, code: number): void {
  assert.equal(r.timedOut, false, `swaks timed out\n${explain(r)}`);
  assert.equal(r.code, code, `swaks exit code\n${explain(r)}`);
}

function expectTls(r: RunResult): void {
  assert.match(r.stdout, /=== TLS started with cipher TLSv1\.[23]/, `no TLS\n${explain(r)}`);
}

/** Asserts swaks was refused with 554 5.7.1 Relay access denied for this recipient. */
function expectRelayDenied(r: RunResult, rcpt: string): void {
  assert.match(out(r), new RegExp(`<[*~]\\* +554 5\\.7\\.1 <${rcpt.replace(/[.]/g, '\\.')}>: Relay access denied`), explain(r));
}

/** Asserts the serve logged the relay refusal for this recipient from the untrusted address. */
async function expectRefusalLogged(rcpt: string, sender: string): Promise<void> {
  const found = await waitForLogs(serve, 0, (l) => l['msg'] === 'relay decision' && String(l['rcpt']).includes(`<${rcpt}>`) && String(l['mail_from']).includes(`<${sender}>`));
  assert.ok(found.length > 0, `no relay decision logged for ${sender} -> ${rcpt}`);
  for (const l of found) {
    assert.equal(l['action'], 'reject', JSON.stringify(l));
    assert.equal(l['client_ip'], OUTSIDE, `the client was not the untrusted address: ${JSON.stringify(l)}`);
  }
}

test('plain: delivers to a local domain over mx from an untrusted client; queued', async () => {
  const id = messageId('swaks', 'mx-plain');
  const r = await swaks('mx', ['--from', 'sender@remote.test', '--to', 'u@local.test', '--header', `Message-Id: <${id}>`]);
  expectExit(r, 0);
  assert.doesNotMatch(r.stdout, /TLS started/);
  assert.match(r.stdout, /<- +250 2\.0\.0 Ok: queued as /, explain(r));
  expectQueued(await queueList(serve), id, ['u@local.test'], 'sender@remote.test');
  const d = relayDecisions(serve, 'u@local.test');
  assert.ok(d.some((l) => l['client_ip'] === OUTSIDE && l['action'] !== 'reject'), `no accepted decision from ${OUTSIDE}: ${JSON.stringify(d)}`);
});

test('STARTTLS: delivers to a local domain over mx after STARTTLS; queued', async () => {
  const id = messageId('swaks', 'mx-starttls');
  const r = await swaks('mx', ['-tls', '--from', 'sender@remote.test', '--to', 'u@local.test', '--header', `Message-Id: <${id}>`]);
  expectExit(r, 0);
  expectTls(r);
  assert.match(r.stdout, /<~ +250 2\.0\.0 Ok: queued as /, explain(r));
  expectQueued(await queueList(serve), id, ['u@local.test'], 'sender@remote.test');
});

test('--pipeline: delivers to a local domain over mx with MAIL/RCPT/DATA in one batch; queued', async () => {
  const id = messageId('swaks', 'mx-pipeline');
  const r = await swaks('mx', ['--pipeline', '--from', 'sender@remote.test', '--to', 'u@local.test', '--header', `Message-Id: <${id}>`]);
  expectExit(r, 0);
  // swaks really pipelined: MAIL, RCPT and DATA went out before the first reply came back.
  assert.match(r.stdout, / -> MAIL FROM:<sender@remote\.test>\n -> RCPT TO:<u@local\.test>\n -> DATA\n<- +250 2\.1\.0/, explain(r));
  assert.match(r.stdout, /<- +250 2\.0\.0 Ok: queued as /, explain(r));
  expectQueued(await queueList(serve), id, ['u@local.test'], 'sender@remote.test');
});

test('AUTH PLAIN over submission with STARTTLS: relays to a remote domain as the own address; queued', async () => {
  const id = messageId('swaks', 'sub-plain');
  const r = await swaks('submission', [
    '-tls', '--auth', 'PLAIN', '--auth-user', ALICE, '--auth-password', ALICE_PW,
    '--from', ALICE, '--to', 'v@remote.test', '--header', `Message-Id: <${id}>`,
  ]);
  expectExit(r, 0);
  expectTls(r);
  assert.match(r.stdout, /~> AUTH PLAIN /, explain(r));
  assert.match(r.stdout, /<~ +235 2\.7\.0/, explain(r));
  expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
});

test('AUTH LOGIN over submission with STARTTLS: relays to a remote domain; queued', async () => {
  const id = messageId('swaks', 'sub-login');
  const r = await swaks('submission', [
    '-tls', '--auth', 'LOGIN', '--auth-user', ALICE, '--auth-password', ALICE_PW,
    '--from', ALICE, '--to', 'v@remote.test', '--header', `Message-Id: <${id}>`,
  ]);
  expectExit(r, 0);
  expectTls(r);
  assert.match(r.stdout, /~> AUTH LOGIN/, explain(r));
  assert.match(r.stdout, /<~ +235 2\.7\.0/, explain(r));
  expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
});

test('AUTH PLAIN and LOGIN over implicit TLS (submissions): relays to a remote domain; queued', async () => {
  for (const mech of ['PLAIN', 'LOGIN']) {
    const id = messageId('swaks', `subs-${mech}`);
    const r = await swaks('submissions', [
      '--auth', mech, '--auth-user', ALICE, '--auth-password', ALICE_PW,
      '--from', ALICE, '--to', 'v@remote.test', '--header', `Message-Id: <${id}>`,
    ]);
    expectExit(r, 0);
    expectTls(r);
    assert.match(r.stdout, new RegExp(`~> AUTH ${mech}`), explain(r));
    expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
  }
});

test('--pipeline with AUTH over submission (STARTTLS): relays to a remote domain; queued', async () => {
  const id = messageId('swaks', 'sub-pipeline');
  const r = await swaks('submission', [
    '--pipeline', '-tls', '--auth', 'PLAIN', '--auth-user', ALICE, '--auth-password', ALICE_PW,
    '--from', ALICE, '--to', 'v@remote.test', '--header', `Message-Id: <${id}>`,
  ]);
  expectExit(r, 0);
  assert.match(r.stdout, / ~> MAIL FROM:<alice@local\.test>\n ~> RCPT TO:<v@remote\.test>\n ~> DATA\n<~ +250 2\.1\.0/, explain(r));
  expectQueued(await queueList(serve), id, ['v@remote.test'], ALICE);
});

test('relay attempt over mx without AUTH (plain, STARTTLS, pipelined): 554 5.7.1, nothing queued', async () => {
  const variants: [string, string[]][] = [['plain', []], ['starttls', ['-tls']], ['pipeline', ['--pipeline']], ['pipeline-tls', ['--pipeline', '-tls']]];
  for (const [name, extra] of variants) {
    const sender = `relay-swaks-${name}@remote.test`;
    attemptSenders.push(sender);
    const r = await swaks('mx', [...extra, '--from', sender, '--to', 'v@remote.test', '--header', `Message-Id: <${messageId('swaks', `relay-${name}`)}>`]);
    expectExit(r, 24); // no RCPT accepted
    expectRelayDenied(r, 'v@remote.test');
    if (name.startsWith('pipeline')) {
      // The pipelined DATA must be refused too (no valid recipients), never 354.
      assert.doesNotMatch(r.stdout, /<[-~] +354/, explain(r));
    }
    await expectRefusalLogged('v@remote.test', sender);
  }
  const queue = await queueList(serve);
  assert.deepEqual(queue.filter((m) => attemptSenders.includes(m.sender)), [], 'a refused relay attempt was queued');
});

test('relay attempt mixed with a local recipient: remote RCPT 554 5.7.1, message queued only for the local one', async () => {
  const sender = 'relay-swaks-mixed@remote.test';
  const id = messageId('swaks', 'relay-mixed');
  const r = await swaks('mx', ['--pipeline', '--from', sender, '--to', 'v@remote.test,u@local.test', '--header', `Message-Id: <${id}>`]);
  expectExit(r, 0);
  expectRelayDenied(r, 'v@remote.test');
  await expectRefusalLogged('v@remote.test', sender);
  expectQueued(await queueList(serve), id, ['u@local.test'], sender);
});

test('relay attempt over submission without AUTH: 530 5.7.0 at MAIL, nothing queued', async () => {
  const sender = 'relay-swaks-submission@remote.test';
  attemptSenders.push(sender);
  const r = await swaks('submission', ['-tls', '--from', sender, '--to', 'v@remote.test']);
  expectExit(r, 23); // MAIL refused
  assert.match(out(r), /<[*~]\* +530 5\.7\.0/, explain(r));
  assert.deepEqual((await queueList(serve)).filter((m) => m.sender === sender), []);
});

test('AUTH with a wrong password: 535 (PLAIN and LOGIN, STARTTLS and implicit TLS)', async () => {
  for (const [port, mech] of [['submission', 'PLAIN'], ['submission', 'LOGIN'], ['submissions', 'PLAIN'], ['submissions', 'LOGIN']] as const) {
    const r = await swaks(port, [
      ...(port === 'submission' ? ['-tls'] : []), '--auth', mech, '--auth-user', ALICE, '--auth-password', 'wrong-password',
      '--from', ALICE, '--to', 'v@remote.test',
    ]);
    expectExit(r, 28); // AUTH failed
    assert.match(out(r), /<[*~]\* +535 5\.7\.8/, explain(r));
  }
});

test('sending as another user\'s address after AUTH: 553 5.7.1, nothing queued', async () => {
  for (const port of ['submission', 'submissions'] as const) {
    const id = messageId('swaks', `spoof-${port}`);
    const r = await swaks(port, [
      ...(port === 'submission' ? ['-tls'] : []), '--auth', 'PLAIN', '--auth-user', ALICE, '--auth-password', ALICE_PW,
      '--from', BOB, '--to', 'v@remote.test', '--header', `Message-Id: <${id}>`,
    ]);
    expectExit(r, 23); // MAIL refused
    assert.match(out(r), /<[*~]\* +553 5\.7\.1 <bob@local\.test>/, explain(r));
    assert.deepEqual((await queueList(serve)).filter((m) => m.messageId === `<${id}>`), []);
  }
  assert.deepEqual((await queueList(serve)).filter((m) => m.sender === BOB), [], 'a message as bob was queued');
});

test('queue invariant: every remote recipient came from AUTH, no refused attempt was queued', async () => {
  assertNoOpenRelay(await queueList(serve), [ALICE], attemptSenders);
});
