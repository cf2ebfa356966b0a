/**
 * `relayguard serve` with `workers: 2` on the embedded database: the AUTH failure throttle is ONE for the machine
 * (dataDir/counters.db, shared by the workers), so a client that spreads parallel password guesses over the
 * workers (the kernel hands its connections to either) meets the same limit as against a single process:
 * with limits.authFailuresPerIp = 4, exactly 4 guesses reach the password check (535) and every other one is
 * refused before it (4xx), whichever worker took it. Per-worker counters would let up to 8 through.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServe } from '../../src/testing/serve-process.ts';
import { p1 } from '../../src/testing/smtp-client.ts';

const LIMIT = 4;
const GUESSES = 24;
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

async function guess(port: number, i: number): Promise<number> {
  const c = await p1(port, { tls: true, localAddress: '127.0.0.2' });
  try {
    return (await c.cmd(`AUTH PLAIN ${b64(`\0u@local.test\0wrong-${i}`)}`)).code;
  } finally {
    c.close();
  }
}

test('workers: 2: parallel AUTH guesses spread over both workers meet one throttle (exactly the limit reach the password check)', { timeout: 90_000 }, async () => {
  const serve = await startServe({ config: { workers: 2, dnsbl: { enabled: false }, limits: { authFailuresPerIp: LIMIT, authFailureWindow: '10m' } } });
  try {
    const codes = await Promise.all(Array.from({ length: GUESSES }, (_, i) => guess(serve.ports.submissions, i)));
    const checked = codes.filter((c) => c === 535).length;
    const refusedBefore = codes.filter((c) => c >= 400 && c < 500).length;
    assert.equal(checked, LIMIT, `replies: ${codes.join(' ')}`);
    assert.equal(refusedBefore, GUESSES - LIMIT, `replies: ${codes.join(' ')}`);
    assert.ok(!codes.includes(235));
    // The guesses really were spread: both workers logged AUTH events for the client.
    const byWorker = new Set(serve.logs
      .filter((l) => typeof l['msg'] === 'string' && /^auth /.test(l['msg'] as string) || l['msg'] === 'command refused' && l['command'] === 'AUTH')
      .map((l) => l['worker']));
    assert.ok(byWorker.has(0) && byWorker.has(1), `AUTH events by worker: ${JSON.stringify([...byWorker])}`);
  } finally {
    await serve.stop();
  }
});
