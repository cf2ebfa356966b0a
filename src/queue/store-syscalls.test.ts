/**
 * Durability seen from outside the process: the syscall order under strace (hostile-inputs T3) for an inline
 * body and for one that spills to a spool file, and kill -9 in the middle of a body or right after a commit
 * (T1/T2). A killed process cannot show a missing fsync (the page cache survives it); the strace order can.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QueueStore } from './store.ts';

const NODE = process.execPath;
const STRACE = '/usr/bin/strace';
const work = mkdtempSync(join(tmpdir(), 'relayguard-syscalls-'));
after(() => rmSync(work, { recursive: true, force: true }));

// The child commits one message (or stops half-way through its body) and reports on stdout.
const CHILD = join(work, 'child.mjs');
writeFileSync(CHILD, `
import { writeSync } from 'node:fs';
const [indexUrl, dataDir, mode] = process.argv.slice(2);
const { QueueStore } = await import(indexUrl);
const store = QueueStore.open({ dataDir });
const msg = await store.beginMessage();
if (mode === 'half') {
  msg.body.write('Message-ID: <half@test>\\r\\nSubject: cut off\\r\\n\\r\\n');
  msg.body.write(Buffer.alloc(100000, 0x61), () => writeSync(1, 'HALF ' + msg.queueId + '\\n'));
  setInterval(() => {}, 1000);
} else {
  const pad = mode === 'commit-large' ? 'x'.repeat(100000) + '\\r\\n' : '';
  msg.body.end('Message-ID: <traced@test>\\r\\nSubject: traced\\r\\n\\r\\nhello\\r\\n' + pad);
  await msg.commit({ sender: 'a@example.org', recipients: [{ address: 'b@example.net' }], clientIp: '192.0.2.1',
    helo: 'h.example.org', user: null, listener: 'mx' });
  writeSync(1, 'COMMITTED ' + msg.queueId + '\\n');
  if (mode === 'commit-then-hang') setInterval(() => {}, 1000);
  else await store.close();
}
`);
const INDEX_URL = new URL('./index.ts', import.meta.url).href;

interface SysEvent {
  readonly line: number;
  readonly kind: 'enter' | 'exit';
  readonly name: string;
  readonly args: string;
  readonly ret: string | null;
}

/** Parses `strace -f -y` output into enter/exit events in trace order (unfinished/resumed pairs joined per thread). */
function parseTrace(text: string): SysEvent[] {
  const events: SysEvent[] = [];
  const pending = new Map<string, { name: string; args: string }>();
  text.split('\n').forEach((raw, line) => {
    const m = /^(\d+)\s+(.*)$/.exec(raw);
    if (m === null) return;
    const [, pid, rest] = m as unknown as [string, string, string];
    const resumed = /^<\.\.\. (\w+) resumed>(.*?)\)?\s*=\s*(.*)$/.exec(rest);
    if (resumed !== null) {
      const p = pending.get(pid);
      pending.delete(pid);
      events.push({ line, kind: 'exit', name: resumed[1]!, args: p?.args ?? '', ret: resumed[3]!.trim() });
      return;
    }
    const unfinished = /^(\w+)\((.*) <unfinished \.\.\.>$/.exec(rest);
    if (unfinished !== null) {
      pending.set(pid, { name: unfinished[1]!, args: unfinished[2]! });
      events.push({ line, kind: 'enter', name: unfinished[1]!, args: unfinished[2]!, ret: null });
      return;
    }
    const complete = /^(\w+)\((.*)\)\s*=\s*(.*)$/.exec(rest);
    if (complete !== null) {
      events.push({ line, kind: 'enter', name: complete[1]!, args: complete[2]!, ret: null });
      events.push({ line, kind: 'exit', name: complete[1]!, args: complete[2]!, ret: complete[3]!.trim() });
    }
  });
  return events;
}

