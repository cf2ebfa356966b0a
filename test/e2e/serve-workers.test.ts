/**
 * `relayguard serve` with `workers: 2` (src/cli/serve-primary.ts, src/cli/worker-role.ts), real processes:
 *   - both workers accept (sessions logged by worker 0 and worker 1, messages in both queue shards), the ORDB runs
 *     once, the CLI shows one queue over both shards (with each row's shard) and changes a message in shard 1;
 *     SIGHUP to the primary reloads both workers; SIGTERM stops all of them (exit 0, no process left, port closed);
 *   - kill -9 of one worker under load: the primary logs it (ERR_WORKER_EXIT) and restarts it on its shard, and
 *     every message that got a 250 reaches the delivery sink (Message-IDs), those of the killed worker's shard too;
 *   - started as root with `user: nobody`: every worker runs as nobody and greets only after dropping; shard files
 *     are nobody's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { finished } from 'node:stream/promises';
import { stringify, parse } from 'yaml';
import { CLI, NODE, startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import { startFakeMta } from '../../src/testing/fake-mta.ts';
import { QueueStore } from '../../src/queue/index.ts';
import { freePort } from '../../src/testing/ports.ts';
import { RawSmtpClient, p1, sleep, transaction } from './load-helpers.ts';

const NOBODY = 65534;
const ROOT = resolve(import.meta.dirname, '..', '..');

async function waitFor<T>(what: string, probe: () => T | undefined | null | false, timeoutMs = 20_000, s?: ServeProcess): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${s ? `; stderr: ${s.stderr()}; last logs: ${JSON.stringify(s.logs.slice(-8))}` : ''}`);
    await sleep(50);
  }
}

function workerPids(s: ServeProcess): number[] {
  const ready = s.logs.find((l) => l['msg'] === 'workers ready');
  assert.ok(ready, 'no "workers ready" event');
  return (ready['pids'] as number[]).map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

function refused(port: number): Promise<boolean> {
  return new Promise((res) => {
    const c = netConnect({ host: '127.0.0.1', port });
    c.once('connect', () => { c.destroy(); res(false); });
    c.once('error', () => res(true));
  });
}

function cli(configFile: string, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(NODE, [CLI, '-q', ...args, '--config', configFile], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('workers: 2: both accept, one queue in the CLI over both shards, ORDB once, SIGHUP reloads both, SIGTERM stops all', { timeout: 90_000 }, async () => {
  // A shard left over from a run with more workers: warned about, its mail still listed.
  const dataDir = await mkdtemp(join(tmpdir(), 'relayguard-workers-'));
  const leftover = QueueStore.open({ dataDir: join(dataDir, 'shards', '5') });
  await leftover.close();
  const serve = await startServe({ dataDir, config: { workers: 2 } });
  try {
    const orphan = serve.logs.find((l) => l['msg'] === 'queue shard without a worker');
    assert.equal(orphan?.['err_code'], 'WARN_SHARD_ORPHANED');
    assert.equal(orphan?.['shard'], 5);
    const pids = workerPids(serve);
    assert.equal(pids.length, 2);
    assert.ok(!pids.includes(serve.pid) && pids.every(alive));
    assert.equal(readFileSync(`/proc/${serve.pid}/comm`, 'utf8').trim(), 'relayguard');
    assert.deepEqual(pids.map((p) => readFileSync(`/proc/${p}/comm`, 'utf8').trim()), ['relayguard-w0', 'relayguard-w1']);
    // The ORDB runs in worker 0 only.
    await waitFor('both workers listening', () => serve.logs.filter((l) => l['msg'] === 'listening').length >= 6, 10_000, serve);
    const ordb = serve.logs.filter((l) => l['msg'] === 'dnsbl listening');
    assert.deepEqual(ordb.map((l) => l['worker']), [0]);

    // Sessions, one message each: both workers take some.
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const c = await p1(serve.ports.mx);
      try {
        const id = `w${i}.${Date.now()}@workers.test`;
        const r = await transaction(c, id);
        assert.equal(r.stage, 'END');
        assert.equal(r.reply.code, 250, r.reply.lines.join(' '));
        ids.push(id);
        await c.cmd('QUIT');
      } finally {
        c.close();
      }
    }
    const closed = await waitFor('12 session logs', () => {
      const l = serve.logs.filter((x) => x['msg'] === 'session closed');
      return l.length >= 12 ? l : null;
    }, 10_000, serve);
    const byWorker = new Map<unknown, number>();
    for (const l of closed) byWorker.set(l['worker'], (byWorker.get(l['worker']) ?? 0) + 1);
    assert.ok((byWorker.get(0) ?? 0) > 0 && (byWorker.get(1) ?? 0) > 0, `sessions per worker: ${JSON.stringify([...byWorker])}`);

    // One queue in the CLI: every message, each with its shard; both shards used.
    const list = cli(serve.configFile, 'queue', 'list', '--json');
    assert.equal(list.code, 0, list.err);
    const rows = list.out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { queueId: string; shard: number; messageId: string | null });
    assert.deepEqual(rows.map((r) => (r.messageId ?? '').replace(/^<|>$/g, '')).sort(), [...ids].sort());
    assert.deepEqual([...new Set(rows.map((r) => r.shard))].sort(), [0, 1]);
    const text = cli(serve.configFile, 'queue', 'list');
    assert.match(text.out, /\[shard 1\]/);
    assert.match(text.out, /-- 12 messages/);
    const inShard1 = rows.find((r) => r.shard === 1)!;
    const hold = cli(serve.configFile, 'queue', 'hold', inShard1.queueId, '--json');
    assert.equal(hold.code, 0, hold.err);
    assert.deepEqual(JSON.parse(hold.out), { action: 'hold', changed: [inShard1.queueId], unchanged: [], missing: [] });
    const show = cli(serve.configFile, 'queue', 'show', inShard1.queueId, '--json', '--no-headers');
    assert.equal(show.code, 0, show.err);
    assert.deepEqual([(JSON.parse(show.out) as { shard: number }).shard, (JSON.parse(show.out) as { state: string }).state], [1, 'hold']);
    const missing = cli(serve.configFile, 'queue', 'release', '0000000000AAAAAAAAAA', '--json');
    assert.equal(missing.code, 1);
    assert.deepEqual((JSON.parse(missing.out) as { missing: string[] }).missing, ['0000000000AAAAAAAAAA']);

    // SIGHUP to the primary: both workers reload (a listener is added; both accept on it).
    const extra = await freePort();
    const cfg = parse(readFileSync(serve.configFile, 'utf8')) as { listeners: unknown[] };
    cfg.listeners.push({ name: 'mx-extra', role: 'mx', address: '127.0.0.1', port: extra, tls: 'none' });
    writeFileSync(serve.configFile, stringify(cfg));
    const mark = serve.logs.length;
    process.kill(serve.pid, 'SIGHUP');
    const reloaded = await waitFor('both workers reloaded', () => {
      const l = serve.logs.slice(mark).filter((x) => x['msg'] === 'configuration reloaded');
      return l.length >= 2 ? l : null;
    }, 15_000, serve);
    assert.deepEqual(reloaded.map((l) => l['worker']).sort(), [0, 1]);
    assert.ok(reloaded.every((l) => JSON.stringify(l['listeners_added']) === '["mx-extra"]'));
    const e = await p1(extra);
    assert.equal((await e.cmd('NOOP')).code, 250);
    e.close();

    // SIGTERM: every worker drains (a DATA transfer in progress completes with 250) and exits, then the primary,
    // with 0; nothing left, ports closed.
    const inflight = await p1(serve.ports.mx);
    assert.equal((await inflight.cmd('MAIL FROM:<a@remote.test>')).code, 250);
    assert.equal((await inflight.cmd('RCPT TO:<u@local.test>')).code, 250);
    assert.equal((await inflight.cmd('DATA')).code, 354);
    inflight.write('Subject: across SIGTERM\r\nMessage-ID: <term@workers.test>\r\n\r\nfirst half\r\n');
    const stopMark = serve.logs.length;
    process.kill(serve.pid, 'SIGTERM');
    await waitFor('both workers stopping', () => serve.logs.slice(stopMark).filter((l) => l['msg'] === 'stopping' && l['worker'] !== undefined).length >= 2, 10_000, serve);
    inflight.write('second half\r\n.\r\n');
    const last = await inflight.readReply(10_000);
    assert.equal(last.code, 250, last.lines.join(' '));
    inflight.close();
    assert.equal(await serve.stop(), 0);
    assert.deepEqual(pids.filter(alive), [], 'a worker outlived the primary');
    assert.equal(await refused(serve.ports.mx), true);
    assert.equal(await refused(extra), true);
    const stoppedWorkers = serve.logs.filter((l) => l['msg'] === 'worker stopped');
    assert.deepEqual(stoppedWorkers.map((l) => l['exit_code']), [0, 0]);
  } finally {
    await serve.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('workers: 2: kill -9 of one worker under load: logged, restarted on its shard, every 250 reaches the sink', { timeout: 120_000 }, async (t) => {
  // A slow next hop (300 ms per message): accepted mail waits in the shards, so the kill leaves some behind.
  const sink = await startFakeMta({
    commands: { DATA: { reply: '354 go ahead\r\n', then: 'data', data: { end: { delayMs: 300, reply: '250 2.0.0 Ok\r\n' } } } },
  });
  let serve: ServeProcess | null = null;
  // A shard left over from a run with 4 workers, holding one message: worker 1 (3 % 2) adopts and delivers it.
  const dataDir = await mkdtemp(join(tmpdir(), 'relayguard-wkill-'));
  {
    const leftover = QueueStore.open({ dataDir: join(dataDir, 'shards', '3') });
    const m = await leftover.beginMessage();
    m.body.end('Message-ID: <leftover@shard.test>\r\nSubject: left over\r\n\r\nx\r\n');
    await finished(m.body);
    await m.commit({ sender: 'a@remote.test', recipients: [{ address: 'u@local.test' }], clientIp: '192.0.2.1', helo: 'h.test', user: null, listener: 'mx' });
    await leftover.close();
  }
  try {
    serve = await startServe({
      dataDir,
      config: {
        workers: 2,
        dnsbl: { enabled: false },
        delivery: { enabled: true, localTransport: { smtp: `127.0.0.1:${sink.port}` }, retry: { minimalBackoff: '1s', maximalBackoff: '2s' } },
      },
    });
    const s = serve;
    const [, victim] = workerPids(s);
    const acked = new Set<string>();
    let stop = false;
    let seq = 0;
    let connectionErrors = 0;
    const loops = Array.from({ length: 6 }, async (_, k) => {
      // A new connection per message, so sessions keep spreading over the workers (and reach the restarted one).
      while (!stop) {
        let c: RawSmtpClient | null = null;
        try {
          c = await p1(s.ports.mx);
          const id = `k${k}.${seq++}@kill.test`;
          const r = await transaction(c, id, { timeoutMs: 10_000 });
          if (r.stage === 'END' && r.reply.code === 250) acked.add(id);
          await c.cmd('QUIT').catch(() => undefined);
        } catch {
          // The killed worker's sessions die with it; the next connection goes to a live worker.
          connectionErrors++;
          await sleep(20);
        } finally {
          c?.close();
        }
      }
    });
    await waitFor('some load', () => acked.size >= 30, 20_000, s);
    const before = acked.size;
    process.kill(victim!, 'SIGKILL');
    // What the killed worker's shard holds now: only its own restart can deliver it.
    const stranded = await waitFor('a read of the killed worker\'s shard', () => {
      try {
        const store = QueueStore.open({ dataDir: join(s.dataDir, 'shards', '1'), readOnly: true });
        try { return { n: store.list().length }; } finally { void store.close(); }
      } catch { return null; }
    }, 5000, s);
    const exited = await waitFor('the exit event', () => s.logs.find((l) => l['msg'] === 'worker exited'), 10_000, s);
    assert.equal(exited['level'], 'error');
    assert.equal(exited['err_code'], 'ERR_WORKER_EXIT');
    assert.equal(exited['signal'], 'SIGKILL');
    assert.equal(exited['worker'], 1);
    const restarted = await waitFor('the restart', () => s.logs.find((l) => l['msg'] === 'worker started' && l['restart'] === true), 15_000, s);
    assert.equal(restarted['worker'], 1);
    const newPid = Number(restarted['pid']);
    await waitFor('the restarted worker ready', () => s.logs.find((l) => l['msg'] === 'worker ready' && l['pid'] === newPid), 15_000, s);
    const mark = acked.size;
    await waitFor('load after the restart', () => acked.size >= mark + 30, 20_000, s);
    stop = true;
    await Promise.all(loops);
    assert.ok(acked.size > before);
    // The restarted worker serves again (sessions logged by its new pid's worker 1 after the restart).
    const closedAfter = s.logs.filter((l) => l['msg'] === 'session closed' && l['worker'] === 1 && s.logs.indexOf(l) > s.logs.indexOf(restarted));
    assert.ok(closedAfter.length > 0, 'the restarted worker took no session');

    // Every 250 arrives at the sink (the killed worker's shard is delivered by its restart).
    const delivered = (): Set<string> => {
      const out = new Set<string>();
      for (const sess of sink.sessions) for (const m of sess.messages) {
        const id = /Message-ID: <([^>]+)>/i.exec(m.toString('latin1'))?.[1];
        if (id) out.add(id);
      }
      return out;
    };
    await waitFor('every acknowledged message at the sink', () => [...acked].every((id) => delivered().has(id)), 60_000, s).catch(() => undefined);
    const got = delivered();
    const lost = [...acked].filter((id) => !got.has(id));
    t.diagnostic(`250s ${acked.size} (${before} before the kill), delivered ${got.size}, lost ${lost.length}, connection errors ${connectionErrors}, ` +
      `left in the killed worker's shard ${stranded.n}`);
    assert.ok(stranded.n > 0, 'the kill left nothing undelivered in the shard: the restart\'s recovery was not exercised');
    assert.deepEqual(lost, [], 'a message that got a 250 never reached the sink');
    assert.ok(got.has('leftover@shard.test'), 'the message in the shard without a worker was not delivered');
    assert.ok(s.logs.some((l) => l['msg'] === 'queue shard adopted' && l['shard'] === 3 && l['worker'] === 1), 'shard 3 not adopted by worker 1');
    const pids = [workerPids(s)[0]!, newPid];
    assert.equal(await s.stop(), 0);
    assert.deepEqual(pids.filter(alive), []);
    assert.equal(alive(victim!), false);
  } finally {
    await serve?.stop();
    await sink.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('workers: 2 started as root with user: nobody: every worker runs as nobody and greets only after dropping', { timeout: 60_000 }, async () => {
  assert.equal(process.getuid!(), 0, 'this test must run as root (CI does)');
  const dataDir = await mkdtemp(join(tmpdir(), 'relayguard-wpriv-'));
  const ports = { mx: await freePort(), submission: await freePort(), submissions: await freePort() };
  // A client that connects as early as it can, while the workers still start as root.
  let greetedAt = 0;
  let stopEarly = false;
  const early = (async () => {
    while (!stopEarly) {
      let c: RawSmtpClient;
      try {
        c = await RawSmtpClient.connect(ports.mx);
      } catch {
        await sleep(1);
        continue;
      }
      try {
        const g = await c.readReply(15_000);
        greetedAt = Date.now();
        assert.equal(g.code, 220);
      } finally {
        c.close();
      }
      return;
    }
  })();
  const serve = await startServe({ dataDir, ports, config: { workers: 2, user: 'nobody', group: 'nogroup', dnsbl: { enabled: false } } });
  try {
    await Promise.race([early, sleep(10_000)]);
    stopEarly = true;
    assert.ok(greetedAt > 0, 'the early client got no greeting');
    // The worker that greeted it had dropped its privileges before (its first session is the early client's).
    const first = await waitFor('the early session', () => serve.logs.find((l) => l['msg'] === 'session closed'), 10_000, serve);
    const drop = await waitFor('its drop logged', () => serve.logs.find((l) => l['msg'] === 'privileges dropped' && l['worker'] === first['worker']), 10_000, serve);
    assert.ok(greetedAt >= Date.parse(String(drop['time'])), `greeted ${Date.parse(String(drop['time'])) - greetedAt} ms before worker ${first['worker']} dropped its privileges`);
    const pids = workerPids(serve);
    for (const pid of pids) {
      const uid = /^Uid:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!.split(/\s+/).map(Number);
      assert.deepEqual(uid, [NOBODY, NOBODY, NOBODY, NOBODY], `worker ${pid}`);
    }
    // (Each worker writes its own log lines: one may arrive after the primary's 'workers ready'.)
    const drops = await waitFor('both drops logged', () => {
      const d = serve.logs.filter((l) => l['msg'] === 'privileges dropped');
      return d.length >= 2 ? d : null;
    }, 10_000, serve);
    assert.deepEqual(drops.map((l) => l['worker']).sort(), [0, 1]);
    for (let i = 0; i < 6; i++) {
      const c = await p1(serve.ports.mx);
      const r = await transaction(c, `p${i}@priv.test`);
      assert.equal(r.reply.code, 250, r.reply.lines.join(' '));
      c.close();
    }
    assert.ok(existsSync(join(dataDir, 'shards', '1', 'queue.db')));
    const walk = (d: string): string[] => readdirSync(d).flatMap((n) => {
      const p = join(d, n);
      return lstatSync(p).isDirectory() ? [p, ...walk(p)] : [p];
    });
    for (const p of walk(dataDir).filter((x) => !x.endsWith('relayguard.yaml'))) {
      assert.equal(lstatSync(p).uid, NOBODY, `${p} is not nobody's`);
    }
  } finally {
    stopEarly = true;
    assert.equal(await serve.stop(), 0);
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('workers: 2 under `npm start`: SIGTERM to npm leaves no process (primary or worker) and no port; --pid-file names the primary', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'relayguard-wnpm-'));
  const port = await freePort();
  const configFile = join(dir, 'relayguard.yaml');
  writeFileSync(configFile, stringify({
    dataDir: join(dir, 'data'), workers: 2, listeners: [{ role: 'mx', address: '127.0.0.1', port }], dnsbl: { enabled: false }, web: { enabled: false },
  }));
  const npm = spawn('npm', ['start', '--silent', '--', '--pid-file', join(dir, 'serve.pid')], {
    cwd: ROOT, env: { ...process.env, RELAYGUARD_CONFIG: configFile }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  npm.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  npm.stderr!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  let pids: number[] = [];
  try {
    const deadline = Date.now() + 30_000;
    while (!out.includes('"msg":"workers ready"')) {
      if (Date.now() > deadline || npm.exitCode !== null) throw new Error(`npm start did not come up:\n${out}`);
      await sleep(100);
    }
    const primary = Number(/"pid":(\d+)[^\n]*"msg":"starting"/.exec(out)?.[1]);
    const workers = (JSON.parse(out.split('\n').find((l) => l.includes('"msg":"workers ready"'))!) as { pids: number[] }).pids;
    pids = [primary, ...workers];
    assert.equal(readFileSync(join(dir, 'serve.pid'), 'utf8').trim(), String(primary));
    npm.kill('SIGTERM');
    const gone = Date.now() + 20_000;
    while (pids.some(alive) || npm.exitCode === null) {
      if (Date.now() > gone) throw new Error(`still running after SIGTERM to npm: ${pids.filter(alive)}\n${out}`);
      await sleep(100);
    }
    assert.equal(await refused(port), true, 'the port is still open');
    assert.equal(existsSync(join(dir, 'serve.pid')), false, 'the pid file is left behind');
  } finally {
    for (const p of pids.filter(alive)) process.kill(p, 'SIGKILL');
    if (npm.exitCode === null) npm.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});

test('workers: 2 with web: worker 0 alone runs the web service, and its API shows and changes the queue of both shards', { timeout: 60_000 }, async () => {
  const serve = await startServe({ config: { workers: 2, dnsbl: { enabled: false }, web: { enabled: true, port: 0 } } });
  try {
    await waitFor('both workers listening', () => serve.logs.filter((l) => l['msg'] === 'listening').length >= 6, 10_000, serve);
    const web = serve.logs.filter((l) => l['msg'] === 'web listening');
    assert.deepEqual(web.map((l) => l['worker']), [0]);
    const base = `http://127.0.0.1:${Number(web[0]!['port'])}`;
    assert.equal(cli(serve.configFile, 'admin', 'add', 'ops', '--password', 'long passphrase').code, 0);
    const token = cli(serve.configFile, 'admin', 'token', 'add', 'ci', '--admin', 'ops').out.trim();
    const auth = { authorization: `Bearer ${token}` };
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const c = await p1(serve.ports.mx);
      try {
        const id = `web${i}.${Date.now()}@workers.test`;
        assert.equal((await transaction(c, id)).reply.code, 250);
        ids.push(id);
        await c.cmd('QUIT');
      } finally {
        c.close();
      }
    }
    const rows = (await (await fetch(`${base}/api/queue?limit=100`, { headers: auth })).json()) as { messages: { queueId: string; messageId: string; shard?: number }[] };
    assert.deepEqual(rows.messages.map((m) => m.messageId.replace(/^<|>$/g, '')).sort(), [...ids].sort());
    const shards = new Set(cli(serve.configFile, 'queue', 'list', '--json').out.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { shard: number }).shard));
    assert.deepEqual([...shards].sort(), [0, 1], 'both workers took messages');
    for (const m of rows.messages) {
      const r = await fetch(`${base}/api/queue/${m.queueId}/hold`, { method: 'POST', headers: auth });
      assert.equal(r.status, 200, await r.text());
    }
    const held = cli(serve.configFile, 'queue', 'list', '--json', '--state', 'hold').out.split('\n').filter(Boolean);
    assert.equal(held.length, 10, 'held in both shards through the API');
    const health = await fetch(`${base}/health`);
    assert.equal(health.status, 200);
  } finally {
    await serve.stop();
    await serve.cleanup();
  }
});
