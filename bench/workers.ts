/**
 * `npm run bench:workers` (node bench/workers.ts): ORDB tests spread over `relayguard dnsbl worker` processes.
 *
 * N loopback fake relays (src/testing/fake-relays.ts, on 127.0.4.x/127.0.5.x) answer like closed relays after a
 * fixed delay before each greeting, so a test's time is mostly waiting on the target, as on the Internet. For 1, 2
 * and 4 worker processes (each with --concurrency C, default 2, the configuration's default), on a fresh listing
 * store each: the workers start and idle, then N pending submissions are written in one transaction, and the clock
 * runs until every job is done. Reported: jobs per minute, speed-up over one worker, the workers' CPU time
 * (/proc/PID/stat) and load. Checked: every job done exactly once (one job per address, every address saw exactly
 * one test's worth of connections). Goal: 4 workers >= 3.5x one worker.
 *
 * Options: --jobs=N (200), --delay=MS (200), --concurrency=C (2), --quick (40 jobs, 100 ms); env BENCH_JOBS,
 * BENCH_DELAY, BENCH_CONCURRENCY, BENCH_QUICK=1. Everything runs on 127.0.0.0/8.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { startFakeRelays, type FakeRelays } from '../src/testing/fake-relays.ts';
import { startWorkerProcess, workerRig, type WorkerProcess } from '../src/testing/ordb-workers.ts';
import { MemoryLogger } from '../src/core/log.ts';
import { createTestHost } from '../src/cli/ordb-service.ts';
import { cleanupAll, installSignalHandlers, onCleanup, sleep } from './lib.ts';

interface Options { jobs: number; delay: number; concurrency: number; quick: boolean }

function options(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  const args = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([a-z]+)(?:=(\d+))?$/.exec(a);
    if (!m || !['jobs', 'delay', 'concurrency', 'quick'].includes(m[1]!)) throw new Error(`unknown argument ${JSON.stringify(a)}; see the header of bench/workers.ts`);
    args.set(m[1]!, m[2] ?? '1');
  }
  const quick = args.has('quick') || env['BENCH_QUICK'] === '1';
  const int = (k: string, dflt: number): number => {
    const v = args.get(k) ?? env[`BENCH_${k.toUpperCase()}`];
    if (v === undefined || v === '') return dflt;
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new Error(`--${k} must be a positive integer`);
    return Number(v);
  };
  return { jobs: int('jobs', quick ? 40 : 200), delay: int('delay', quick ? 100 : 200), concurrency: int('concurrency', 2), quick };
}

/** utime + stime of a process, seconds (while it runs). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // fields 14, 15 (clock ticks; 100 Hz on Linux)
  } catch {
    return 0;
  }
}

function addresses(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `127.0.${4 + Math.floor(i / 250)}.${1 + (i % 250)}`);
}

interface RunResult { workers: number; ms: number; perMinute: number; cpu: number; load: number }

async function run(workers: number, o: Options, fakes: FakeRelays, targets: readonly string[], perTest: number): Promise<RunResult> {
  const rig = workerRig({ port: fakes.port, dnsbl: { testBudget: '60s', jobLease: '30s' }, log: { level: 'info' } });
  const procs: WorkerProcess[] = [];
  const unregister = onCleanup(async () => { await Promise.all(procs.map((p) => p.stop(3000))); rig.close(); });
  try {
    const before = new Map(targets.map((a) => [a, fakes.connections(a)]));
    for (let i = 0; i < workers; i++) procs.push(startWorkerProcess(rig.configPath, ['--poll', '0.1', '--concurrency', String(o.concurrency)]));
    // Idle and ready: each worker has started (node, modules, the store opened, a first poll run) before the clock starts.
    const ready = performance.now();
    while (!procs.every((p) => p.logs.some((l) => l['msg'] === 'dnsbl worker started'))) {
      for (const p of procs) if (p.child.exitCode !== null) throw new Error(`worker exited early: ${p.stderr()}`);
      if (performance.now() - ready > 60_000) throw new Error('workers did not start within 60 s');
      await sleep(50);
    }
    await sleep(300);
    const cpu0 = procs.reduce((s, p) => s + cpuSeconds(p.pid), 0);
    const t0 = performance.now();
    const now = Date.now();
    rig.store.addMany(targets.map((network) => ({ network, state: 'pending' as const, nextRetest: now, detail: 'bench submission' })));
    for (;;) {
      const c = rig.jobs.counts();
      if (c.done === targets.length) break;
      if (performance.now() - t0 > 30 * 60_000) throw new Error(`timed out: ${JSON.stringify(c)}`);
      await sleep(50);
    }
    const ms = performance.now() - t0;
    const cpu = procs.reduce((s, p) => s + cpuSeconds(p.pid), 0) - cpu0;
    const load = loadavg()[0]!;
    await Promise.all(procs.map((p) => p.stop(10_000)));
    // Exactly once: one job per address, and one test's worth of connections each.
    const wrong = targets.filter((a) => fakes.connections(a) - before.get(a)! !== perTest);
    if (wrong.length > 0) throw new Error(`${wrong.length} addresses not tested exactly once, e.g. ${wrong[0]}: ${fakes.connections(wrong[0]!) - before.get(wrong[0]!)!} connections, one test is ${perTest}`);
    const jobs = rig.jobs.list({ limit: targets.length * 2 });
    if (jobs.length !== targets.length || new Set(jobs.map((j) => j.address)).size !== targets.length) throw new Error(`expected ${targets.length} jobs, one per address; got ${jobs.length}`);
    return { workers, ms, perMinute: targets.length / (ms / 60_000), cpu, load };
  } finally {
    await Promise.all(procs.map((p) => p.stop(3000)));
    rig.close();
    unregister();
  }
}

async function main(): Promise<void> {
  installSignalHandlers();
  const o = options(process.argv.slice(2), process.env);
  const targets = addresses(o.jobs);
  const calibration = '127.0.3.1';
  const fakes = await startFakeRelays({ addresses: [calibration, ...targets], delayMs: o.delay });
  onCleanup(() => fakes.close());
  const host = await createTestHost({
    probeDomain: null, sink: { address: '127.0.0.1', port: 0 }, probeWaitMs: 1000, testPorts: [{ port: fakes.port, role: 'mx' }],
    sourceAddress: null, testBudgetMs: 60_000,
  }, new MemoryLogger());
  const c0 = performance.now();
  const r = await host.test(calibration, { prove: false, signal: new AbortController().signal });
  const oneTestMs = performance.now() - c0;
  await host.close();
  if (r.verdict !== 'CLOSED') throw new Error(`the fake relay did not test CLOSED: ${r.verdict} ${r.detail ?? ''}`);
  const perTest = fakes.connections(calibration);
  console.log(`bench:workers: ${o.jobs} jobs per run, fake closed relays greeting after ${o.delay} ms (one test: ${perTest} connections, ${Math.round(oneTestMs)} ms in-process),`);
  console.log(`  --concurrency ${o.concurrency} per worker; ${cpus().length} CPUs, load ${loadavg()[0]!.toFixed(2)} before${o.quick ? ' (quick mode)' : ''}`);
  const results: RunResult[] = [];
  for (const w of [1, 2, 4]) {
    const res = await run(w, o, fakes, targets, perTest);
    results.push(res);
    const speedup = res.perMinute / results[0]!.perMinute;
    console.log(`  ${w} worker${w === 1 ? ' ' : 's'}: ${(res.ms / 1000).toFixed(1).padStart(6)} s  ${res.perMinute.toFixed(0).padStart(5)} jobs/min  x${speedup.toFixed(2)}  workers' CPU ${res.cpu.toFixed(1)} s (${(res.cpu / (res.ms / 1000)).toFixed(2)} cores)  load ${res.load.toFixed(2)}`);
  }
  const x4 = results[2]!.perMinute / results[0]!.perMinute;
  console.log(`  every job done exactly once in every run (one job per address, ${perTest} connections per address)`);
  console.log(`  4 workers vs 1: x${x4.toFixed(2)} (goal >= 3.5): ${x4 >= 3.5 ? 'PASS' : 'MISS'}; ideal for 4 (one worker's time / 4) ${(results[0]!.ms / 4000).toFixed(1)} s, measured ${(results[2]!.ms / 1000).toFixed(1)} s`);
}

main().then(cleanupAll, async (err: unknown) => {
  console.error(err);
  await cleanupAll();
  process.exitCode = 1;
});
