import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config/load.ts';
import { ManualClock } from '../core/clock.ts';
import { RelayguardError } from '../core/errors.ts';
import { newQueueId } from '../core/queue-id.ts';
import { MESSAGE_STATES, QueueRunner, QueueStore, RECIPIENT_STATES } from '../queue/index.ts';
import type { IncomingEnvelope } from '../queue/index.ts';
import { STATE_HELP, parseAge, printable, registerQueueCommands } from './queue-commands.ts';

const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
const MIN = 60_000;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function workDir(): { dataDir: string; config: string } {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-queue-cli-'));
  dirs.push(d);
  const config = join(d, 'relayguard.yaml');
  writeFileSync(config, 'dataDir: ./data\n');
  return { dataDir: join(d, 'data'), config };
}

interface Run {
  code: number;
  out: string;
  err: string;
}

/** Runs `relayguard queue ...` the way main() does: usage and RelayguardErrors exit 2. */
async function cli(args: string[], now = T0 + 4 * MIN): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s) };
  let code = 0;
  const program = new Command('relayguard').exitOverride().configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });
  registerQueueCommands(program, io, (c) => { code = c; }, (opts) => loadConfig(opts.config ? { file: opts.config } : {}), { now: () => now });
  try {
    await program.parseAsync(['queue', ...args], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) code = e.exitCode === 0 ? 0 : 2;
    else if (e instanceof RelayguardError) {
      io.err(`relayguard: ${e.message} [${e.code}]`);
      code = 2;
    } else throw e;
  }
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function queueOne(store: QueueStore, over: Partial<IncomingEnvelope> = {}, body = 'Message-ID: <m@test>\r\nSubject: hello\r\n\r\nbody\r\n'): Promise<string> {
  const msg = await store.beginMessage();
  await pipeline(Readable.from([Buffer.from(body)]), msg.body);
  await msg.commit({
    sender: 'alice@example.org', recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE' } }], clientIp: '192.0.2.1',
    helo: 'client.example.org', user: null, listener: 'mx', ...over,
  });
  return msg.queueId;
}

/** A queue with three messages: a (alice -> example.net, one attempt at T0: bob deferred, carol delivered),
 *  b (<> -> other.example, queued at T0+1m), c (held, queued at T0+2m). The commands run at T0+4m. */
async function fixture() {
  const w = workDir();
  const clock = new ManualClock(T0);
  const store = QueueStore.open({ dataDir: w.dataDir, clock });
  const a = await queueOne(store, { recipients: [{ address: 'bob@example.net', params: { NOTIFY: 'FAILURE' } }, { address: 'carol@example.net' }] });
  const runner = new QueueRunner({
    store, clock,
    deliverer: {
      async deliver() {
        return [
          { address: 'bob@example.net', outcome: 'deferred', reply: { code: 451, enhanced: '4.7.1', text: 'Greylisted, try again' }, remoteMta: 'mx.example.net [192.0.2.7]' },
          { address: 'carol@example.net', outcome: 'delivered', reply: { code: 250, enhanced: '2.0.0', text: 'Ok' } },
        ];
      },
    },
    bouncer: { async bounce() {}, async delayed() {} },
  });
  await runner.runOnce();
  await runner.stop();
  clock.advance(MIN);
  const b = await queueOne(store, { sender: '', recipients: [{ address: 'dave@Other.Example' }] }, 'Subject: \x1b[31mred\r\n\r\nbounce\r\n');
  clock.advance(MIN);
  const c = await queueOne(store, { sender: 'carol@example.com' });
  store.hold({ queueIds: [c] });
  await store.close();
  return { ...w, a, b, c };
}

