/**
 * Worker processes of one machine on the embedded database (issue 10, "Shared counters"): two assembled receive
 * paths, each with its own data directory and queue as serve's workers will have, counting AUTH failures in one
 * SQLite counters file (openSqliteCounters, AssembleOptions.counters): guesses spread over both meet one limit.
 * (Processes racing on the file: src/store/sqlite-counters.test.ts.)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CounterStore } from '../../src/policy/counters.ts';
import { openSqliteCounters } from '../../src/store/index.ts';
import { startRelay, type Harness } from '../../src/testing/relay-harness.ts';
import { p1 } from './hostile-helpers.ts';

let shared: string;
let counters: CounterStore[] = [];
let w1: Harness;
let w2: Harness;

before(async () => {
  shared = await mkdtemp(join(tmpdir(), 'relayguard-counters-'));
  counters = [openSqliteCounters(shared), openSqliteCounters(shared)]; // one per worker, one file
  w1 = await startRelay({ authMaxFailures: 3, users: [{ name: 'ann@local.test', password: 'ann-pw' }], counters: counters[0]! });
  w2 = await startRelay({ authMaxFailures: 3, users: [{ name: 'ann@local.test', password: 'ann-pw' }], counters: counters[1]! });
});

after(async () => {
  await w1?.close();
  await w2?.close();
  for (const c of counters) await c.close();
  await rm(shared, { recursive: true, force: true });
});

async function auth(h: Harness, ip: string, password: string): Promise<number> {
  const c = await p1(h.ports.submissions, { tls: true, localAddress: ip });
  try {
    return (await c.cmd(`AUTH PLAIN ${Buffer.from(`\0ann@local.test\0${password}`).toString('base64')}`)).code;
  } finally {
    c.close();
  }
}

test('AUTH failures spread over two workers sharing the counters file meet one limit', async () => {
  const codes: number[] = [];
  for (let i = 0; i < 5; i++) codes.push(await auth(i % 2 ? w2 : w1, '127.0.0.61', `wrong-${i}`));
  assert.deepEqual(codes, [535, 535, 535, 450, 450]);
  assert.equal(await auth(w1, '127.0.0.62', 'ann-pw'), 235, 'another client is not affected');
  assert.equal(await auth(w2, '127.0.0.61', 'ann-pw'), 450, 'throttled on both workers, even with the right password');
});
