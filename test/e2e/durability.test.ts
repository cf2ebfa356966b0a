/**
 * Durability of `relayguard serve` seen from outside the process (hostile-inputs.md section 2, T1-T4):
 *   - kill -9 at random moments under concurrent load: every Message-ID that got a 250 is in the queue after the
 *     restart (at least once) with its whole body, recovery leaves no temp file and no orphan body;
 *   - strace: for a small message (body stored inline in the index) the WAL writes and then a WAL fdatasync that
 *     started after the last of them return before the socket write that carries "250 2.0.0 Ok: queued as"; for a
 *     large one (spool file) the body fsync, the rename, the spool directory fsync, then the same WAL write + sync;
 *   - a small tmpfs fills up: 452/451 and never 250 for what could not be stored, the process keeps serving, and
 *     mail is accepted again once space returns.
 * Replay a kill run with DURABILITY_SEED=<printed seed>.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, existsSync, ftruncateSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QueueStore } from '../../src/queue/index.ts';
import { startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import {
  alive, assertServing, messageText, mountTmpfs, p1, pidsWithArg, prng, queuedById, queuedMessages, seedFrom, sleep, spoolEntries, transaction,
  type RawSmtpClient,
} from './load-helpers.ts';

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const f of cleanups.reverse()) {
    try { await f(); } catch (err) { console.error('cleanup failed:', err); }
  }
});


// ---------------------------------------------------------------------------------------------------------------
// kill -9 under concurrent load

test('durability: kill -9 at random moments under 10 concurrent clients; every 250 survives the restart', { timeout: 180_000 }, async (t) => {
  // The seed fixes the kill schedule and the message sizes (not the exact interleaving of the clients).
  const seed = seedFrom('DURABILITY_SEED');
  const rand = prng(seed);
  t.diagnostic(`seed ${seed} (replay with DURABILITY_SEED=${seed})`);
  console.log(`[durability] kill -9 seed=${seed}`);

  const CLIENTS = 10;
  const ROUNDS = 5;
  const acked = new Set<string>();          // Message-IDs whose final reply was 250
  const attempted = new Set<string>();      // Message-IDs whose end-of-data dot was written
  const refused = new Map<string, number>(); // Message-ID -> non-250 final reply code
  const firstServe = await startServe();
  // Each restart takes fresh ports: on a busy machine an outgoing connection may hold the old port's number as its
  // local port (EADDRINUSE); what must survive is the data directory, not the port.
  const { dataDir } = firstServe;
  cleanups.push(() => firstServe.cleanup());
  let serve: ServeProcess = firstServe;
  cleanups.push(() => serve.kill9());
  const tempLeftAtKill: number[] = [];
  const recoveries: Record<string, unknown>[] = [];
  let seq = 0;

  for (let round = 1; round <= ROUNDS; round++) {
    if (round > 1) {
      serve = await startServe({ dataDir, onLog: (l) => { if (l['msg'] === 'spool recovered') recoveries.push(l); } });
    }
    const killer = { armed: false, fired: false };
    let fire: () => void = () => {};
    const killed = new Promise<void>((resolve) => { fire = resolve; });
    // Any client's end-of-data dot pulls the trigger once armed: the kill lands 0-4 ms later, in the commit
    // window (body fsync, rename, directory fsync, WAL commit, 250) of one or more messages.
    const onDot = (): void => {
      if (!killer.armed || killer.fired) return;
      killer.fired = true;
      setTimeout(() => { void serve.kill9().then(fire); }, Math.floor(rand() * 5));
    };
    const loops = Array.from({ length: CLIENTS }, async (_, k) => {
      const sizes = prng(seed + round * 1000 + k + 1);
      let c: RawSmtpClient | null = null;
      try {
        c = await p1(serve.ports.mx);
        while (!killer.fired) {
          const id = `r${round}.c${k}.${seq++}.${seed}@durability.test`;
          // Sizes from 200 B to ~96 KiB, so some kills also land while a body streams in.
          const bodyBytes = sizes() < 0.7 ? 200 + Math.floor(sizes() * 4000) : 16_384 + Math.floor(sizes() * 81_920);
          const r = await transaction(c, id, { bodyBytes, timeoutMs: 15_000, onDot: () => { attempted.add(id); onDot(); } });
          if (r.stage !== 'END') throw new Error(`refused at ${r.stage}: ${r.reply.lines.join(' | ')}`);
          if (r.reply.code === 250) acked.add(id); else refused.set(id, r.reply.code);
        }
      } catch (err) {
        // The connection dies with the server: expected once the kill fired, a failure before.
        if (!killer.fired) throw err;
      } finally {
        c?.close();
      }
    });
    const ackedBefore = acked.size;
    // Let the load settle, then arm the trigger at a random moment.
    const settle = 300 + Math.floor(rand() * 1200);
    setTimeout(() => { killer.armed = true; }, settle);
    const guard = setTimeout(() => { if (!killer.fired) { killer.fired = true; void serve.kill9().then(fire); } }, settle + 20_000);
    await killed;
    clearTimeout(guard);
    await Promise.all(loops);
    assert.ok(acked.size > ackedBefore, `round ${round}: no message was accepted before the kill`);
    const temps = spoolEntries(dataDir, 'tmp').length;
    tempLeftAtKill.push(temps);
    t.diagnostic(`round ${round}: killed after ${settle} ms + trigger; 250s so far ${acked.size}; temp files left by the kill ${temps}`);
  }

  // Clean restart with no load: recovery must have removed every temp file and uncommitted body.
  serve = await startServe({ dataDir, onLog: (l) => { if (l['msg'] === 'spool recovered') recoveries.push(l); } });
  assert.deepEqual(spoolEntries(dataDir, 'tmp'), [], 'temp spool files survived recovery');
  await assertServing(serve.ports.mx, 'restarted server');
  await serve.stop();
  assert.deepEqual(spoolEntries(dataDir, 'tmp'), [], 'temp spool files after a clean stop');

  const entries = queuedMessages(dataDir);
  const queued = new Map<string, number>();
  for (const m of entries) queued.set(m.messageId, (queued.get(m.messageId) ?? 0) + 1);
  const lost = [...acked].filter((id) => !queued.has(id));
  const duplicates = [...queued.values()].filter((n) => n > 1).length;
  const unackedPresent = [...attempted].filter((id) => !acked.has(id) && !refused.has(id) && queued.has(id)).length;
  const unackedTotal = [...attempted].filter((id) => !acked.has(id) && !refused.has(id)).length;
  const bodies = spoolEntries(dataDir, 'msg').length;
  const total = entries.length;
  const corrupt = entries.filter((m) => m.state === 'corrupt').length;
  // Every queued message has its whole body: a spool file of the recorded size, or an inline body of that size
  // (committed in the same transaction as its record), holding its own Message-ID.
  let fileBodies = 0;
  let inlineBodies = 0;
  const badBodies: string[] = [];
  {
    const store = QueueStore.open({ dataDir, readOnly: true });
    try {
      for (const m of store.list()) {
        const d = store.get(m.queueId)!;
        if (d.bodyInline) inlineBodies++;
        else fileBodies++;
        let body: Buffer | null = null;
        try { body = store.readBody(m.queueId); } catch { /* reported below */ }
        if (body === null || body.length !== d.size || !body.includes(`Message-ID: <${(m.messageId ?? '').replace(/^<|>$/g, '')}>`)) {
          badBodies.push(`${m.queueId} (${d.bodyInline ? 'inline' : 'file'}, ${body?.length ?? 'unreadable'} of ${d.size} bytes)`);
        }
      }
    } finally {
      await store.close();
    }
  }
  const summary = `250s ${acked.size}, found ${acked.size - lost.length}, lost ${lost.length}, duplicates ${duplicates}, ` +
    `queue entries ${total} (${inlineBodies} inline, ${fileBodies} in files), body files ${bodies}, corrupt ${corrupt}, in flight at a kill (dot sent, no reply) ${unackedTotal} ` +
    `of which queued ${unackedPresent}, non-250 final replies ${refused.size}, temp files left by kills ${tempLeftAtKill.join('/')}, ` +
    `recovery events ${JSON.stringify(recoveries.map((r) => ({ tmp: r['temp_files_removed'], bodies: r['uncommitted_bodies_removed'], missing: r['missing_bodies'] })))}`;
  t.diagnostic(summary);
  console.log(`[durability] kill -9 x${ROUNDS}: ${summary}`);

  assert.deepEqual(lost, [], `messages acknowledged with 250 but missing after restart (seed ${seed})`);
  assert.equal(refused.size, 0, `unexpected non-250 final replies: ${JSON.stringify([...refused])}`);
  assert.equal(corrupt, 0, 'a committed message lost its body');
  assert.equal(bodies, fileBodies, 'every body file has exactly one commit record (no orphan after recovery)');
  assert.equal(inlineBodies + fileBodies, total);
  assert.ok(inlineBodies > 0 && fileBodies > 0, `the load exercised both inline bodies and spool files (${inlineBodies}/${fileBodies})`);
  assert.deepEqual(badBodies, [], 'a queued message with a missing, short or foreign body');
  // Every message whose 250 was never seen may or may not be there; nothing unknown may be.
  for (const id of queued.keys()) assert.ok(attempted.has(id), `queued message ${id} was never sent`);
});