test('queue list: text, JSON lines and filters', async () => {
  const f = await fixture();
  const all = await cli(['list', '-c', f.config]);
  assert.equal(all.code, 0, all.err);
  assert.match(all.out, new RegExp(`${f.a} +\\d+ +4m queued +alice@example.org`));
  assert.match(all.out, new RegExp(`${f.b} +\\d+ +3m queued +<>`));
  assert.match(all.out, new RegExp(`${f.c} +\\d+ +2m hold +carol@example.com`));
  assert.match(all.out, /-- 3 messages$/);
  // mailq-style: the deferred recipient under its reason, the delivered one without.
  assert.ok(all.out.includes(`\n${' '.repeat(45)}carol@example.net\n(mx.example.net [192.0.2.7] said: 451 4.7.1 Greylisted, try again)\n${' '.repeat(45)}bob@example.net\n`), all.out);

  const json = await cli(['list', '-c', f.config, '--json']);
  const rows = json.out.split('\n').map((l) => JSON.parse(l) as { queueId: string; recipientsOpen: number });
  assert.deepEqual(rows.map((r) => r.queueId), [f.a, f.b, f.c]);
  assert.equal(rows[0]!.recipientsOpen, 1);

  const ids = async (...args: string[]) => (await cli(['list', '-c', f.config, '--json', ...args])).out.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { queueId: string }).queueId);
  assert.deepEqual(await ids('--state', 'deferred'), [f.a]);
  assert.deepEqual(await ids('--state', 'hold'), [f.c]);
  assert.deepEqual(await ids('--sender', '<>'), [f.b]);
  assert.deepEqual(await ids('--sender', '<alice@example.org>'), [f.a]);
  assert.deepEqual(await ids('--domain', 'OTHER.example'), [f.b]);
  assert.deepEqual(await ids('--older-than', '3m'), [f.a, f.b]);
  assert.deepEqual(await ids('--older-than', '200'), [f.a]);
  assert.deepEqual(await ids('--limit', '1'), [f.a]);

  const bad = await cli(['list', '-c', f.config, '--state', 'lost']);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--state takes one of queued, hold, corrupt, pending, deferred, delivered, bounced/);
  assert.equal((await cli(['list', '-c', f.config, '--older-than', '3 days'])).code, 2);
});

test('queue list and show on a data directory without a queue', async () => {
  const w = workDir();
  assert.deepEqual(await cli(['list', '-c', w.config]), { code: 0, out: 'Mail queue is empty', err: '' });
  assert.deepEqual(await cli(['list', '-c', w.config, '--json']), { code: 0, out: '', err: '' });
  const id = newQueueId();
  const show = await cli(['show', '-c', w.config, id]);
  assert.equal(show.code, 1);
  assert.equal(show.err, `relayguard: ${id}: no such message in the queue`);
  assert.equal((await cli(['flush', '-c', w.config])).out, '0 messages scheduled for immediate delivery');
  const hold = await cli(['hold', '-c', w.config, id]);
  assert.equal(hold.code, 1);
  assert.equal(existsSync(w.dataDir), false, 'no queue was created');
});

