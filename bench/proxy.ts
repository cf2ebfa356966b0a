/**
 * `npm run bench:proxy` (node bench/proxy.ts): the open-proxy battery's speed, in the same run as nmap.
 *
 *  1. Per target, the full battery (`relayguard test --check proxy` through bin/relayguard.js, a child process:
 *     node start-up included, with the CLI's compile cache warm as after any earlier run; 12
 *     probes, proof by arrival at its sink) vs nmap's `http-open-proxy` + `socks-open-proxy` (both scripts forced
 *     onto the port, as one nmap run) on the same loopback servers: squid open (`http_access allow all`), squid
 *     with Debian's default rules, danted open and danted with username/password. Both connect from 127.0.0.2.
 *     Rounds interleave the tools (order alternating); medians are reported. Goal: relayguard's wall time below
 *     nmap's on every target. nmap's target page is on loopback (src/testing/nmap-proxy.ts).
 *  2. A scan of N loopback targets (default 500): scripted proxies (src/testing/fake-proxy.ts) on 127.0.10.1 ...,
 *     one port, a mix of open HTTP, open SOCKS, refusing, auth-required, a few silent tarpits and addresses where
 *     nothing listens, scanned with `relayguard scan --check proxy` (a child process): wall time, per target, and
 *     the statuses found (checked against what each fake is).
 *
 * A benchmark, not a test: it prints figures and PASS/MISS against the goal. Everything runs on 127.0.0.0/8 and ::1.
 * Options: --rounds=N (3), --targets=N (500), --concurrency=N (50), --quick (1 round, 100 targets);
 * env BENCH_ROUNDS, BENCH_TARGETS, BENCH_CONCURRENCY, BENCH_QUICK=1.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startFakeProxy, type FakeProxy, type FakeProxyBehavior } from '../src/testing/fake-proxy.ts';
import { nmapSays, runNmapProxyScripts, startNmapRig, NMAP_DNS } from '../src/testing/nmap-proxy.ts';
import { freePort } from '../src/testing/ports.ts';
import { startDante, startSquid, type ProxyPeer } from '../src/testing/proxy-peers.ts';
import { cleanupAll, installSignalHandlers, median, onCleanup } from './lib.ts';

const ROOT = resolve(import.meta.dirname, '..');
const OUTSIDE = '127.0.0.2';

interface Options { rounds: number; targets: number; concurrency: number }

function options(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  const args = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) { console.error(`unknown argument ${a}`); process.exit(2); }
    args.set(m[1]!, m[2] ?? '1');
  }
  const quick = args.has('quick') || env['BENCH_QUICK'] === '1';
  const num = (k: string, e: string, d: number): number => Number(args.get(k) ?? env[e] ?? d);
  return { rounds: num('rounds', 'BENCH_ROUNDS', quick ? 1 : 3), targets: num('targets', 'BENCH_TARGETS', quick ? 100 : 500), concurrency: num('concurrency', 'BENCH_CONCURRENCY', 50) };
}

const CLI = join(ROOT, 'bin', 'relayguard.js');
/** The CLI's compile cache (bin/relayguard.js enables one) in a temp dir of the bench's own, filled by a warm-up run. */
const CACHE = mkdtempSync(join(tmpdir(), 'rg-bench-proxy-cache-'));

function timed(file: string, args: readonly string[], timeoutMs = 600_000): Promise<{ ms: number; code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn(file, [...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_COMPILE_CACHE: CACHE } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 65_536) stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', rej);
    child.on('close', (code) => { clearTimeout(timer); res({ ms: performance.now() - t0, code, stdout, stderr }); });
  });
}

/** `relayguard ARGS` as a user runs it: bin/relayguard.js (the built CLI when dist/ exists, else the sources). */
function relayguard(args: readonly string[]): ReturnType<typeof timed> {
  return timed(process.execPath, [CLI, ...args]);
}

const SINK = ['--proxy-sink', '127.0.0.1:0', '--proxy-sink', '[::1]:0'];

