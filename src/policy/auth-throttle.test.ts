import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.ts';
import { AuthThrottle, ConnectionCounter, clientKey } from './auth-throttle.ts';

test('auth-throttle: clientKey folds mapped IPv4 and groups IPv6 by /64', () => {
  assert.equal(clientKey('192.0.2.1'), '192.0.2.1');
  assert.equal(clientKey('::ffff:192.0.2.1'), '192.0.2.1');
  assert.equal(clientKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  assert.equal(clientKey('2001:db8:1:2::ffff'), '2001:db8:1:2::/64');
  assert.equal(clientKey('2001:DB8:1:3::1'), '2001:db8:1:3::/64');
  assert.equal(clientKey('fe80::1%eth0'), 'fe80::/64');
  assert.equal(clientKey('2001:db8::1', 128), '2001:db8::1/128');
  assert.equal(clientKey('weird'), 'weird');
});

test('auth-throttle: blocks after maxFailures within the window, for the rest of the window', () => {
  const clock = new ManualClock(1_000_000);
  const t = new AuthThrottle({ maxFailures: 3, windowMs: 60_000, clock });
  assert.deepEqual(t.check('198.51.100.7'), { allowed: true });
  assert.deepEqual(t.recordFailure('198.51.100.7'), { allowed: true }); // t=0
  clock.advance(10_000);
  assert.deepEqual(t.recordFailure('198.51.100.7'), { allowed: true }); // t=10s
  clock.advance(10_000);
  assert.deepEqual(t.recordFailure('198.51.100.7'), { allowed: false, retryAfterMs: 40_000 }); // t=20s
  clock.advance(39_999);
  assert.deepEqual(t.check('198.51.100.7'), { allowed: false, retryAfterMs: 1 });
  clock.advance(1); // the first failure leaves the window
  assert.deepEqual(t.check('198.51.100.7'), { allowed: true });
  // One more failure fills the window again.
  assert.deepEqual(t.recordFailure('198.51.100.7'), { allowed: false, retryAfterMs: 10_000 });
  clock.advance(60_000);
  assert.deepEqual(t.check('198.51.100.7'), { allowed: true });
  assert.equal(t.size, 0);
});

test('auth-throttle: 100 attempts per minute from one IP are mostly refused; others unaffected (AU-11)', () => {
  const clock = new ManualClock(0);
  const t = new AuthThrottle({ clock });
  let refused = 0;
  for (let i = 0; i < 100; i++) {
    if (i === 50) assert.equal(t.check('::ffff:203.0.113.5').allowed, false);
    if (!t.check('203.0.113.5').allowed) refused++;
    else t.recordFailure('203.0.113.5');
    clock.advance(600);
  }
  assert.equal(refused, 90);
  assert.deepEqual(t.check('203.0.113.6'), { allowed: true });
});

test('auth-throttle: IPv6 clients in one /64 share a budget', () => {
  const clock = new ManualClock(0);
  const t = new AuthThrottle({ maxFailures: 2, clock });
  t.recordFailure('2001:db8:0:1::1');
  t.recordFailure('2001:db8:0:1::2');
  assert.equal(t.check('2001:db8:0:1::99').allowed, false);
  assert.equal(t.check('2001:db8:0:2::1').allowed, true);
});

test('auth-throttle: success does not clear failures; reset does', () => {
  const clock = new ManualClock(0);
  const t = new AuthThrottle({ maxFailures: 2, clock });
  t.recordFailure('192.0.2.9');
  t.recordSuccess('192.0.2.9');
  assert.equal(t.recordFailure('192.0.2.9').allowed, false);
  t.reset('192.0.2.9');
  assert.equal(t.check('192.0.2.9').allowed, true);
});

test('auth-throttle: memory is bounded; the least recently failing client is forgotten first', () => {
  const clock = new ManualClock(0);
  const t = new AuthThrottle({ maxFailures: 1, maxTrackedClients: 100, clock });
  for (let i = 0; i < 1000; i++) {
    t.recordFailure(`10.0.${i >> 8}.${i & 255}`);
    clock.advance(1);
  }
  assert.equal(t.size, 100);
  assert.equal(t.check('10.0.0.0').allowed, true); // evicted
  assert.equal(t.check('10.0.3.231').allowed, false); // i = 999, still tracked
  // Expired entries are dropped as new failures arrive.
  clock.advance(61_000);
  t.recordFailure('192.0.2.1');
  assert.equal(t.size, 1);
});

test('auth-throttle: options are validated', () => {
  assert.throws(() => new AuthThrottle({ maxFailures: 0 }), RangeError);
  assert.throws(() => new ConnectionCounter({ perIp: 1, total: 0 }), RangeError);
});

test('connection-counter: per-IP and total limits', () => {
  const c = new ConnectionCounter({ perIp: 2, total: 3 });
  assert.equal(c.tryAcquire('192.0.2.1'), 'ok');
  assert.equal(c.tryAcquire('::ffff:192.0.2.1'), 'ok');
  assert.equal(c.tryAcquire('192.0.2.1'), 'per-ip');
  assert.equal(c.count('192.0.2.1'), 2);
  assert.equal(c.tryAcquire('192.0.2.2'), 'ok');
  assert.equal(c.tryAcquire('192.0.2.3'), 'total');
  assert.equal(c.total, 3);
  c.release('192.0.2.1');
  assert.equal(c.tryAcquire('192.0.2.3'), 'ok');
  c.release('192.0.2.1');
  c.release('192.0.2.1'); // unmatched: ignored
  c.release('198.51.100.1'); // never acquired: ignored
  assert.equal(c.count('192.0.2.1'), 0);
  assert.equal(c.total, 2);
  assert.equal(c.clients, 2);
  c.release('192.0.2.2');
  c.release('192.0.2.3');
  assert.equal(c.total, 0);
  assert.equal(c.clients, 0);
});

test('connection-counter: IPv6 /64 grouping', () => {
  const c = new ConnectionCounter({ perIp: 1, total: 10 });
  assert.equal(c.tryAcquire('2001:db8::1'), 'ok');
  assert.equal(c.tryAcquire('2001:db8::2'), 'per-ip');
  assert.equal(c.tryAcquire('2001:db8:0:1::1'), 'ok');
});

test('auth-throttle: 50 concurrent attempts from one address: at most maxFailures reach the password check (F5)', async () => {
  const t = new AuthThrottle({ maxFailures: 10 });
  const ip = '198.51.100.50';
  let checked = 0;
  const attempt = async (): Promise<'throttled' | 'failed'> => {
    const gate = t.acquire(ip);
    if (!gate.allowed) return 'throttled';
    checked++;
    await new Promise((r) => setImmediate(r)); // the password check (scrypt) takes a while: all 50 are in flight
    t.recordFailure(ip);
    return 'failed';
  };
  const results = await Promise.all(Array.from({ length: 50 }, attempt));
  assert.equal(results.filter((r) => r === 'failed').length, 10);
  assert.equal(results.filter((r) => r === 'throttled').length, 40);
  assert.equal(checked, 10);
  assert.equal(t.check(ip).allowed, false, 'confirming the failures counted nothing twice, and nothing was forgotten');
  // The old pattern (check, then count after the password check) let all 50 through: the reason for acquire().
  const old = new AuthThrottle({ maxFailures: 10 });
  const legacy = await Promise.all(Array.from({ length: 50 }, async () => {
    if (!old.check(ip).allowed) return 'throttled';
    await new Promise((r) => setImmediate(r));
    old.recordFailure(ip);
    return 'failed';
  }));
  assert.equal(legacy.filter((r) => r === 'failed').length, 50);
});

test('auth-throttle: acquire counts at once, recordFailure confirms, recordSuccess refunds only what acquire counted', () => {
  const clock = new ManualClock(0);
  const t = new AuthThrottle({ maxFailures: 2, clock });
  const ip = '192.0.2.44';
  assert.equal(t.acquire(ip).allowed, true);
  assert.equal(t.acquire(ip).allowed, true);
  assert.deepEqual(t.acquire(ip), { allowed: false, retryAfterMs: 60_000 }, 'two attempts in flight fill the budget');
  t.recordSuccess(ip); // refund one
  assert.equal(t.check(ip).allowed, true);
  t.recordFailure(ip); // confirm the other: still one counted
  assert.equal(t.acquire(ip).allowed, true);
  assert.equal(t.recordFailure(ip).allowed, false);
  // A success without an acquired attempt refunds nothing (earlier failures stay counted).
  t.recordSuccess(ip);
  assert.equal(t.check(ip).allowed, false);
  clock.advance(60_000);
  assert.equal(t.check(ip).allowed, true);
  // A successful login in between guesses does not clear them, and refunds only itself.
  t.recordFailure(ip);
  assert.equal(t.acquire(ip).allowed, true);
  t.recordSuccess(ip);
  assert.equal(t.recordFailure(ip).allowed, false, 'the two real failures count');
  // An attempt that expires in flight cannot later refund a newer failure.
  t.reset(ip);
  assert.equal(t.acquire(ip).allowed, true);
  clock.advance(60_001);
  t.recordFailure('192.0.2.45'); // other traffic
  assert.equal(t.check(ip).allowed, true);
  t.recordFailure(ip);
  t.recordFailure(ip);
  t.recordSuccess(ip); // the stale attempt is gone: nothing is refunded
  assert.equal(t.check(ip).allowed, false);
});