test('queue show: envelope, per-recipient state, last reply, headers; hostile bytes are escaped', async () => {
  const f = await fixture();
  const r = await cli(['show', '-c', f.config, f.a]);
  assert.equal(r.code, 0, r.err);
  const expected = [
    `Queue ID:    ${f.a}`,
    'State:       queued',
    'Received:    2025-01-15T12:00:00Z (4m ago)',
    'From:        client.example.org [192.0.2.1] on mx',
    'Sender:      <alice@example.org>',
    'Size:        46 bytes',
    'Message-ID:  <m@test>',
    'Next run:    2025-01-15T12:05:00Z (in 60s)',
    'Recipients:  2 (1 open)',
    '  <bob@example.net> NOTIFY=FAILURE',
    '    deferred, 1 attempt, next 2025-01-15T12:05:00Z (in 60s), status 4.7.1',
    '    last: 451 4.7.1 Greylisted, try again (mx.example.net [192.0.2.7])',
    '  <carol@example.net>',
    '    delivered, 1 attempt, at 2025-01-15T12:00:00Z (4m ago), status 2.0.0',
    '    last: 250 2.0.0 Ok',
    'Headers:',
    '  Message-ID: <m@test>',
    '  Subject: hello',
  ];
  assert.deepEqual(r.out.split('\n'), expected);

  const hostile = await cli(['show', '-c', f.config, f.b.toLowerCase()]);
  assert.equal(hostile.code, 0, 'queue ids are case-insensitive');
  assert.match(hostile.out, /Sender: {6}<>/);
  assert.match(hostile.out, /  Subject: \\x1b\[31mred/);
  assert.ok(!hostile.out.includes('\x1b'));

  const json = await cli(['show', '-c', f.config, '--json', f.a, f.c]);
  const [ja, jc] = json.out.split('\n').map((l) => JSON.parse(l) as { queueId: string; state: string; headers: string; recipients: { state: string; lastReply: string | null; reply: unknown }[] });
  assert.equal(ja?.queueId, f.a);
  assert.deepEqual(ja?.recipients.map((x) => x.state), ['deferred', 'delivered']);
  assert.deepEqual(ja?.recipients[0]?.reply, { code: 451, enhanced: '4.7.1', text: 'Greylisted, try again' });
  assert.equal(ja?.headers, 'Message-ID: <m@test>\r\nSubject: hello\r\n');
  assert.equal(jc?.state, 'hold');

  const some = await cli(['show', '-c', f.config, '--no-headers', f.c, 'nonsense', newQueueId()]);
  assert.equal(some.code, 1);
  assert.ok(!some.out.includes('Headers:'));
  assert.match(some.out, /State: {7}hold \(held by an administrator\)/);
  assert.match(some.err, /nonsense: not a queue id/);
  assert.match(some.err, /no such message in the queue/);
});

test('queue hold, release, retry, delete: by id, with --all and filters, with --json; unknown ids exit 1', async () => {
  const f = await fixture();
  const held = await cli(['hold', '-c', f.config, f.a, f.c]);
  assert.equal(held.code, 0, held.err);
  assert.equal(held.out, `${f.a}: placed on hold\n${f.c}: not changed: already on hold\n1 message placed on hold`);

  const unknown = newQueueId();
  const rel = await cli(['release', '-c', f.config, '--json', f.a, unknown, 'bad-id']);
  assert.equal(rel.code, 1);
  assert.deepEqual(JSON.parse(rel.out), { action: 'release', changed: [f.a], unchanged: [], missing: [unknown], malformed: ['bad-id'] });
  assert.match(rel.err, new RegExp(`${unknown}: no such message in the queue`));
  assert.match(rel.err, /bad-id: not a queue id/);

  const allHeld = await cli(['release', '-c', f.config, '--all', '--state', 'hold']);
  assert.equal(allHeld.out, '1 message released from hold');

  const retry = await cli(['retry', '-c', f.config, '--json', '--all', '--domain', 'example.net']);
  assert.deepEqual(JSON.parse(retry.out), { action: 'retry', changed: [f.a, f.c], unchanged: [], missing: [] });
  const show = await cli(['show', '-c', f.config, '--json', '--no-headers', f.a]);
  assert.equal((JSON.parse(show.out) as { nextRunAt: number }).nextRunAt, T0 + 4 * MIN, 'due now');

  const del = await cli(['delete', '-c', f.config, '--all', '--sender', '<>']);
  assert.equal(del.out, '1 message deleted');
  assert.equal(existsSync(join(f.dataDir, 'spool', 'msg', `${f.b}.eml`)), false);
  assert.deepEqual((await cli(['delete', '-c', f.config, f.a])).out, `${f.a}: deleted\n1 message deleted`);
  const left = await cli(['list', '-c', f.config, '--json']);
  assert.deepEqual(left.out.split('\n').map((l) => (JSON.parse(l) as { queueId: string }).queueId), [f.c]);
});

test('queue flush makes deferred messages due now', async () => {
  const f = await fixture();
  const r = await cli(['flush', '-c', f.config]);
  assert.equal(r.out, '1 message scheduled for immediate delivery');
  const json = await cli(['flush', '-c', f.config, '--json']);
  assert.deepEqual(JSON.parse(json.out), { action: 'flush', changed: [], unchanged: [], missing: [] });
});

test('queue commands refuse ambiguous or missing targets (exit 2)', async () => {
  const f = await fixture();
  for (const args of [['hold'], ['hold', '--all', f.a], ['delete', '--state', 'hold', f.a], ['retry', '--all', '--older-than', 'soon']]) {
    const r = await cli([...args, '-c', f.config]);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.err, /ERR_USAGE/);
  }
  assert.equal((await cli(['list', '-c', f.config, '--json'])).out.split('\n').length, 3, 'nothing changed');
});

