/**
 * The tester's progress hook (TesterOptions.onTrick, what the web tester streams): exactly one call per trick of
 * the report, per (port, transport) unit, in battery order, before testTarget resolves, also for tricks that were
 * not run (a server that drops every connection, a time budget that ran out) and none for a unit that never got a
 * session (a 554 banner). With transcripts on, each call carries the dialogue of that trick's tries.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeMta, type FakeCommand, type FakeMta } from '../../src/testing/fake-mta.ts';
import type { TrickProgress } from '../../src/tester/index.ts';
import type { TargetResult } from '../../src/tester/result.ts';
import { explainResult, testCert, testPort } from './tester-helpers.ts';

const fakes: FakeMta[] = [];
after(async () => { await Promise.all(fakes.map((f) => f.close())); });

const IS_POSTMASTER = /^TO:<postmaster(@[^>]*)?>/i;

/** Checks the calls against the report: one per trick, same verdicts, in order per unit; returns the calls. */
function assertOnePerTrick(r: TargetResult, calls: TrickProgress[]): void {
  for (const p of r.ports) {
    for (const t of p.transports) {
      const mine = calls.filter((c) => c.port === p.port && c.transport === t.transport);
      assert.deepEqual(mine.map((c) => c.trick.id), t.tricks.map((k) => k.id), `${p.port} ${t.transport}\n${explainResult(r)}`);
      assert.deepEqual(mine.map((c) => c.index), t.tricks.map((_, i) => i));
      for (const c of mine) assert.equal(c.total, t.tricks.length);
    }
  }
  const total = r.ports.reduce((n, p) => n + p.transports.reduce((m, t) => m + t.tricks.length, 0), 0);
  assert.equal(calls.length, total);
}

test('progress: a closed MX over plain and STARTTLS, with the dialogue of each trick', async () => {
  const f = await startFakeMta({ tls: await testCert(), commands: { RCPT: (c: FakeCommand) => (IS_POSTMASTER.test(c.arg) ? '250 2.1.5 Ok\r\n' : '554 5.7.1 Relay access denied\r\n') } });
  fakes.push(f);
  const calls: TrickProgress[] = [];
  const r = await testPort(f.port, 'mx', { transcript: true, onTrick: (p) => calls.push(p) });
  assert.equal(r.verdict, 'CLOSED', explainResult(r));
  assertOnePerTrick(r, calls);
  assert.deepEqual([...new Set(calls.map((c) => c.transport))].sort(), ['plain', 'starttls']);
  const v02 = calls.find((c) => c.trick.id === 'V02' && c.transport === 'plain')!;
  assert.ok(v02.lines.some((l) => l.dir === 'C' && /^MAIL FROM:/.test(l.line)), JSON.stringify(v02.lines));
  assert.ok(v02.lines.some((l) => l.dir === 'S' && /^554 5\.7\.1 /.test(l.line)));
  assert.ok(!v02.lines.some((l) => /^220 /.test(l.line)), 'only this trick\'s lines, not the greeting');
  // A throwing callback changes nothing.
  const again = await testPort(f.port, 'mx', { noStartTls: true, onTrick: () => { throw new Error('boom'); } });
  assert.equal(again.verdict, 'CLOSED');
});

test('progress: tricks not run (the server drops every session after MAIL) are reported too; a 554 banner reports none', async () => {
  const drop = await startFakeMta({ commands: { RCPT: (c: FakeCommand) => (IS_POSTMASTER.test(c.arg) ? '250 2.1.5 Ok\r\n' : { reply: '421 4.7.0 go away\r\n', then: 'close' }) } });
  const banner = await startFakeMta({ greeting: '554 5.7.1 No SMTP service here\r\n' });
  fakes.push(drop, banner);
  const calls: TrickProgress[] = [];
  const r = await testPort(drop.port, 'mx', { noStartTls: true, onTrick: (p) => calls.push(p) });
  assertOnePerTrick(r, calls);
  assert.ok(calls.some((c) => c.trick.attempts === 0), 'some tricks were not run and still reported');
  const none: TrickProgress[] = [];
  const b = await testPort(banner.port, 'mx', { onTrick: (p) => none.push(p) });
  assert.equal(b.reason, 'banner-refused');
  assert.equal(none.length, 0);
  assertOnePerTrick(b, none);
});
