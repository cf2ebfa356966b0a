/**
 * The fail2ban filter in deploy/fail2ban (issue 9, field report 1 F8), checked with Debian's fail2ban-regex
 * against the real output of `relayguard serve` in both log formats: wrong AUTH attempts from 127.0.0.2,
 * several of them with a user name that types another address ("[6.6.6.6]", "client_ip":"6.6.6.6", a whole
 * fake event), one more once AUTH is throttled, then refused recipients and protocol abuse from the same client. Every mode finds exactly the
 * events it is for, always with the real client 127.0.0.2, never 6.6.6.6; also when the lines come as the
 * journal shows them ("HOST relayguard[PID]: ..."). The fail2ban service is never started.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { RawSmtpClient } from '../../src/testing/smtp-client.ts';
import { OUTSIDE, OUTSIDE_CONFIG, explain, requirePeer, run } from './peers.ts';

const F2B_REGEX = '/usr/bin/fail2ban-regex';
const F2B_CLIENT = '/usr/bin/fail2ban-client';
const ROOT = resolve(import.meta.dirname, '..', '..');
const FILTER = join(ROOT, 'deploy', 'fail2ban', 'filter.d', 'relayguard.conf');
const JAIL = join(ROOT, 'deploy', 'fail2ban', 'jail.d', 'relayguard.conf');

/** User names of the wrong AUTH attempts: the attacker types the address it would like banned. */
const USERS = [
  'u@local.test',
  '[6.6.6.6]',
  '"client_ip":"6.6.6.6"',
  'x","client":"[6.6.6.6]","msg":"auth failed"}',
  'x warn: auth failed: client=[6.6.6.6] ',
  '\u2028[6.6.6.6]\u202e@local.test',
];

let tmp: string;
let json: ServeProcess;
let text: ServeProcess;

before(async () => {
  requirePeer(F2B_REGEX, 'fail2ban');
  tmp = await mkdtemp(join(tmpdir(), 'relayguard-f2b-'));
  // AUTH is throttled after exactly the attempts below, so the next one is logged as `auth throttled`.
  const config = { ...OUTSIDE_CONFIG, limits: { authFailuresPerIp: USERS.length } };
  [json, text] = await Promise.all([
    startServe({ config }),
    startServe({ config: { ...config, log: { format: 'text' } } }),
  ]);
});