async function battery(o: Options): Promise<boolean> {
  const rig = await startNmapRig();
  onCleanup(() => rig.close());
  const targets: { name: string; start: () => Promise<ProxyPeer> }[] = [
    { name: 'squid open', start: () => startSquid({ mode: 'open', dnsServer: NMAP_DNS }) },
    { name: 'squid default rules', start: () => startSquid({ mode: 'default', dnsServer: NMAP_DNS }) },
    { name: 'danted open', start: () => startDante({ mode: 'open' }) },
    { name: 'danted username', start: () => startDante({ mode: 'username' }) },
  ];
  const peers: ProxyPeer[] = [];
  for (const t of targets) {
    const p = await t.start();
    peers.push(p);
    onCleanup(() => p.stop());
  }
  const times = targets.map(() => ({ rg: [] as number[], rgInside: [] as number[], nmap: [] as number[], rgVerdict: '', nmapVerdict: '' }));
  for (let round = 0; round < o.rounds; round++) {
    for (let i = 0; i < targets.length; i++) {
      const p = peers[i]!;
      const order = (round + i) % 2 === 0 ? ['rg', 'nmap'] : ['nmap', 'rg'];
      for (const who of order) {
        if (who === 'rg') {
          const r = await relayguard(['test', p.address, '--check', 'proxy', '--proxy-port', String(p.port), ...SINK, '--source-address', OUTSIDE, '--json']);
          if (r.code === 3) throw new Error(`relayguard failed: ${r.stderr}`);
          const doc = JSON.parse(r.stdout) as { proxies: { verdict: string; reason: string; durationMs: number }[] };
          times[i]!.rg.push(r.ms);
          times[i]!.rgInside.push(doc.proxies[0]!.durationMs);
          times[i]!.rgVerdict = `${doc.proxies[0]!.verdict} ${doc.proxies[0]!.reason}`;
        } else {
          const t0 = performance.now();
          const n = await runNmapProxyScripts(p.address, p.port, { sourceAddress: OUTSIDE });
          times[i]!.nmap.push(performance.now() - t0);
          times[i]!.nmapVerdict = nmapSays(n);
        }
      }
    }
  }
  console.log(`\n1. Full battery per target (median of ${o.rounds} interleaved rounds, wall ms, child processes, from ${OUTSIDE})`);
  console.log('| target | relayguard --check proxy (process) | of which the battery | verdict | nmap http-open-proxy + socks-open-proxy | nmap says | relayguard / nmap |');
  console.log('|---|---|---|---|---|---|---|');
  let pass = true;
  targets.forEach((t, i) => {
    const rg = median(times[i]!.rg);
    const nm = median(times[i]!.nmap);
    if (rg >= nm) pass = false;
    console.log(`| ${t.name} | ${Math.round(rg)} | ${Math.round(median(times[i]!.rgInside))} | ${times[i]!.rgVerdict} | ${Math.round(nm)} | ${times[i]!.nmapVerdict} | ${(rg / nm).toFixed(2)} |`);
  });
  const startup: number[] = [];
  for (let k = 0; k < 3; k++) startup.push((await relayguard(['test', '--list-tricks'])).ms);
  console.log(`relayguard process start-up alone (test --list-tricks, compile cache warm, median of 3): ${Math.round(median(startup))} ms`);
  console.log(`goal (relayguard's full battery, as a process, faster than nmap's two scripts on every target): ${pass ? 'PASS' : 'MISS'}`);
  return pass;
}

const MIX: readonly { behavior: FakeProxyBehavior | 'none'; share: number; expect: string }[] = [
  { behavior: 'http-forbidden', share: 0.35, expect: 'closed' },
  { behavior: 'http-open', share: 0.2, expect: 'open' },
  { behavior: 'socks-open', share: 0.2, expect: 'open' },
  { behavior: 'socks5-userpass', share: 0.1, expect: 'closed' },
  { behavior: 'claims-200', share: 0.03, expect: 'inconclusive' },
  { behavior: 'tarpit', share: 0.02, expect: 'inconclusive' },
  { behavior: 'none', share: 0.1, expect: 'no-service' },
];