// ---------------------------------------------------------------------------------------------------------------
// strace: durable writes before the 250

interface TraceEvent {
  readonly line: number;
  readonly pid: string;
  readonly kind: 'enter' | 'exit';
  readonly name: string;
  readonly args: string;
  readonly ret: string | null;
}

/** `strace -f -tt -yy` output -> enter/exit events in trace order (unfinished/resumed pairs joined per thread). */
function parseTrace(text: string): TraceEvent[] {
  const events: TraceEvent[] = [];
  const pending = new Map<string, { name: string; args: string }>();
  text.split('\n').forEach((raw, line) => {
    const m = /^(\d+)\s+(?:\d\d:\d\d:\d\d\.\d+\s+)?(.*)$/.exec(raw);
    if (m === null) return;
    const pid = m[1]!;
    const rest = m[2]!;
    const resumed = /^<\.\.\. (\w+) resumed>(.*?)\)?\s*=\s*(.*)$/.exec(rest);
    if (resumed !== null) {
      const p = pending.get(pid);
      pending.delete(pid);
      events.push({ line, pid, kind: 'exit', name: resumed[1]!, args: (p?.args ?? '') + resumed[2]!, ret: resumed[3]!.trim() });
      return;
    }
    const unfinished = /^(\w+)\((.*) <unfinished \.\.\.>$/.exec(rest);
    if (unfinished !== null) {
      pending.set(pid, { name: unfinished[1]!, args: unfinished[2]! });
      events.push({ line, pid, kind: 'enter', name: unfinished[1]!, args: unfinished[2]!, ret: null });
      return;
    }
    const complete = /^(\w+)\((.*)\)\s*=\s*(.*)$/.exec(rest);
    if (complete !== null) {
      events.push({ line, pid, kind: 'enter', name: complete[1]!, args: complete[2]!, ret: null });
      events.push({ line, pid, kind: 'exit', name: complete[1]!, args: complete[2]!, ret: complete[3]!.trim() });
    }
  });
  return events;
}