after(async () => {
  await Promise.all([json?.stop(), text?.stop()]);
  await Promise.all([json?.cleanup(), text?.cleanup()]);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function expectCode(c: RawSmtpClient, line: string, code: number): Promise<void> {
  const r = await c.cmd(line);
  assert.equal(r.code, code, `${line} -> ${r.lines.join(' | ')}\n${c.transcript}`);
}

/** What the attacker does from 127.0.0.2; returns how many events of each kind it caused. */
async function attack(serve: ServeProcess): Promise<{ auth: number; relay: number; protocol: number }> {
  const sub = await RawSmtpClient.connect(serve.ports.submissions, { tls: true, localAddress: OUTSIDE });
  try {
    assert.equal((await sub.readReply()).code, 220);
    await expectCode(sub, 'EHLO [6.6.6.6]', 250);
    for (const user of USERS) {
      await expectCode(sub, `AUTH PLAIN ${Buffer.from(`\0${user}\0wrong-password`, 'utf8').toString('base64')}`, 535);
    }
    await expectCode(sub, `AUTH PLAIN ${Buffer.from('\0[6.6.6.6]\0wrong-password').toString('base64')}`, 450);
    // Malformed credentials (no NUL separators): the engine's own refusal, reason "auth".
    await expectCode(sub, `AUTH PLAIN ${Buffer.from('[6.6.6.6]').toString('base64')}`, 535);
  } finally {
    sub.close();
  }
  const mx = await RawSmtpClient.connect(serve.ports.mx, { localAddress: OUTSIDE });
  try {
    assert.equal((await mx.readReply()).code, 220);
    await expectCode(mx, 'EHLO client=[6.6.6.6]', 250);
    await expectCode(mx, 'MAIL FROM:<"client_ip\\":\\"6.6.6.6"@[6.6.6.6]>', 250);
    await expectCode(mx, 'RCPT TO:<victim@remote.example>', 554);
    await expectCode(mx, 'RCPT TO:<nobody@local.test>', 550);
    await expectCode(mx, 'GET / HTTP/1.1', 221);
  } finally {
    mx.close();
  }
  // A trusted, well-behaved client: never matched.
  const ok = await RawSmtpClient.connect(serve.ports.mx);
  try {
    assert.equal((await ok.readReply()).code, 220);
    await expectCode(ok, 'EHLO good.example', 250);
    await expectCode(ok, 'QUIT', 221);
  } finally {
    ok.close();
  }
  return { auth: USERS.length + 1, relay: 2, protocol: 2 };
}

/** The addresses fail2ban-regex finds, one per matched line. */
async function banned(logFile: string, mode: string, extra: readonly string[] = []): Promise<string[]> {
  const r = await run(F2B_REGEX, ['--raw', '-o', 'ip', ...extra, logFile, `${FILTER}[mode=${mode}]`], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, explain(r));
  return r.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

async function check(serve: ServeProcess, name: string, isEvent: (line: string, msg: string) => boolean): Promise<void> {
  const expected = await attack(serve);
  // Wait until the last of these events is written (the log is asynchronous).
  for (let i = 0; i < 200 && serve.lines.filter((l) => isEvent(l, 'session closed')).length < 3; i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(serve.lines.filter((l) => isEvent(l, 'auth failed')).length, USERS.length, serve.lines.join('\n'));
  assert.equal(serve.lines.filter((l) => isEvent(l, 'auth throttled')).length, 1, serve.lines.join('\n'));
  assert.ok(serve.lines.some((l) => l.includes('6.6.6.6')), 'the typed addresses are in the log (escaped)');
  const file = join(tmp, `${name}.log`);
  await writeFile(file, serve.lines.join('\n') + '\n');
  // As fail2ban's systemd backend shows them: "HOST relayguard[PID]: " before each line, and the time taken from
  // the journal, so nothing is cut out of the line (-d {NONE}: no date detection).
  const journal = join(tmp, `${name}-journal.log`);
  await writeFile(journal, serve.lines.map((l) => `mx1 relayguard[${serve.pid}]: ${l}`).join('\n') + '\n');
  // As rsyslog writes them to a file in its traditional format.
  const syslog = join(tmp, `${name}-syslog.log`);
  await writeFile(syslog, serve.lines.map((l) => `Dec  3 12:00:00 mx1 relayguard[${serve.pid}]: ${l}`).join('\n') + '\n');
  const want = (n: number): string[] => Array.from({ length: n }, () => OUTSIDE);
  const [normal, relay, protocol, aggressive, journalAggressive, syslogAggressive] = await Promise.all([
    banned(file, 'normal'), banned(file, 'relay'), banned(file, 'protocol'), banned(file, 'aggressive'), banned(journal, 'aggressive', ['-d', '{NONE}']),
    banned(syslog, 'aggressive'),
  ]);
  const all = expected.auth + expected.relay + expected.protocol;
  assert.deepEqual(normal, want(expected.auth), `normal (${name})`);
  assert.deepEqual(relay, want(expected.relay), `relay (${name})`);
  assert.deepEqual(protocol, want(expected.protocol), `protocol (${name})`);
  assert.deepEqual(aggressive, want(all), `aggressive (${name})`);
  assert.deepEqual(journalAggressive, want(all), `aggressive, journal lines (${name})`);
  assert.deepEqual(syslogAggressive, want(all), `aggressive, syslog lines (${name})`);
}

test('fail2ban: JSON log: AUTH failures (and by mode relay and protocol refusals) of 127.0.0.2, never the typed 6.6.6.6', async () => {
  await check(json, 'json', (line, msg) => line.endsWith(`"msg":"${msg}"}`));
});

test('fail2ban: text log (log.format: text): the same, from the same attack', async () => {
  await check(text, 'text', (line, msg) => line.includes(`: ${msg}: `));
});

test('fail2ban: the jail example passes fail2ban-client\'s configuration test (nothing is started)', async () => {
  requirePeer(F2B_CLIENT, 'fail2ban');
  const conf = join(tmp, 'etc-fail2ban');
  await cp('/etc/fail2ban', conf, { recursive: true });
  // Only our jail: Debian's defaults-debian.conf enables sshd, whose log may not exist here.
  await rm(join(conf, 'jail.d'), { recursive: true, force: true });
  await cp(FILTER, join(conf, 'filter.d', 'relayguard.conf'));
  await cp(JAIL, join(conf, 'jail.d', 'relayguard.conf'));
  const r = await run(F2B_CLIENT, ['-c', conf, '-t'], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, explain(r));
  assert.match(r.stdout + r.stderr, /configuration test is successful/, explain(r));
  const dump = await run(F2B_CLIENT, ['-c', conf, '-d'], { timeoutMs: 60_000 });
  assert.equal(dump.code, 0, explain(dump));
  assert.match(dump.stdout, /\['add', 'relayguard', 'systemd'\]/, explain(dump));
  assert.match(dump.stdout, /auth failed/, explain(dump));
});
