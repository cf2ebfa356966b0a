/**
 * Issue 10, "PostgreSQL with a synchronous standby: kill -9 the primary during load, promote the standby, point the
 * nodes at it: no message that got a 250 is missing". Real PostgreSQL 15 primary + synchronous streaming standby
 * (src/testing/postgres-pair.ts, synchronous_commit on: a COMMIT returns once the standby has the WAL on disk),
 * two real `relayguard serve` nodes on the primary behind HAProxy (docs/cluster.md's configuration), delivering to
 * loopback sinks; the load from 127.0.0.3 (trusted) through HAProxy with unique Message-IDs (runLoad).
 *
 *   1. the primary's postmaster gets SIGKILL in the middle of the load;
 *   2. while it is down, every reply to a message is 451 4.3.0 or a broken session: never 250, never 5xx, and the
 *      nodes keep running;
 *   3. a reload cannot move a node to another database: SIGHUP with store.postgres.url changed is refused with
 *      ERR_RELOAD_RESTART (the node keeps its configuration), so the nodes are restarted with the standby's URL
 *      (same ports: HAProxy's backends stay as they are) after `pg_ctl promote`;
 *   4. every message that got a 250 is in the promoted database's queue or delivered at a sink, and after the
 *      restart the nodes deliver all of them; intake works again (250 through HAProxy).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { startPostgresPair, type PostgresPair } from '../../src/testing/postgres-pair.ts';
import { arrivals, pgQuery, runLoad, sleep, startCluster, startNode, type Cluster} from '../../src/testing/cluster-rig.ts';

let pair: PostgresPair;
let cluster: Cluster | undefined;

before(async () => {
  pair = await startPostgresPair();
  cluster = await startCluster({ pgUrl: pair.primary.url, leaseTime: '3s', sinkDelayMs: 300 });
});

after(async () => {
  await cluster?.stop();
  await pair?.stop();
});

test('kill -9 of the synchronous primary under load: 451 4.3.0 while down, promote, restart the nodes on the standby, no 250 missing', { timeout: 150_000 }, async () => {
  const c = cluster!;
  const sinks = c.nodes.map((n) => n.sink);
  let stopLoad = false;
  const load = runLoad({ port: c.port, sessions: 6, prefix: 'sb', stop: () => stopLoad, replyTimeoutMs: 40_000 });

  const deadline = Date.now() + 20_000;
  while (arrivals(sinks).size < 60 && Date.now() < deadline) await sleep(50);
  await pair.killPrimary();
  const tKill = Date.now();
  await sleep(3000); // the load goes on against a dead database
  stopLoad = true;
  const { results, refused } = await load;
  for (const n of c.nodes) assert.equal(n.serve.child.exitCode, null, `${n.name} exited while the database was down: ${n.serve.stderr()}`);

  const ok = results.filter((r) => r.code === 250);
  const during = results.filter((r) => r.at > tKill + 500); // replies that came well after the kill
  const bad = results.filter((r) => r.code !== 250 && r.code !== null && !(r.code === 451 && r.enhanced === '4.3.0'));
  assert.deepEqual(bad, [], 'a reply other than 250, 451 4.3.0 or a broken session');
  assert.ok(during.length > 0, 'no message was tried while the primary was down');
  assert.deepEqual(during.filter((r) => r.code === 250), [], 'a 250 while the primary was down');
  assert.ok(during.some((r) => r.code === 451), 'no 451 4.3.0 while the primary was down');
  assert.ok(ok.length >= 20, `only ${ok.length} accepted before the kill`);

  await pair.promoteStandby();
  // No 250 missing: in the promoted queue (read now, before any node uses it) or already delivered.
  const queued = new Set((await pgQuery<{ message_id: string }>(pair.standby.url, 'SELECT message_id FROM queue_messages')).map((r) => r.message_id));
  const got = arrivals(sinks);

  // A reload cannot point a node at another database: store changes need a restart.
  const a = c.nodes[0]!;
  const cfg = readFileSync(a.serve.configFile, 'utf8');
  assert.ok(cfg.includes(pair.primary.url));
  writeFileSync(a.serve.configFile, cfg.split(pair.primary.url).join(pair.standby.url));
  const mark = a.serve.logs.length;
  a.serve.child.kill('SIGHUP');
  const until = Date.now() + 10_000;
  while (!a.serve.logs.slice(mark).some((l) => l['err_code'] === 'ERR_RELOAD_RESTART') && Date.now() < until) await sleep(50);
  assert.ok(a.serve.logs.slice(mark).some((l) => l['err_code'] === 'ERR_RELOAD_RESTART'), JSON.stringify(a.serve.logs.slice(mark)));

  // Restart both nodes on the promoted standby, same ports (HAProxy's backends are unchanged).
  const oldLogs: Record<string, unknown>[] = [];
  for (const n of c.nodes) {
    const old = n.serve;
    await old.stop(5000);
    oldLogs.push(...old.logs);
    await old.cleanup();
    n.serve = (await startNode({ name: n.name, pgUrl: pair.standby.url, sink: n.sink, leaseTime: '3s', ports: n.ports, webPort: n.webPort })).serve;
  }
  await c.waitServers('UP', ['mx1', 'mx2']);

  const lost = ok.filter((r) => !got.has(r.messageId) && !queued.has(r.messageId));
  assert.deepEqual(lost.map((r) => r.messageId), [], 'messages answered 250 that are neither delivered nor in the promoted queue');
  assert.ok(ok.some((r) => queued.has(r.messageId)), 'no accepted message was still queued at the failover (the test proves nothing)');

  for (const sink of sinks) sink.delayMs = 0;
  // Intake works again, and the restarted nodes deliver everything.
  const t0 = Date.now();
  const afterLoad = await runLoad({ port: c.port, sessions: 2, perConnection: 3, prefix: 'sb-after', stop: () => Date.now() - t0 > 1500 });
  const after = afterLoad.results;
  assert.ok(after.length > 0 && afterLoad.refused === 0, `intake after the failover: ${after.length} sent, ${afterLoad.refused} connections refused`);
  for (const r of after) assert.equal(r.code, 250, `${r.code} ${r.text}`);
  const want = [...ok, ...after].map((r) => r.messageId);
  const drain = Date.now() + 30_000;
  while (want.some((id) => !arrivals(sinks).has(id)) && Date.now() < drain) await sleep(100);
  assert.deepEqual(want.filter((id) => !arrivals(sinks).has(id)), [], 'not delivered after the failover');
  // Duplicates: deliveries the old nodes made but could not record (the database died under them: counted as
  // possible duplicates) or stopped without knowing the outcome (the restart).
  const dups = [...arrivals(sinks).values()].filter((n) => n > 1).length;
  const unrecorded = oldLogs.filter((l) => l['msg'] === 'delivery outcome not recorded; possible duplicate').reduce((t, l) => t + Number(l['delivered'] ?? 0), 0);
  const interrupted = oldLogs.filter((l) => l['msg'] === 'delivery interrupted by stop').length;
  assert.ok(dups <= unrecorded + interrupted, `${dups} duplicates, only ${unrecorded} counted as possible duplicates and ${interrupted} interrupted`);
  console.log(`cluster-standby: ${JSON.stringify({
    accepted: ok.length, refused, tempfail: results.filter((r) => r.code === 451).length, broken: results.filter((r) => r.code === null).length,
    queuedAtPromotion: queued.size, deliveredBeforeRestart: got.size, acceptedAfter: after.length,
    duplicates: dups, possibleDuplicatesCounted: unrecorded, interruptedByStop: interrupted,
  })}`);
});
