import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLogger } from '../core/log.ts';
import { RelayMetrics, observingLogger } from './metrics.ts';
import { OverviewSeries } from './series.ts';
import { queueCounts } from '../queue/index.ts';

function rig(capacity = 1440) {
  let now = 1_000_000_000_000;
  let queue: Record<string, number> | Error = { queued: 0, hold: 0 };
  let open = 0;
  let ordb = 0;
  const m = new RelayMetrics('n1', { processMetrics: false });
  m.setSources({
    connections: () => open,
    queueCounts: async () => { if (queue instanceof Error) throw queue; return queueCounts(Object.entries(queue).map(([state, messages]) => ({ state, messages, oldest: 0 })), 0); },
    ordbDns: () => ({ answered: ordb, nxdomain: 0, formerr: 0, refused: 0, dropped: 0 }),
  });
  const log = observingLogger(new MemoryLogger(), (msg, f) => m.observe(msg, f));
  const series = new OverviewSeries({ node: 'n1', metrics: m, now: () => now, capacity });
  return {
    series, log,
    advance(ms: number) { now += ms; },
    setQueue(q: Record<string, number> | Error) { queue = q; },
    setOpen(n: number) { open = n; },
    setOrdb(n: number) { ordb = n; },
  };
}

test('series: per-minute deltas of the counters, sampled gauges, and the minute in progress last', async () => {
  const r = rig();
  await r.series.sample(); // t0: the base
  r.advance(60_000);
  r.log.info('message accepted', { rcpts: 1 });
  r.log.info('message accepted', { rcpts: 1 });
  r.log.warn('relay decision', { action: 'reject', rule: 'default-deny' });
  r.log.info('recipient delivered', { route: 'local' });
  r.log.info('session closed', { listener: 'mx' });
  r.setQueue({ queued: 4, hold: 1 });
  r.setOpen(3);
  r.setOrdb(600);
  await r.series.sample(); // t1: minute 1
  r.advance(30_000);
  r.log.info('recipient deferred', { route: 'mx' });
  r.log.warn('relay decision', { action: 'reject', rule: 'dnsbl' });
  r.log.info('recipient bounced', {});
  r.setOrdb(630);
  const d = r.series.query(60);
  assert.equal(d.node, 'n1');
  assert.equal(d.stepSeconds, 60);
  assert.equal(d.partial, true);
  assert.deepEqual(d.t, [1_000_000_060, 1_000_000_090]);
  assert.deepEqual(d.messages, { in: [2, 0], delivered: [1, 0], deferred: [0, 1], bounced: [0, 1] });
  assert.deepEqual(d.refusals, { 'default-deny': [1, 0], dnsbl: [0, 1] });
  // The queue of the minute in progress is the last sample's (a request never walks the queue).
  assert.deepEqual(d.queue['queued'], [4, 4]);
  assert.deepEqual(d.queue['hold'], [1, 1]);
  assert.deepEqual(d.queue['corrupt'], [0, 0]);
  assert.deepEqual(d.dns.ordbQueries, [10, 1]); // 600 in 60 s, 30 in 30 s
  assert.deepEqual(d.connections, { open: [3, 3], sessions: [1, 0] });
  // A window of one minute: only the minute in progress.
  assert.deepEqual(r.series.query(1).t, [1_000_000_090]);
});

test('series: a failed queue read is a gap (null), the ring keeps its capacity, and a stopped series has no timer', async () => {
  const r = rig(3);
  await r.series.sample();
  r.setQueue(new Error('store down'));
  r.advance(60_000);
  await r.series.sample();
  const d = r.series.query(60);
  assert.deepEqual(d.queue['queued'], [null, 0]);
  for (let i = 0; i < 5; i++) {
    r.advance(60_000);
    r.log.info('message accepted', { rcpts: 1 });
    await r.series.sample();
  }
  const full = r.series.query(1440);
  // 3 samples kept: 2 deltas between them plus the minute in progress.
  assert.equal(full.t.length, 3);
  assert.deepEqual(full.messages.in, [1, 1, 0]);
  r.series.start();
  r.series.stop();
});

test('series: json() reuses an answer for cacheMs and drops it when a sample is taken', async () => {
  const r = rig();
  await r.series.sample();
  r.advance(10_000);
  const a = r.series.json(60);
  r.log.info('message accepted', { rcpts: 1 });
  r.advance(500);
  assert.equal(r.series.json(60), a, 'within a second: the same answer');
  assert.notEqual(r.series.json(30), a, 'another window: its own answer');
  r.advance(600);
  const b = JSON.parse(r.series.json(60));
  assert.deepEqual(b.messages.in, [1], 'after a second: the new count');
  r.log.info('message accepted', { rcpts: 1 });
  await r.series.sample();
  assert.deepEqual(JSON.parse(r.series.json(60)).messages.in, [2, 0], 'a sample drops the cached answers');
});

test('series: the queue of the minute in progress is read again in the background when older than 10 s, never awaited', async () => {
  const r = rig();
  await r.series.sample();
  r.setQueue({ queued: 7 });
  r.advance(5_000);
  assert.deepEqual(r.series.query(60).queue['queued'], [0], 'fresh enough: not read again');
  r.advance(6_000);
  assert.deepEqual(r.series.query(60).queue['queued'], [0], 'stale: this answer still has the old counts, a read starts');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(r.series.query(60).queue['queued'], [7], 'the next answer has the new counts');
});
