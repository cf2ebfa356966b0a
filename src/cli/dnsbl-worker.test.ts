/**
 * `relayguard dnsbl worker` in-process with a scripted tester: --once runs what is due as jobs (the workflow's
 * decisions), prints the outcomes, and leaves nothing queued or running; bad options are usage errors (exit 2);
 * `retest --now` runs as the address's job. (Four real worker processes, kill -9 and SIGTERM:
 * test/e2e/ordb-workers.test.ts.)
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config/load.ts';
import { RelayguardError } from '../core/errors.ts';
import { JobQueue, ListingStore, type HostTestResult } from '../dnsbl/index.ts';
import { registerDnsblCommands } from './dnsbl-commands.ts';
import type { TestHost } from './ordb-service.ts';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function setup(): { config: string; db: string } {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-dnsbl-worker-'));
  dirs.push(d);
  const config = join(d, 'relayguard.yaml');
  writeFileSync(config, 'dataDir: ./data\nlog:\n  level: error\ndnsbl:\n  zone: relays.test\n  allowPrivateTargets: true\n');
  return { config, db: join(d, 'data', 'relayguard.db') };
}

const closed: HostTestResult = { verdict: 'CLOSED', proved: false, reason: 'refused', detail: 'RCPT 554 5.7.1', report: null };

async function cli(config: string, args: string[], tested: string[] = []): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s) };
  let code = 0;
  const program = new Command('relayguard').exitOverride().configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });
  registerDnsblCommands(program, io, (c) => { code = c; }, (opts) => loadConfig({ file: opts.config ?? config }), {
    testHost: async (): Promise<TestHost> => ({
      prove: false, sink: null, close: async () => {},
      test: async (ip) => { tested.push(ip); return closed; },
    }),
  });
  try {
    await program.parseAsync(['dnsbl', ...args], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) code = e.exitCode === 0 ? 0 : 2;
    else if (e instanceof RelayguardError) { io.err(`relayguard: ${e.message} [${e.code}]`); code = 2; } else throw e;
  }
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('relayguard dnsbl worker', () => {
  it('--once runs the due submissions as jobs, once each, and prints the outcomes', async () => {
    const { config, db } = setup();
    for (const ip of ['127.0.0.61', '127.0.0.62', '127.0.0.63']) assert.equal((await cli(config, ['submit', ip])).code, 0);
    const tested: string[] = [];
    const r = await cli(config, ['worker', '--once', '--json', '--concurrency', '2'], tested);
    assert.equal(r.code, 0, r.err);
    const outcomes = r.out.split('\n').map((l) => JSON.parse(l) as { network: string; action: string });
    assert.deepEqual(outcomes.map((o) => o.network).sort(), ['127.0.0.61', '127.0.0.62', '127.0.0.63']);
    assert.ok(outcomes.every((o) => o.action === 'not-listed'));
    assert.deepEqual(tested.sort(), ['127.0.0.61', '127.0.0.62', '127.0.0.63']);
    const again = await cli(config, ['worker', '--once'], tested);
    assert.equal(again.out, '0 tests run (safe mode)');
    assert.equal(tested.length, 3, 'nothing tested twice');
    const store = ListingStore.open(db);
    try {
      assert.deepEqual(new JobQueue(store).counts(), { queued: 0, running: 0, done: 3, expired: 0 });
    } finally { store.close(); }
  });

  it('retest --now runs as the address\'s job', async () => {
    const { config, db } = setup();
    assert.equal((await cli(config, ['add', '127.0.0.64'])).code, 0);
    const r = await cli(config, ['retest', '127.0.0.64', '--now', '--json']);
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).outcome.action, 'delist');
    const store = ListingStore.open(db);
    try {
      const [j] = new JobQueue(store).list({ address: '127.0.0.64' });
      assert.equal(j!.state, 'done');
      assert.equal(j!.kind, 'retest');
    } finally { store.close(); }
  });

  it('bad options are usage errors', async () => {
    const { config } = setup();
    for (const args of [['--concurrency', '0'], ['--concurrency', 'x'], ['--lease', '1'], ['--poll', 'soon']]) {
      const r = await cli(config, ['worker', '--once', ...args]);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.err, /ERR_USAGE/);
    }
  });
});
