/**
 * The nntp check's run plumbing and renderers: port specs, combineRun (schema, check, verdict and exit code over
 * every check), the text and JUnit output, the Cancel-Lock pair, the pure verdicts, and the CLI's --check options
 * (usage errors exit 3) end to end against a fake server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startFakeNntp } from '../../testing/fake-nntp.ts';
import { testerMain } from '../../cli/tester-commands.ts';
import { renderJUnit, renderText } from '../report.ts';
import type { RunResult } from '../result.ts';
import { buildCancelArticle, buildTestArticle, cancelLockPair, isGroupName } from './article.ts';
import { combineRun, parseNntpPortSpec, runNntp, type NntpRun } from './run.ts';
import { classifyGreeting, classifyIhave, classifyPost, classifyPosted, classifyReadBack } from './verdict.ts';

test('parseNntpPortSpec: 119 plain, 563 implicit TLS, explicit roles, bad input', () => {
  assert.deepEqual(parseNntpPortSpec('119'), { port: 119, role: 'nntp' });
  assert.deepEqual(parseNntpPortSpec('563'), { port: 563, role: 'nntps' });
  assert.deepEqual(parseNntpPortSpec('8563:NNTPS'), { port: 8563, role: 'nntps' });
  assert.deepEqual(parseNntpPortSpec('563:nntp'), { port: 563, role: 'nntp' });
  for (const bad of ['0', '70000', '119:mx', 'x', '']) assert.throws(() => parseNntpPortSpec(bad), RangeError, bad);
});

test('verdicts: the reply codes of RFC 3977 and RFC 4643', () => {
  assert.equal(classifyGreeting({ code: 200, text: '' }), null);
  assert.equal(classifyGreeting({ code: 201, text: '' }), null);
  assert.equal(classifyGreeting({ code: 502, text: '' })?.reason, 'refused');
  assert.equal(classifyGreeting({ code: 400, text: '' })?.reason, 'banner-refused');
  assert.equal(classifyGreeting({ code: 220, text: 'smtp' })?.reason, 'malformed-reply');
  const post = (code: number): string => `${classifyPost({ code, text: '' }).verdict} ${classifyPost({ code, text: '' }).reason}`;
  assert.equal(post(340), 'INCONCLUSIVE accepted-not-proved');
  assert.equal(post(440), 'CLOSED posting-not-permitted');
  assert.equal(post(480), 'CLOSED auth-required');
  assert.equal(post(483), 'CLOSED tls-required');
  assert.equal(post(502), 'CLOSED refused');
  assert.equal(post(500), 'CLOSED refused');
  assert.equal(post(400), 'INCONCLUSIVE deferred');
  assert.equal(post(240), 'INCONCLUSIVE malformed-reply');
  const ihave = (code: number): string => `${classifyIhave({ code, text: '' }).verdict} ${classifyIhave({ code, text: '' }).reason}`;
  assert.equal(ihave(335), 'INCONCLUSIVE accepted-not-proved');
  assert.equal(ihave(435), 'CLOSED refused');
  assert.equal(ihave(436), 'INCONCLUSIVE deferred');
  assert.equal(ihave(480), 'CLOSED auth-required');
  assert.equal(classifyPosted('POST', { code: 240, text: '' }), null);
  assert.equal(classifyPosted('IHAVE', { code: 235, text: '' }), null);
  assert.equal(classifyPosted('POST', { code: 235, text: '' })?.reason, 'malformed-reply');
  assert.equal(classifyPosted('POST', { code: 441, text: '' })?.reason, 'accepted-not-proved');
  assert.equal(classifyPosted('IHAVE', { code: 437, text: '' })?.verdict, 'INCONCLUSIVE');
  assert.equal(classifyPosted('POST', { code: 480, text: '' })?.reason, 'auth-required');
  assert.equal(classifyReadBack('POST', { code: 240, text: '' }, true, 'local.test', 100).verdict, 'OPEN');
  assert.equal(classifyReadBack('POST', { code: 240, text: '' }, false, 'local.test', 100).reason, 'not-read-back');
});

test('articles: Cancel-Lock is sha256 of the Cancel-Key (RFC 8315); the cancel names the article; group names', () => {
  const { lock, key } = cancelLockPair();
  assert.equal(lock, `sha256:${createHash('sha256').update(key.slice(7)).digest('base64')}`);
  const a = buildTestArticle({ tag: 'rg-00000000-1', group: 'local.test', domain: 'relayguard.test', target: '127.0.0.1', port: 119, path: 'POST', date: new Date(0) });
  assert.equal(a.messageId, '<rg-00000000-1@relayguard.test>');
  assert.ok(a.lines.includes('Newsgroups: local.test'));
  assert.ok(!a.lines.some((l) => l.startsWith('Path:')), 'POST articles leave Path to the server');
  const lockLine = a.lines.find((l) => l.startsWith('Cancel-Lock: '))!;
  assert.equal(lockLine.slice(13), `sha256:${createHash('sha256').update(a.cancelKey.slice(7)).digest('base64')}`);
  const c = buildCancelArticle({ target: a, group: 'local.test', domain: 'relayguard.test', tag: 'rg-00000000-1' });
  assert.ok(c.lines.includes('Control: cancel <rg-00000000-1@relayguard.test>'));
  assert.ok(c.lines.includes(`Cancel-Key: ${a.cancelKey}`));
  const ih = buildTestArticle({ tag: 't', group: 'g', domain: 'd.test', target: 'x', port: 1, path: 'IHAVE' });
  assert.ok(ih.lines[0]!.startsWith('Path: '));
  assert.ok(isGroupName('local.test'));
  for (const bad of ['local.*', 'a,b', 'a b', '', '.x', 'x.']) assert.equal(isGroupName(bad), false, bad);
});

const SMTP_CLOSED: RunResult = {
  schema: 'relayguard-tester/2', tool: { name: 'relayguard', version: '0.1.0' }, mode: 'safe', runId: '00000000', testerDomain: 'example.net',
  startedAt: '2026-01-01T00:00:00.000Z', durationMs: 1, verdict: 'CLOSED', reason: 'refused', detail: 'x', exitCode: 0, checks: ['smtp'], proxies: [],
  targets: [{
    check: 'smtp', input: '127.0.0.1', address: '127.0.0.1', family: 4, hostName: null, domain: null, mx: null, mailDomain: null, sourceAddress: null,
    verdict: 'CLOSED', reason: 'refused', detail: 'RCPT 554', counts: { OPEN: 0, CLOSED: 1, INCONCLUSIVE: 0, 'N/A': 0 }, ports: [], findings: [],
    startedAt: '2026-01-01T00:00:00.000Z', durationMs: 1,
  }],
  errors: [],
};

async function nntpRunAgainst(commands: Parameters<typeof startFakeNntp>[0]): Promise<NntpRun> {
  const fake = await startFakeNntp(commands);
  try {
    return await runNntp(['127.0.0.1'], { ports: [{ port: fake.port, role: 'nntp' }], testerDomain: 'relayguard.test', timeouts: { connect: 1000, greeting: 1000, command: 1000 } });
  } finally {
    await fake.close();
  }
}

test('combineRun: schema relayguard-tester/2 with checks, nntp section; verdict and exit code over both checks', async () => {
  const open = await nntpRunAgainst({ commands: { CAPABILITIES: '500 what\r\n', IHAVE: '500 what\r\n', MODE: '200 ok\r\n', LIST: '215 x\r\nlocal.test 1 1 y\r\n.\r\n', POST: { reply: '340 go\r\n', then: 'article' } } });
  const meta = { testerDomain: 'example.net', startedAt: '2026-01-01T00:00:00.000Z', durationMs: 5, mode: 'safe' as const };
  const both = combineRun(SMTP_CLOSED, open, { ...meta, checks: ['smtp', 'nntp'] });
  assert.equal(both.schema, 'relayguard-tester/2');
  assert.deepEqual(both.checks, ['smtp', 'nntp']);
  assert.equal(both.targets.length, 1);
  assert.equal(both.verdict, 'INCONCLUSIVE');
  assert.equal(both.reason, 'accepted-not-proved');
  assert.equal(both.exitCode, 2);
  assert.equal(both.nntp?.targets[0]?.ports[0]?.kind, 'reader');
  const closed = await nntpRunAgainst({ commands: { CAPABILITIES: '500 what\r\n', IHAVE: '502 no\r\n', MODE: '201 ok\r\n', LIST: '480 auth\r\n', POST: '440 no\r\n' } });
  const onlyNntp = combineRun(null, closed, { ...meta, checks: ['nntp'] });
  assert.equal(onlyNntp.verdict, 'CLOSED');
  assert.equal(onlyNntp.exitCode, 0);
  assert.deepEqual(onlyNntp.targets, []);
  // nothing listening: exit 3, as for SMTP
  const none = await runNntp(['127.0.0.1'], { ports: [{ port: 1, role: 'nntp' }], testerDomain: 'relayguard.test', timeouts: { connect: 1000 } });
  assert.equal(combineRun(null, none, { ...meta, checks: ['nntp'] }).exitCode, 3);
  // text and JUnit
  const text = renderText(both);
  assert.match(text, /checks smtp, nntp/);
  assert.match(text, /open NNTP check: safe mode \(no article sent\)/);
  assert.match(text, /POST +INCONCLUSIVE +POST 340 go: would take an article from a stranger/);
  assert.match(text, /--prove --nntp-group GROUP/);
  const xml = renderJUnit(both);
  assert.match(xml, /<testsuite name="127\.0\.0\.1:\d+ nntp" tests="2" failures="0" errors="1" skipped="0"/);
  assert.match(xml, /<testcase classname="relayguard\.tester\.nntp\.127_0_0_1\.\d+" name="POST" time="[\d.]+"><error type="INCONCLUSIVE"/);
});

test('CLI: --check validation and the nntp options exit 3 with a message', async () => {
  const run = async (args: string[]): Promise<{ code: number; err: string }> => {
    let err = '';
    const code = await testerMain(args, { out: () => {}, err: (s) => { err += s; } });
    return { code, err };
  };
  assert.deepEqual(await run(['test', '127.0.0.1', '--check', 'smtp,gopher']), { code: 3, err: 'relayguard: unknown check "gopher": give smtp, proxy, nntp (comma-separated) [ERR_USAGE]' });
  assert.match((await run(['test', '127.0.0.1', '--nntp-port', '119'])).err, /--nntp-port and --nntp-group need --check nntp/);
  assert.match((await run(['test', '127.0.0.1', '--check', 'nntp', '--prove'])).err, /--prove with --check nntp needs --nntp-group/);
  assert.match((await run(['test', '127.0.0.1', '--check', 'nntp', '--nntp-group', 'local.test'])).err, /--nntp-group needs --prove/);
  assert.match((await run(['test', '127.0.0.1', '--check', 'nntp', '--prove', '--nntp-group', 'local.*'])).err, /--nntp-group takes a newsgroup name/);
  assert.match((await run(['test', '127.0.0.1', '--check', 'nntp', '--nntp-port', '119:mx'])).err, /Bad NNTP port/);
  assert.match((await run(['test', '127.0.0.1', '--check', 'nntp', '--prove', '--nntp-group', 'a.b', '--probe-domain', 'x.test'])).err, /are for the smtp check/);
});