async function scan(o: Options): Promise<void> {
  const port = await freePort();
  const fakes: FakeProxy[] = [];
  const expect = new Map<string, string>();
  const plan: (FakeProxyBehavior | 'none')[] = [];
  for (const m of MIX) for (let k = 0; k < Math.round(m.share * o.targets); k++) plan.push(m.behavior);
  while (plan.length < o.targets) plan.push('http-forbidden');
  plan.length = o.targets;
  // spread the kinds over the range
  for (let i = plan.length - 1; i > 0; i--) { const j = (i * 7919) % (i + 1); [plan[i], plan[j]] = [plan[j]!, plan[i]!]; }
  const addrs: string[] = [];
  for (let i = 0; i < o.targets; i++) {
    const n = 10 * 256 + 1 + i;
    const address = `127.0.${n >> 8}.${n & 255}`;
    addrs.push(address);
    const b = plan[i]!;
    expect.set(address, MIX.find((m) => m.behavior === b)!.expect);
    if (b === 'none') continue;
    const f = await startFakeProxy({ behavior: b, address, port, egressAddress: address });
    fakes.push(f);
  }
  onCleanup(async () => { await Promise.all(fakes.map((f) => f.close())); });
  const dir = mkdtempSync(join(tmpdir(), 'rg-bench-proxy-'));
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'scan.jsonl');
  const range = `${addrs[0]}-${addrs[addrs.length - 1]}`;
  const r = await relayguard(['scan', range, '--allow', '127.0.0.0/8', '--check', 'proxy', '--proxy-port', String(port), ...SINK,
    '--proxy-timeout', '2', '--source-address', OUTSIDE, '-c', String(o.concurrency), '--rate', '0', '-o', out]);
  if (r.code === 3) throw new Error(`scan failed: ${r.stderr}`);
  const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; address?: string; status?: string; durationMs?: number; msPerTarget?: number });
  const targets = lines.filter((l) => l.type === 'target');
  const counts: Record<string, number> = {};
  let mismatches = 0;
  for (const t of targets) {
    counts[t.status!] = (counts[t.status!] ?? 0) + 1;
    if (expect.get(t.address!) !== t.status) mismatches++;
  }
  const summary = lines.at(-1)!;
  console.log(`\n2. Scan of ${o.targets} loopback proxies (port ${port}, 127.0.10.1-${addrs.at(-1)}, concurrency ${o.concurrency}, rate unlimited, step deadline 2 s)`);
  console.log('| wall s | wall ms per target | mean per-target test ms | open | closed | inconclusive | no-service | verdicts not matching the fake |');
  console.log('|---|---|---|---|---|---|---|---|');
  console.log(`| ${(r.ms / 1000).toFixed(1)} | ${(r.ms / o.targets).toFixed(1)} | ${summary.msPerTarget ?? '?'} | ${counts['open'] ?? 0} | ${counts['closed'] ?? 0} | ${counts['inconclusive'] ?? 0} | ${counts['no-service'] ?? 0} | ${mismatches} |`);
}

async function main(): Promise<void> {
  installSignalHandlers();
  onCleanup(async () => rmSync(CACHE, { recursive: true, force: true }));
  await relayguard(['test', '--list-tricks']); // fills the compile cache, as any earlier run of the CLI would
  const o = options(process.argv.slice(2), process.env);
  console.log(`bench:proxy  rounds=${o.rounds} targets=${o.targets} concurrency=${o.concurrency}  cpus=${cpus().length} load=${loadavg().map((x) => x.toFixed(2)).join(' ')}  node ${process.version}`);
  try {
    await battery(o);
    await scan(o);
  } finally {
    await cleanupAll();
  }
}

await main();
