/**
 * The assembled receive path's recipient rules (src/relay, the same assembly `serve` runs), through the harness:
 * what is queued for a known local recipient (its mailboxes, with ORCPT), RET=FULL kept only for vouched senders,
 * alias files re-read while running, and the alias CLI.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { SqliteDirectoryStore } from '../../src/store/index.ts';
import { CLI, NODE } from '../../src/testing/serve-process.ts';
import { p1, expectReply, queueIdOf, sleep } from './hostile-helpers.ts';

const execFileAsync = promisify(execFile);
const OUTSIDE = '127.0.0.2';
let h: Harness;
let dir: string;
let aliasFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relayguard-recipients-'));
  aliasFile = join(dir, 'virtual');
  await writeFile(aliasFile, 'info@local.test  alice@local.test\n');
  h = await startRelay({
    trustedNetworks: ['127.0.0.1/32'],
    mailboxes: ['alice@local.test', 'bob@local.test'],
    aliases: { 'team@local.test': ['alice@local.test', 'bob@local.test'] },
    config: { recipients: { aliasFiles: [aliasFile], postmaster: 'bob@local.test' } },
  });
  // The harness refreshes alias files every 5 s like serve; tests below wait for that.
});

after(async () => {
  await h?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a list alias is queued as its mailboxes, once each, with ORCPT naming the address the client used', async () => {
  const c = await p1(h.ports.mx, { localAddress: OUTSIDE });
  try {
    expectReply(await c.cmd('MAIL FROM:<s@remote.test>'), 250, '2.1.0', c);
    expectReply(await c.cmd('RCPT TO:<team@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('RCPT TO:<Alice@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('RCPT TO:<info@local.test>'), 250, '2.1.5', c);
    expectReply(await c.cmd('DATA'), 354, undefined, c);
    const r = await c.cmd('Subject: t\r\n\r\nx\r\n.');
    expectReply(r, 250, '2.0.0', c);
    const m = h.queue.get(queueIdOf(r))!;
    assert.deepEqual(m.recipients.map((x) => [x.address, x.params?.['ORCPT'] ?? null]), [
      ['alice@local.test', 'rfc822;team@local.test'],
      ['bob@local.test', 'rfc822;team@local.test'],
    ]);
  } finally {
    c.close();
  }
});

test('RET=FULL is kept for a trusted or authenticated sender and turned into RET=HDRS for a stranger', async () => {
  for (const [from, expected] of [[OUTSIDE, 'HDRS'], ['127.0.0.1', 'FULL']] as const) {
    const c = await p1(h.ports.mx, { localAddress: from });
    try {
      expectReply(await c.cmd('MAIL FROM:<s@remote.test> RET=FULL ENVID=abc'), 250, '2.1.0', c);
      expectReply(await c.cmd('RCPT TO:<bob@local.test> NOTIFY=FAILURE'), 250, '2.1.5', c);
      expectReply(await c.cmd('DATA'), 354, undefined, c);
      const r = await c.cmd('Subject: t\r\n\r\nx\r\n.');
      expectReply(r, 250, '2.0.0', c);
      const m = h.queue.get(queueIdOf(r))!;
      assert.equal(m.mailParams?.['RET'], expected, `from ${from}`);
      assert.equal(m.mailParams?.['ENVID'], 'abc');
    } finally {
      c.close();
    }
  }
});

test('alias files are re-read while running; a removed entry is unknown again', async () => {
  await writeFile(aliasFile, 'sales@local.test  bob@local.test\n# info removed\n');
  const deadline = Date.now() + 15_000;
  for (;;) {
    const c = await p1(h.ports.mx, { localAddress: OUTSIDE });
    try {
      expectReply(await c.cmd('MAIL FROM:<s@remote.test>'), 250, '2.1.0', c);
      const sales = await c.cmd('RCPT TO:<sales@local.test>');
      const info = await c.cmd('RCPT TO:<info@local.test>');
      if (sales.code === 250 && info.code === 550) break;
      if (Date.now() > deadline) assert.fail(`alias file not re-read: sales ${sales.code}, info ${info.code}`);
    } finally {
      c.close();
    }
    await sleep(250);
  }
});

test('an alias added by another process (the CLI) is seen by the running relay within seconds', async () => {
  const other = new SqliteDirectoryStore(join(h.dataDir, 'relayguard.db'));
  try {
    await other.addAlias('late@local.test', ['bob@local.test']);
  } finally {
    await other.close();
  }
  const deadline = Date.now() + 15_000;
  for (;;) {
    const c = await p1(h.ports.mx, { localAddress: OUTSIDE });
    try {
      expectReply(await c.cmd('MAIL FROM:<s@remote.test>'), 250, '2.1.0', c);
      if ((await c.cmd('RCPT TO:<late@local.test>')).code === 250) break;
      if (Date.now() > deadline) assert.fail('the alias added by another process never applied');
    } finally {
      c.close();
    }
    await sleep(250);
  }
});

test('relayguard alias add|list|remove: local targets; a remote target only with --remote; bad input exits 2 with a code', async () => {
  const cfgDir = await mkdtemp(join(tmpdir(), 'relayguard-alias-cli-'));
  try {
    const cfg = join(cfgDir, 'relayguard.yaml');
    await writeFile(cfg, `dataDir: ${join(cfgDir, 'data')}\nlocalDomains: [local.test]\n`);
    const run = async (...args: string[]): Promise<{ code: number; out: string; err: string }> => {
      try {
        const r = await execFileAsync(NODE, [CLI, ...args, '--config', cfg]);
        return { code: 0, out: r.stdout, err: r.stderr };
      } catch (e) {
        const x = e as { code: number; stdout: string; stderr: string };
        return { code: x.code, out: x.stdout, err: x.stderr };
      }
    };
    let r = await run('alias', 'add', 'Team@Local.Test', 'alice@local.test', 'bob@local.test');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /alias team@local\.test -> alice@local\.test/);
    r = await run('alias', 'add', 'fwd@local.test', 'friend@remote.test');
    assert.equal(r.code, 2);
    assert.match(r.err, /outside the local domains: add --remote.*\[ERR_ALIAS_INVALID\]/);
    r = await run('alias', 'add', 'fwd@local.test', 'friend@remote.test', '--remote');
    assert.equal(r.code, 0, r.err);
    r = await run('alias', 'add', 'x@remote.test', 'alice@local.test');
    assert.equal(r.code, 2);
    assert.match(r.err, /not a local domain/);
    r = await run('alias', 'list', '--json');
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out).aliases.map((a: { key: string; target: string; remote: boolean }) => [a.key, a.target, a.remote]), [
      ['fwd@local.test', 'friend@remote.test', true], ['team@local.test', 'alice@local.test', false], ['team@local.test', 'bob@local.test', false],
    ]);
    r = await run('alias', 'remove', 'team@local.test', 'bob@local.test');
    assert.equal(r.code, 0, r.err);
    r = await run('alias', 'remove', 'nobody@local.test');
    assert.equal(r.code, 2);
    assert.match(r.err, /ERR_ALIAS_NOT_FOUND/);
  } finally {
    await rm(cfgDir, { recursive: true, force: true });
  }
});