function find(events: SysEvent[], after: number, kind: SysEvent['kind'], what: string, test: (e: SysEvent) => boolean): number {
  const i = events.findIndex((e, idx) => idx > after && e.kind === kind && test(e));
  assert.ok(i >= 0, `no ${kind} of ${what} after event ${after} in the trace`);
  return i;
}

const isSync = (e: SysEvent) => e.name === 'fsync' || e.name === 'fdatasync';

function traceCommit(name: string, mode: 'commit' | 'commit-large'): { id: string; ev: SysEvent[]; dataDir: string } {
  assert.ok(existsSync(STRACE), `${STRACE} is required for this test`);
  const dataDir = join(work, name);
  const traceFile = join(work, `${name}.txt`);
  const r = spawnSync(STRACE, [
    '-f', '-y', '-s', '256', '-o', traceFile,
    '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,pwrite64,openat',
    NODE, CHILD, INDEX_URL, dataDir, mode,
  ], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  const id = /^COMMITTED (\w+)$/m.exec(r.stdout)?.[1];
  assert.ok(id !== undefined, `no marker in ${JSON.stringify(r.stdout)}`);
  return { id, ev: parseTrace(readFileSync(traceFile, 'utf8')), dataDir };
}

const isWal = (e: SysEvent) => e.args.includes('/queue.db-wal>');

/**
 * The WAL part of the order: the transaction's frames are written, then an fsync/fdatasync of the WAL starts after
 * the last WAL write before the marker and returns (0) before the marker is written. Returns the sync's exit.
 */
function assertWalSyncedBefore(ev: SysEvent[], marker: number, after: number): number {
  let lastWalWrite = -1;
  ev.forEach((e, i) => {
    if (i < marker && e.kind === 'exit' && e.name === 'pwrite64' && isWal(e)) lastWalWrite = i;
  });
  assert.ok(lastWalWrite > after, 'the commit record is written to the WAL after the body is durable');
  const syncEnter = find(ev, lastWalWrite, 'enter', 'fsync(WAL) after the last WAL write', (e) => isSync(e) && isWal(e));
  const syncExit = find(ev, syncEnter, 'exit', 'fsync(WAL) return', (e) => isSync(e) && isWal(e));
  assert.equal(ev[syncExit]!.ret, '0');
  assert.ok(syncExit < marker, 'commit() resolved only after a WAL sync that started after the last WAL write');
  return syncExit;
}

test('queue: inline body: syscall order is WAL write -> fdatasync(WAL) -> "COMMITTED", no spool file', async () => {
  const { id, ev, dataDir } = traceCommit('traced-inline', 'commit');
  const marker = find(ev, -1, 'enter', 'the COMMITTED marker', (e) => e.name === 'write' && e.args.includes('COMMITTED'));
  assertWalSyncedBefore(ev, marker, -1);
  assert.ok(!ev.some((e) => e.args.includes(`/spool/tmp/${id}`) || e.args.includes(`/spool/msg/${id}`) || e.args.includes(`${id}.tmp`)),
    'an inline body creates no spool file');
  const store = QueueStore.open({ dataDir, readOnly: true });
  assert.deepEqual(store.list({ messageId: '<traced@test>' }).map((m) => m.queueId), [id]);
  assert.match(store.readBody(id)!.toString(), /hello/);
  await store.close();
});

test('queue: spool-file body: syscall order is fsync(body) -> rename -> fsync(spool dir) -> WAL write + fdatasync -> "COMMITTED"', async () => {
  const { id, ev, dataDir } = traceCommit('traced-file', 'commit-large');

  const tmp = `/spool/tmp/${id}.tmp`;
  const eml = `/spool/msg/${id}.eml`;
  const bodyWrite = find(ev, -1, 'enter', 'the body write', (e) => /^(write|writev|pwrite64)$/.test(e.name) && e.args.includes(`${tmp}>`));
  const bodySyncEnter = find(ev, bodyWrite, 'enter', 'fsync(body)', (e) => isSync(e) && e.args.includes(`${tmp}>`));
  const bodySync = find(ev, bodySyncEnter, 'exit', 'fsync(body) return', (e) => isSync(e) && e.args.includes(`${tmp}>`));
  assert.equal(ev[bodySync]!.ret, '0');
  const renameEnter = find(ev, -1, 'enter', 'rename', (e) => e.name.startsWith('rename') && e.args.includes(tmp) && e.args.includes(eml));
  const renameExit = find(ev, renameEnter - 1, 'exit', 'rename return', (e) => e.name.startsWith('rename'));
  const isDirSync = (e: SysEvent) => isSync(e) && /<[^>]*\/spool\/msg>$/.test(e.args);
  const dirSyncEnter = find(ev, renameExit, 'enter', 'fsync(spool/msg)', isDirSync);
  const dirSync = find(ev, dirSyncEnter, 'exit', 'fsync(spool/msg) return', isDirSync);
  const walWrite = find(ev, dirSync, 'enter', 'a WAL write', (e) => e.name === 'pwrite64' && isWal(e));
  const marker = find(ev, -1, 'enter', 'the COMMITTED marker', (e) => e.name === 'write' && e.args.includes('COMMITTED'));
  const walSync = assertWalSyncedBefore(ev, marker, dirSync);

  assert.ok(bodySync < renameEnter, 'the body is fsynced before it is renamed');
  assert.ok(renameExit < dirSyncEnter, 'the directory fsync follows the rename');
  assert.ok(dirSync < walWrite, 'the commit record is written after the directory fsync');
  assert.ok(walSync < marker, 'commit() resolved only after the WAL fsync');
  assert.ok(!ev.slice(bodyWrite, renameEnter).some((e) => e.name === 'pwrite64' && isWal(e)),
    'nothing of the commit record is written before the body is durable and renamed');

  const store = QueueStore.open({ dataDir, readOnly: true });
  assert.deepEqual(store.list({ messageId: '<traced@test>' }).map((m) => m.queueId), [id]);
  await store.close();
});

function runUntil(mode: string, dataDir: string, marker: RegExp): Promise<{ id: string; kill: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [CHILD, INDEX_URL, dataDir, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`child exited early (${code}): ${err}`)));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const id = marker.exec(out)?.[1];
      if (id === undefined) return;
      child.removeAllListeners('exit');
      resolve({
        id,
        kill: () => new Promise<void>((done) => {
          child.once('exit', () => done());
          child.kill('SIGKILL');
        }),
      });
    });
  });
}