test('durability: strace shows the durable writes (WAL fdatasync for an inline body; fsync(body), fsync(spool dir) and WAL sync for a spool file) complete before "250 ... queued as" is written', { timeout: 180_000 }, async (t) => {
  assert.ok(existsSync('/usr/bin/strace'), '/usr/bin/strace is required');
  const work = mkdtempSync(join(tmpdir(), 'relayguard-strace-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  const traceFile = join(work, 'trace.txt');
  const dataDir = join(work, 'data');
  mkdirSync(dataDir);
  const configFile = join(dataDir, 'relayguard.yaml');
  // strace 6.1 has no --kill-on-exit: killing strace would leave the traced server running (and holding the
  // stdout pipe). Every process with this config path in its argv is ours; kill those by pid whatever happens.
  // The traced server names itself "relayguard" (process.title), so it is found by the pid it logs at start.
  let tracedPid = 0;
  const killTraced = (signal: NodeJS.Signals): number[] => {
    const pids = tracedPid > 0 && alive(tracedPid) ? [tracedPid] : [];
    for (const pid of pids) { try { process.kill(pid, signal); } catch { /* gone */ } }
    return pids;
  };
  cleanups.push(() => { killTraced('SIGKILL'); });
  const started = Date.now();
  const serve = await startServe({
    dataDir,
    wrap: ['/usr/bin/strace', '-f', '-tt', '-yy', '-s', '128', '-o', traceFile,
      '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,pwrite64,sendto,sendmsg,openat'],
  });
  cleanups.push(() => serve.kill9());
  tracedPid = Number(serve.logs.find((l) => l['msg'] === 'starting')?.['pid'] ?? 0);
  const startMs = Date.now() - started;

  // A small message (its body goes inline into the index) and a large one (past the 64 KiB inline limit: a spool
  // file), in one session.
  const c = await p1(serve.ports.mx);
  const sent = Date.now();
  const queueIds: string[] = [];
  for (const [n, bodyBytes] of [[1, 200], [2, 100_000]] as const) {
    const r = await transaction(c, `traced.${n}@durability.test`, { timeoutMs: 60_000, bodyBytes });
    assert.equal(r.stage, 'END');
    assert.equal(r.reply.code, 250, r.reply.lines.join(' | '));
    const queueId = /queued as (\S+)/.exec(r.reply.text)?.[1];
    assert.ok(queueId !== undefined, `no queue id in ${r.reply.text}`);
    queueIds.push(queueId);
  }
  const replyMs = Date.now() - sent;
  const [smallId, largeId] = queueIds as [string, string];
  c.close();
  // Stop the traced server itself (SIGTERM to strace would only detach it); strace exits with it.
  assert.equal(killTraced('SIGTERM').length, 1, 'the traced relayguard process was not found');
  const t0 = Date.now();
  while (serve.child.exitCode === null && serve.child.signalCode === null && Date.now() - t0 < 30_000) await sleep(50);
  await serve.kill9();
  assert.deepEqual(queuedById(dataDir, 'traced.1@durability.test').map((m) => m.queueId), [smallId]);
  assert.deepEqual(queuedById(dataDir, 'traced.2@durability.test').map((m) => m.queueId), [largeId]);
  {
    const store = QueueStore.open({ dataDir, readOnly: true });
    try {
      assert.equal(store.get(smallId)?.bodyInline, true, 'the small body is inline');
      assert.equal(store.get(largeId)?.bodyInline, false, 'the large body is a spool file');
    } finally {
      await store.close();
    }
  }

  const trace = readFileSync(traceFile, 'utf8');
  const ev = parseTrace(trace);
  const isSync = (e: TraceEvent): boolean => e.name === 'fsync' || e.name === 'fdatasync';
  const isBody = (id: string) => (e: TraceEvent): boolean => e.args.includes(`/spool/tmp/${id}.tmp>`) || e.args.includes(`/spool/msg/${id}.eml>`);
  const isDir = (e: TraceEvent): boolean => /<[^>]*\/spool\/msg>/.test(e.args);
  const isWal = (e: TraceEvent): boolean => e.args.includes('/queue.db-wal>');
  const isWrite = (e: TraceEvent): boolean => /^(write|writev|sendto|sendmsg)$/.test(e.name);
  const idx = (what: string, from: number, pred: (e: TraceEvent) => boolean): number => {
    const i = ev.findIndex((e, k) => k > from && pred(e));
    assert.ok(i >= 0, `no ${what} after event ${from} in the trace (${ev.length} events)`);
    return i;
  };
  const lineOf = (i: number): string => `trace line ${ev[i]!.line + 1}`;
  // The socket write carrying a message's 250 (strace -s 128 shows the start of the buffer; -yy names the socket).
  const replyOf = (id: string): number => idx(`write of "250 2.0.0 Ok: queued as ${id}"`, -1,
    (e) => e.kind === 'enter' && isWrite(e) && e.args.includes(`250 2.0.0 Ok: queued as ${id}`) && /^\d+<(TCP|TCPv6|socket):/.test(e.args));
  /**
   * The commit record's durability: the last WAL write before the 250 (the runner is off, so every WAL write comes
   * from receiving), then a WAL fsync/fdatasync that started after it and returned 0 before the 250.
   */
  const walDurable = (reply: number, after: number): { walWrite: number; walSync: number } => {
    let walWrite = -1;
    ev.forEach((e, i) => { if (i < reply && e.kind === 'exit' && e.name === 'pwrite64' && isWal(e)) walWrite = i; });
    assert.ok(walWrite > after, `no WAL write between event ${after} and the 250`);
    const syncEnter = idx('WAL sync started after the last WAL write', walWrite, (e) => e.kind === 'enter' && isSync(e) && isWal(e));
    const walSync = idx('WAL sync return', syncEnter, (e) => e.kind === 'exit' && isSync(e) && isWal(e) && e.pid === ev[syncEnter]!.pid);
    assert.equal(ev[walSync]!.ret, '0', 'the WAL sync succeeded');
    assert.ok(walSync < reply, 'the WAL sync returned before the 250 was written');
    return { walWrite, walSync };
  };

  try {
    // Inline body: no spool file at all; WAL write -> WAL sync -> 250.
    const smallReply = replyOf(smallId);
    assert.ok(!ev.some((e) => isBody(smallId)(e) || e.args.includes(`${smallId}.tmp`) || e.args.includes(`${smallId}.eml`)),
      'the inline message created no spool file');
    const small = walDurable(smallReply, -1);

    // Spool file: fsync(body) -> rename -> fsync(spool/msg) -> WAL write -> WAL sync -> 250.
    const largeReply = replyOf(largeId);
    const bodyWrite = idx('a body write', smallReply, (e) => e.kind === 'enter' && /^(write|writev|pwrite64)$/.test(e.name) && isBody(largeId)(e));
    const bodySync = idx('fsync(body) return', bodyWrite, (e) => e.kind === 'exit' && isSync(e) && isBody(largeId)(e));
    const rename = idx('rename tmp -> msg', -1, (e) => e.kind === 'exit' && e.name.startsWith('rename') && e.args.includes(`${largeId}.tmp`) && e.args.includes(`${largeId}.eml`));
    const dirSync = idx('fsync(spool/msg) return', rename, (e) => e.kind === 'exit' && isSync(e) && isDir(e));
    const large = walDurable(largeReply, dirSync);
    t.diagnostic(`serve start under strace ${startMs} ms; DATA-to-250 x2 ${replyMs} ms; trace ${trace.length} bytes, ${ev.length} events`);
    t.diagnostic(`inline: WAL write ${lineOf(small.walWrite)}, WAL sync ${lineOf(small.walSync)}, 250 write ${lineOf(smallReply)}`);
    t.diagnostic(`file: fsync(body) ${lineOf(bodySync)}, rename ${lineOf(rename)}, fsync(dir) ${lineOf(dirSync)}, WAL write ${lineOf(large.walWrite)}, WAL sync ${lineOf(large.walSync)}, 250 write ${lineOf(largeReply)}`);
    console.log(`[durability] strace: start ${startMs} ms, DATA-to-250 x2 ${replyMs} ms; inline: WAL write@${ev[small.walWrite]!.line + 1} < WAL sync@${ev[small.walSync]!.line + 1} < 250@${ev[smallReply]!.line + 1}; ` +
      `file: fsync(body)@${ev[bodySync]!.line + 1} < rename@${ev[rename]!.line + 1} < fsync(dir)@${ev[dirSync]!.line + 1} < WAL write@${ev[large.walWrite]!.line + 1} < WAL sync@${ev[large.walSync]!.line + 1} < 250@${ev[largeReply]!.line + 1}`);

    assert.equal(ev[bodySync]!.ret, '0', 'fsync(body) succeeded');
    assert.ok(bodySync < rename, 'the body is fsynced before the rename');
    assert.ok(rename < dirSync, 'the spool directory is fsynced after the rename');
    assert.ok(dirSync < large.walWrite, 'the commit record is written after the directory fsync');
    assert.ok(bodySync < largeReply, 'fsync(body) returned before the 250 was written');
    assert.ok(dirSync < largeReply, 'fsync(spool/msg) returned before the 250 was written');
    assert.ok(large.walSync < largeReply, 'the WAL sync returned before the 250 was written');
  } catch (err) {
    const keep = join(tmpdir(), `relayguard-durability-trace-${Date.now()}.txt`);
    copyFileSync(traceFile, keep);
    console.error(`[durability] strace assertion failed; trace kept at ${keep}`);
    throw err;
  }
});

// ---------------------------------------------------------------------------------------------------------------
// disk full on a small tmpfs

/** Fills the filesystem with one file until ENOSPC; returns its fd (kept open so it can be shrunk). */
function fill(path: string): number {
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(65_536, 0x78);
  const page = Buffer.alloc(4096, 0x78);
  try {
    for (;;) writeSync(fd, block);
  } catch (err) {
    assert.equal((err as { code?: unknown }).code, 'ENOSPC');
  }
  try {
    for (;;) writeSync(fd, page);
  } catch (err) {
    assert.equal((err as { code?: unknown }).code, 'ENOSPC');
  }
  return fd;
}

test('durability: the queue tmpfs fills up -> 452/451, never 250 for an unstored message; the server recovers when space returns', { timeout: 120_000 }, async (t) => {
  const fs = mountTmpfs('size=4m');
  cleanups.push(() => fs.unmount());
  const dataDir = join(fs.dir, 'data');
  mkdirSync(dataDir);
  const MESSAGE_SIZE = 256 * 1024;
  const serve = await startServe({ dataDir, config: { limits: { messageSize: MESSAGE_SIZE } } });
  cleanups.push(() => serve.kill9());
  const port = serve.ports.mx;
  const filler = join(fs.dir, 'filler');
  const outcomes: string[] = [];
  let n = 0;
  const nextId = (): string => `full.${++n}@durability.test`;

  // Baseline: space available -> 250 and listed.
  {
    const c = await p1(port);
    const id = nextId();
    const r = await transaction(c, id);
    assert.equal(r.reply.code, 250, r.reply.lines.join(' | '));
    assert.equal(queuedById(dataDir, id).length, 1);
    c.close();
  }

  // 1. Full before MAIL: 452 4.3.1 at MAIL (Postfix-style space check), never 250; the process keeps serving.
  let fd = fill(filler);
  {
    const c = await p1(port);
    const id = nextId();
    const r = await transaction(c, id);
    outcomes.push(`full before MAIL: ${r.stage} ${r.reply.lines.join(' | ')}`);
    assert.notEqual(r.reply.code, 250, 'a message was accepted on a full disk');
    assert.equal(r.stage, 'MAIL');
    assert.equal(r.reply.code, 452);
    assert.equal(r.reply.enhanced, '4.3.1');
    assert.deepEqual(queuedById(dataDir, id), []);
    // The session survives the refusal.
    assert.equal((await c.cmd('NOOP')).code, 250);
    c.close();
  }
  assert.ok(alive(serve.pid), 'the server died on a full disk');
  await assertServing(port, 'server on a full disk');

  // 2. The disk fills up between MAIL and the end of DATA, leaving 0..8 pages free: 451/452 (or 250 only when
  //    the message really fit and is listed); temp data removed; the process keeps serving.
  closeSync(fd);
  unlinkSync(filler);
  const bodyBytes = 48 * 1024;
  for (let pages = 0; pages <= 24; pages += 2) {
    const c = await p1(port);
    const id = nextId();
    assert.equal((await c.cmd('MAIL FROM:<a@client.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<u@local.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    fd = fill(filler);
    const size = fstatSync(fd).size;
    ftruncateSync(fd, Math.max(0, size - pages * 4096));
    c.write(messageText(id, bodyBytes) + '.\r\n');
    const r = await c.readReply(15_000);
    const listed = queuedById(dataDir, id);
    outcomes.push(`mid-DATA, ${pages} pages free: ${r.lines.join(' | ')}`);
    if (r.code === 250) {
      assert.equal(listed.length, 1, `250 for ${id} but it is not in the queue`);
    } else {
      assert.ok(r.code === 451 || r.code === 452, `expected 451/452 when the disk fills mid-DATA, got ${r.lines.join(' | ')}`);
      assert.deepEqual(listed, [], `refused message ${id} is in the queue`);
    }
    assert.deepEqual(spoolEntries(dataDir, 'tmp'), [], 'temp spool data left behind after the refusal');
    assert.equal((await c.cmd('RSET')).code, 250, `session broken after a ${r.code}`);
    c.close();
    closeSync(fd);
    unlinkSync(filler);
    assert.ok(alive(serve.pid), 'the server died when the disk filled mid-DATA');
  }
  const refusedMidData = outcomes.filter((o) => o.startsWith('mid-DATA') && !/: 250 /.test(o)).length;
  assert.ok(refusedMidData > 0, 'the mid-DATA fill never produced a refusal (the test did not fill the disk)');

  // 3. Space has returned: accepted and listed.
  await assertServing(port, 'server after the disk was full');
  {
    const c = await p1(port);
    const id = nextId();
    const r = await transaction(c, id);
    outcomes.push(`space returned: ${r.reply.lines.join(' | ')}`);
    assert.equal(r.reply.code, 250, `not accepted after space returned: ${r.reply.lines.join(' | ')}`);
    assert.equal(queuedById(dataDir, id).length, 1);
    c.close();
  }

  // 4. The queue itself fills the disk: large messages until a refusal; every 250 is listed, the refusal is 452/451.
  {
    const c = await p1(port);
    let accepted = 0;
    let last: string | null = null;
    for (let i = 0; i < 100 && last === null; i++) {
      const id = nextId();
      const r = await transaction(c, id, { bodyBytes: 200 * 1024, timeoutMs: 15_000 });
      if (r.reply.code === 250) {
        assert.equal(queuedById(dataDir, id).length, 1, `250 for ${id} but it is not in the queue`);
        accepted++;
      } else {
        assert.ok(r.reply.code === 451 || r.reply.code === 452, `expected 451/452 on a full queue, got ${r.stage} ${r.reply.lines.join(' | ')}`);
        assert.deepEqual(queuedById(dataDir, id), []);
        last = `${r.stage} ${r.reply.lines.join(' | ')}`;
        if (r.stage === 'END') assert.equal((await c.cmd('RSET')).code, 250);
      }
    }
    outcomes.push(`queue fills the disk: ${accepted} x 200 KiB accepted, then ${last}`);
    assert.ok(last !== null, 'never refused while filling a 4 MiB tmpfs');
    c.close();
  }
  assert.ok(alive(serve.pid), 'the server died on a queue-full disk');
  await assertServing(port, 'server on a queue-full disk');
  assert.deepEqual(spoolEntries(dataDir, 'tmp'), []);
  // ENOSPC is an expected condition: refused cleanly, never an internal error (421 4.3.0 "session failed").
  const internal = serve.logs.filter((l) => l['msg'] === 'session failed' || l['msg'] === 'message store failed');
  assert.deepEqual(internal, [], 'a full disk caused an internal error');
  const notQueued = serve.logs.filter((l) => l['msg'] === 'message not queued').map((l) => String(l['err_code'] ?? l['error_code']));
  outcomes.push(`server log: ${notQueued.length} x "message not queued" (${[...new Set(notQueued)].join(', ')})`);
  await serve.stop();

  for (const o of outcomes) t.diagnostic(o);
  console.log(`[durability] tmpfs 4 MiB:\n  ${outcomes.join('\n  ')}`);
});
