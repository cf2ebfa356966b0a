import { test } from 'node:test';
import assert from 'node:assert/strict';
import { timeoutSignal } from './abort.ts';

test('timeoutSignal: aborts with the parent\'s reason, or with a TimeoutError; release() leaves nothing armed', async () => {
  const parent = new AbortController();
  const a = timeoutSignal(parent.signal, 10_000);
  parent.abort(new Error('stop'));
  assert.equal(a.signal.aborted, true);
  assert.equal((a.signal.reason as Error).message, 'stop');
  a.release();

  const b = timeoutSignal(null, 20, 'Job');
  await new Promise((r) => setTimeout(r, 60));
  assert.ok(b.signal.reason instanceof DOMException && b.signal.reason.name === 'TimeoutError', String(b.signal.reason));
  assert.match((b.signal.reason as DOMException).message, /^Job timed out after 20 ms$/);

  const p2 = new AbortController();
  const c = timeoutSignal(p2.signal, 20);
  c.release();
  await new Promise((r) => setTimeout(r, 60));
  p2.abort();
  assert.equal(c.signal.aborted, false, 'a released signal fired');

  const done = new AbortController();
  done.abort('already');
  assert.equal(timeoutSignal(done.signal, 1000).signal.reason, 'already');
});
