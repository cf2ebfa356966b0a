/**
 * Least privilege (field report 1, F6): `relayguard serve` started as root with `user: nobody` binds its ports,
 * hands the data directory to nobody and drops to it before it reads a client byte; what it creates is 0600/0700
 * and owned by nobody, inside a pre-made 0755 data directory. Without `user`, running as root is warned about.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServe } from '../../src/testing/serve-process.ts';
import { freePort } from '../../src/testing/ports.ts';
import { RawSmtpClient, expectReply, sleep } from './hostile-helpers.ts';

const NOBODY = 65534;

function ids(pid: number): { uid: number[]; gid: number[]; groups: string } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const line = (k: string): string => /^(\w+):\s*(.*)$/m.exec(status.split('\n').find((l) => l.startsWith(`${k}:`)) ?? '')?.[2] ?? '';
  return { uid: line('Uid').split(/\s+/).map(Number), gid: line('Gid').split(/\s+/).map(Number), groups: line('Groups').trim() };
}

function walk(dir: string, out: { path: string; mode: number; uid: number; dir: boolean }[] = []): typeof out {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    out.push({ path: p, mode: st.mode & 0o777, uid: st.uid, dir: st.isDirectory() });
    if (st.isDirectory()) walk(p, out);
  }
  return out;
}

test('started as root with user: nobody, serve answers no client before it runs as nobody; files are nobody\'s, 0600/0700', { timeout: 60_000 }, async () => {
  assert.equal(process.getuid!(), 0, 'this test must run as root (CI does)');
  const dataDir = await mkdtemp(join(tmpdir(), 'relayguard-priv-'));
  chmodSync(dataDir, 0o755); // a pre-made, world-readable data directory
  const ports = { mx: await freePort(), submission: await freePort(), submissions: await freePort() };
  // A client that connects as early as it can, while the server is still starting as root.
  let earlyPid = 0;
  const seen: { early: ReturnType<typeof ids> | null; connectedAt: number; greetedAt: number } = { early: null, connectedAt: 0, greetedAt: 0 };
  let pidOf: () => number = () => 0;
  let stopEarly = false;
  const early = (async () => {
    while (!stopEarly) {
      let c: RawSmtpClient;
      try {
        c = await RawSmtpClient.connect(ports.mx);
        seen.connectedAt = Date.now();
      } catch {
        await sleep(1);
        continue;
      }
      try {
        const greeting = await c.readReply();
        seen.greetedAt = Date.now();
        // The greeting is the first byte the server writes: it must come from the unprivileged process.
        earlyPid = pidOf();
        if (earlyPid > 0) seen.early = ids(earlyPid);
        expectReply(greeting, 220, undefined, c);
      } finally {
        c.close();
      }
      return;
    }
  })();
  const serve = await startServe({ dataDir, ports, config: { user: 'nobody', group: 'nogroup' } });
  pidOf = () => Number(serve.logs.find((l) => l['msg'] === 'starting')?.['pid'] ?? 0);
  try {
    const deadline = Date.now() + 15_000;
    while (!serve.logs.some((l) => l['msg'] === 'privileges dropped')) {
      if (Date.now() > deadline) throw new Error(`no privilege drop: ${serve.stderr()} ${JSON.stringify(serve.logs.slice(-5))}`);
      await sleep(20);
    }
    await Promise.race([early, sleep(10_000)]);
    stopEarly = true;
    const pid = pidOf();
    assert.ok(pid > 0);
    const now = ids(pid);
    assert.deepEqual(now.uid, [NOBODY, NOBODY, NOBODY, NOBODY], 'real, effective, saved and fs uid');
    assert.equal(now.groups, String(now.gid[0]), 'supplementary groups are only the dropped group');
    assert.ok(seen.early !== null, 'the early client got no greeting');
    // The early client (often accepted while the server still ran as root) was answered only after the drop.
    const dropped = Date.parse(String(serve.logs.find((l) => l['msg'] === 'privileges dropped')!['time']));
    assert.ok(seen.greetedAt >= dropped, `greeted ${dropped - seen.greetedAt} ms before the privileges were dropped`);
    assert.deepEqual(seen.early.uid, [NOBODY, NOBODY, NOBODY, NOBODY], 'a greeting was written while the server still ran as root');

    // The unprivileged server still does its job: a message is queued durably.
    const c = await RawSmtpClient.connect(ports.mx);
    try {
      expectReply(await c.readReply(), 220, undefined, c);
      expectReply(await c.cmd('EHLO client.test'), 250, undefined, c);
      expectReply(await c.cmd('MAIL FROM:<a@remote.test>'), 250, '2.1.0', c);
      expectReply(await c.cmd('RCPT TO:<u@local.test>'), 250, '2.1.5', c);
      expectReply(await c.cmd('DATA'), 354, undefined, c);
      expectReply(await c.cmd('Subject: as nobody\r\n\r\nx\r\n.'), 250, '2.0.0', c);
    } finally {
      c.close();
    }
    // Everything under the data directory belongs to nobody; secrets and mail are 0600, directories 0700.
    // (The config file is the test's, and the TLS certificate is public: both may be world-readable.)
    const entries = walk(dataDir).filter((e) => !e.path.endsWith('relayguard.yaml') && !e.path.endsWith('cert.pem'));
    assert.ok(entries.some((e) => e.path.endsWith('queue.db')) && entries.some((e) => e.path.endsWith('relayguard.db')));
    for (const e of entries) {
      assert.equal(e.uid, NOBODY, `${e.path} is owned by ${e.uid}`);
      if (e.dir) assert.equal(e.mode, 0o700, `${e.path} is ${e.mode.toString(8)}`);
      else assert.equal(e.mode & 0o077, 0, `${e.path} is ${e.mode.toString(8)}`);
    }
  } finally {
    stopEarly = true;
    assert.equal(await serve.stop(), 0);
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('started as root without `user`: a warning with a searchable code', { timeout: 30_000 }, async () => {
  const serve = await startServe();
  try {
    const w = serve.logs.find((l) => l['msg'] === 'running as root');
    assert.ok(w, 'no warning');
    assert.equal(w['level'], 'warn');
    assert.equal(w['err_code'], 'WARN_RUNNING_AS_ROOT');
  } finally {
    await serve.stop();
    await serve.cleanup();
  }
});