test('queue commands: helpers', () => {
  assert.equal(parseAge('90'), 90_000);
  assert.equal(parseAge('30m'), 1_800_000);
  assert.equal(parseAge('5d'), 432_000_000);
  assert.throws(() => parseAge('-1'), { code: 'ERR_USAGE' });
  assert.equal(printable('a\x1b[2Jb\r\n\u202ec\u00e9'), 'a\\x1b[2Jb\\x0d\\x0a\\u202ec\u00e9');
});

test('queue list shows why deferred mail waits, once per reason (like mailq); queue show says it once (M7)', async () => {
  const w = workDir();
  const clock = new ManualClock(T0);
  const store = QueueStore.open({ dataDir: w.dataDir, clock });
  const refused = 'connect to 127.0.0.1:2525: Connection refused';
  const id = await queueOne(store, { recipients: [{ address: 'a@example.net' }, { address: 'b@example.net' }, { address: 'c@example.org' }, { address: 'd@example.org' }] });
  const runner = new QueueRunner({
    store, clock,
    deliverer: {
      async deliver(job) {
        return job.recipients.map((r) => r.address.endsWith('@example.net')
          // What delivery makes up itself for a smart host on a closed port: a local reply and the same diagnostic.
          ? { address: r.address, outcome: 'deferred' as const, reply: { code: 451, enhanced: '4.4.1', text: refused }, diagnostic: refused }
          : r.address.startsWith('c@')
            ? { address: r.address, outcome: 'deferred' as const, reply: { code: 450, enhanced: '4.2.0', text: 'Mailbox busy' }, remoteMta: 'mx.example.org [192.0.2.9]' }
            : { address: r.address, outcome: 'delivered' as const, reply: { code: 250, enhanced: '2.0.0', text: 'Ok' } });
      },
    },
    bouncer: { async bounce() {}, async delayed() {} },
  });
  await runner.runOnce();
  await runner.stop();
  await store.close();

  const list = await cli(['list', '-c', w.config]);
  assert.equal(list.code, 0, list.err);
  const pad = ' '.repeat(45);
  assert.deepEqual(list.out.split('\n').slice(1, -1), [
    `${id}      46    4m queued   alice@example.org`,
    `${pad}d@example.org`,
    `(451 4.4.1 ${refused})`,
    `${pad}a@example.net`,
    `${pad}b@example.net`,
    '(mx.example.org [192.0.2.9] said: 450 4.2.0 Mailbox busy)',
    `${pad}c@example.org`,
  ]);
  const json = JSON.parse((await cli(['list', '-c', w.config, '--json'])).out) as { deferred: unknown };
  assert.deepEqual(json.deferred, [
    { reason: `451 4.4.1 ${refused}`, remoteMta: null, recipients: ['a@example.net', 'b@example.net'] },
    { reason: '450 4.2.0 Mailbox busy', remoteMta: 'mx.example.org [192.0.2.9]', recipients: ['c@example.org'] },
  ]);

  const show = await cli(['show', '-c', w.config, '--no-headers', id]);
  assert.equal(show.code, 0, show.err);
  assert.equal(show.out.split(refused).length - 1, 2, `the error once per recipient:\n${show.out}`);
  assert.ok(!show.out.includes('note:'), show.out);
  assert.match(show.out, /  <a@example\.net>\n    deferred, 1 attempt, next .*, status 4\.4\.1\n    last: 451 4\.4\.1 connect to 127\.0\.0\.1:2525: Connection refused\n/);
});

test('the --state help names the states of the queue module (kept apart so that the help loads no queue code)', () => {
  assert.deepEqual(STATE_HELP.message, MESSAGE_STATES);
  assert.deepEqual(STATE_HELP.recipient, RECIPIENT_STATES);
});
