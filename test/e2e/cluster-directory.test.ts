/**
 * Two relays on one PostgreSQL (issue 10, "Storage ports" and "Shared counters"): two assembled receive paths
 * (the assembly `serve` runs; each node its own data directory and SQLite queue) over one private PostgreSQL 15.
 * - AUTH failures spread over both nodes meet the throttle exactly as on one node, sequential and in parallel;
 * - a user, domain and alias added with the CLI on node A can log in and receive mail at node B within seconds;
 * - PostgreSQL stopped: AUTH answers 454 4.7.0 (never 235, never 535) while mail for known mailboxes is still
 *   accepted from the in-memory copy; PostgreSQL restarted: both recover by themselves.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { migratePostgres } from '../../src/store/index.ts';
import { startPostgres, type PostgresInstance } from '../../src/testing/postgres.ts';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { CLI, NODE } from '../../src/testing/serve-process.ts';
import { p1, expectReply, queueIdOf, sleep, type RawSmtpClient } from './hostile-helpers.ts';

const execFileAsync = promisify(execFile);
const OUTSIDE = '127.0.0.2';
const MAX_FAILURES = 4;
let pg: PostgresInstance;
let a: Harness;
let b: Harness;
let configA: string;

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const plain = (user: string, password: string): string => `AUTH PLAIN ${b64(`\0${user}\0${password}`)}`;

before(async () => {
  pg = await startPostgres();
  await migratePostgres(pg.url);
  const common = {
    trustedNetworks: ['127.0.0.1/32'],
    authMaxFailures: MAX_FAILURES,
    config: { store: { postgres: { url: pg.url } } },
  };
  a = await startRelay({ ...common, users: [{ name: 'alice@local.test', password: 'alice-pw' }], mailboxes: ['bob@local.test'] });
  b = await startRelay({ ...common, users: [], mailboxes: [] }); // the users are node A's: one directory
  configA = join(a.dataDir, 'relayguard.yaml');
  await writeFile(configA, stringify({ dataDir: a.dataDir, localDomains: ['local.test'], store: { postgres: { url: pg.url } } }));
});

after(async () => {
  await a?.close();
  await b?.close();
  await pg?.stop();
});

async function auth(node: Harness, ip: string, user: string, password: string): Promise<string> {
  const c = await p1(node.ports.submissions, { tls: true, localAddress: ip });
  try {
    const r = await c.cmd(plain(user, password));
    return `${r.code} ${r.lines[0]!.split(' ')[1] ?? ''}`.trim();
  } finally {
    c.close();
  }
}

async function cli(...args: string[]): Promise<string> {
  const r = await execFileAsync(NODE, [CLI, '-q', ...args, '-c', configA], { encoding: 'utf8' });
  return r.stdout;
}

test('the nodes share one directory: a user added on A is known at B at once', async () => {
  assert.equal(await auth(b, '127.0.0.40', 'alice@local.test', 'alice-pw'), '235 2.7.0');
  assert.equal(await b.directory.isMailbox('bob@local.test'), true);
});

test('AUTH failures spread over two nodes meet the throttle exactly as on one node', async () => {
  // The reference: one node alone, one client.
  const alone: string[] = [];
  for (let i = 0; i < MAX_FAILURES + 2; i++) alone.push(await auth(a, '127.0.0.31', 'alice@local.test', `wrong-${i}`));
  // The attack: the same guesses alternating over the two nodes, from another client.
  const spread: string[] = [];
  for (let i = 0; i < MAX_FAILURES + 2; i++) spread.push(await auth(i % 2 === 0 ? a : b, '127.0.0.32', 'alice@local.test', `wrong-${i}`));
  const expected = [...Array<string>(MAX_FAILURES).fill('535 5.7.8'), '450 4.7.1', '450 4.7.1'];
  assert.deepEqual(alone, expected);
  assert.deepEqual(spread, expected);
  // Refused on both nodes, even with the right password (the throttle runs before the check).
  assert.equal(await auth(a, '127.0.0.32', 'alice@local.test', 'alice-pw'), '450 4.7.1');
  assert.equal(await auth(b, '127.0.0.32', 'alice@local.test', 'alice-pw'), '450 4.7.1');
  // Another client is not affected, and a success does not count as a failure.
  assert.equal(await auth(b, '127.0.0.33', 'alice@local.test', 'alice-pw'), '235 2.7.0');
});

test('parallel guesses over both nodes: at most the limit reach the password check', async () => {
  const replies = await Promise.all(Array.from({ length: 16 }, (_, i) => auth(i % 2 === 0 ? a : b, '127.0.0.34', 'alice@local.test', `guess-${i}`)));
  assert.equal(replies.filter((r) => r === '535 5.7.8').length, MAX_FAILURES, replies.join(', '));
  assert.equal(replies.filter((r) => r === '450 4.7.1').length, 16 - MAX_FAILURES, replies.join(', '));
});

test('a user, a domain and an alias added with the CLI on node A log in and receive mail at node B within seconds', async () => {
  const t0 = performance.now();
  const add = await execFileAsync(NODE, [CLI, '-q', 'user', 'add', 'dave@local.test', '-c', configA], { encoding: 'utf8', env: { ...process.env, RELAYGUARD_PASSWORD: 'dave-pw' } });
  assert.equal(add.stdout, 'added user dave@local.test\n');
  assert.equal(await cli('domain', 'add', 'new.test'), 'added local domain new.test\n');
  assert.match(await cli('alias', 'add', 'info@new.test', 'dave@local.test'), /^alias info@new\.test -> dave@local\.test\n/);
  const written = performance.now();
  // Node B: AUTH as the new user, then mail from outside to the new mailbox and to the alias in the new domain.
  let loginMs = -1;
  let mailMs = -1;
  const deadline = Date.now() + 10_000;
  while (loginMs < 0 || mailMs < 0) {
    if (loginMs < 0 && (await auth(b, '127.0.0.41', 'dave@local.test', 'dave-pw')) === '235 2.7.0') loginMs = performance.now() - written;
    if (mailMs < 0) {
      const c: RawSmtpClient = await p1(b.ports.mx, { localAddress: OUTSIDE });
      try {
        expectReply(await c.cmd('MAIL FROM:<s@remote.test>'), 250, '2.1.0', c);
        const r1 = await c.cmd('RCPT TO:<dave@local.test>');
        const r2 = await c.cmd('RCPT TO:<info@new.test>');
        if (r1.code === 250 && r2.code === 250) {
          expectReply(await c.cmd('DATA'), 354, undefined, c);
          const r = await c.cmd('Subject: cluster\r\n\r\nhello\r\n.');
          expectReply(r, 250, '2.0.0', c);
          assert.deepEqual((await b.receive.queue.get(queueIdOf(r)))!.recipients.map((x) => x.address), ['dave@local.test']);
          mailMs = performance.now() - written;
        }
      } finally {
        c.close();
      }
    }
    if (Date.now() > deadline) assert.fail(`node B did not see node A's changes within 10 s (login ${loginMs} ms, mail ${mailMs} ms)`);
    if (loginMs < 0 || mailMs < 0) await sleep(50);
  }
  const line = `# cluster directory: CLI writes took ${(written - t0).toFixed(0)} ms; node B saw them: login after ${loginMs.toFixed(0)} ms, mail after ${mailMs.toFixed(0)} ms`;
  process.stderr.write(`${line}\n`);
});

test('PostgreSQL stopped: AUTH is 454 4.7.0 on both nodes, known mailboxes still receive; restarted: both recover by themselves', async () => {
  const mark = { a: a.logs.length, b: b.logs.length };
  await pg.pause();
  try {
    for (const node of [a, b]) {
      assert.equal(await auth(node, '127.0.0.50', 'alice@local.test', 'alice-pw'), '454 4.7.0', 'right password');
      assert.equal(await auth(node, '127.0.0.50', 'alice@local.test', 'wrong'), '454 4.7.0', 'wrong password');
    }
    // The recipient path answers from its in-memory copy: mail for a known mailbox is still accepted.
    const c = await p1(b.ports.mx, { localAddress: OUTSIDE });
    try {
      expectReply(await c.cmd('MAIL FROM:<s@remote.test>'), 250, '2.1.0', c);
      expectReply(await c.cmd('RCPT TO:<bob@local.test>'), 250, '2.1.5', c);
      expectReply(await c.cmd('RCPT TO:<nobody@local.test>'), 550, '5.1.1', c);
    } finally {
      c.close();
    }
    const events = a.logs.slice(mark.a).filter((l) => l.msg === 'auth unavailable');
    assert.ok(events.length >= 2 && events.every((e) => e.fields.err_code === 'ERR_STORE_UNAVAILABLE'), JSON.stringify(events.map((e) => e.fields)));
    // The copy's refresh notices within a refresh interval (5 s) and says so once.
    const deadline = Date.now() + 12_000;
    while (!b.logs.slice(mark.b).some((l) => l.msg === 'directory refresh failed')) {
      if (Date.now() > deadline) assert.fail('no "directory refresh failed" event');
      await sleep(200);
    }
    await sleep(5500); // another refresh interval: still one event
    assert.equal(b.logs.slice(mark.b).filter((l) => l.msg === 'directory refresh failed').length, 1);
    assert.equal(b.logs.slice(mark.b).find((l) => l.msg === 'directory refresh failed')!.fields.err_code, 'ERR_DIRECTORY_REFRESH');
  } finally {
    await pg.resume();
  }
  const back = Date.now();
  for (const node of [a, b]) {
    for (;;) {
      const r = await auth(node, '127.0.0.51', 'alice@local.test', 'alice-pw');
      if (r === '235 2.7.0') break;
      assert.equal(r, '454 4.7.0', 'only temporary failures while reconnecting');
      if (Date.now() - back > 15_000) assert.fail('AUTH did not recover within 15 s of the restart');
      await sleep(200);
    }
  }
  // A change after the restart reaches the other node again (the listener or the poll came back).
  await cli('alias', 'add', 'after@local.test', 'bob@local.test');
  const deadline = Date.now() + 15_000;
  for (;;) {
    const c = await p1(b.ports.mx, { localAddress: OUTSIDE });
    try {
      expectReply(await c.cmd('MAIL FROM:<s@remote.test>'), 250, '2.1.0', c);
      if ((await c.cmd('RCPT TO:<after@local.test>')).code === 250) break;
    } finally {
      c.close();
    }
    if (Date.now() > deadline) assert.fail('an alias added after the restart never reached node B');
    await sleep(200);
  }
  assert.ok(b.logs.slice(mark.b).some((l) => l.msg === 'directory refresh recovered'));
  process.stderr.write(`# cluster directory: recovered ${Date.now() - back} ms after the restart\n`);
});