test('queue: kill -9 half-way through a body -> nothing queued, temp file removed at restart', async () => {
  const dataDir = join(work, 'killed-half');
  const { id, kill } = await runUntil('half', dataDir, /^HALF (\w+)$/m);
  await kill();
  assert.deepEqual(readdirSync(join(dataDir, 'spool', 'tmp')), [`${id}.tmp`]);
  const store = QueueStore.open({ dataDir });
  assert.equal(store.recovery?.tempFilesRemoved, 1);
  assert.deepEqual(readdirSync(join(dataDir, 'spool', 'tmp')), []);
  assert.deepEqual(store.list(), []);
  await store.close();
});

test('queue: kill -9 right after commit() resolved -> the message is queued after restart', async () => {
  const dataDir = join(work, 'killed-after');
  const { id, kill } = await runUntil('commit-then-hang', dataDir, /^COMMITTED (\w+)$/m);
  await kill();
  const store = QueueStore.open({ dataDir });
  assert.deepEqual(store.recovery, { tempFilesRemoved: 0, uncommittedBodiesRemoved: 0, missingBodies: [], badBodies: [] });
  assert.deepEqual(store.list({ messageId: 'traced@test' }).map((m) => m.queueId), [id]);
  assert.equal(store.get(id)!.bodyInline, true);
  assert.match(store.readBody(id)!.toString(), /hello/);
  await store.close();
});
