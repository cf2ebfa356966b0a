/**
 * `npm run bench:dnsbl`: queries per second and memory of relayguard's DNSBL server and of rbldnsd (Debian) on
 * the same seeded 1,000,000-entry zone, in the same run, driven by the same load generator.
 *
 *   - Zone: bench/dnsbl-data.ts (IPv4 singles, CIDRs, exclusions, IPv6; four codes, five TXT templates).
 *     This process builds it once to export the rbldnsd files (ip4set + ip6trie, src/dnsbl/export.ts) and the
 *     query file. relayguard's server runs in its own process (bench/dnsbl-server.ts) that builds the same zone
 *     from the same seed (streamed into ZoneBuilder, no SQLite), so its memory is its own. That process runs
 *     as JavaScript (the sources with their types stripped once, like the published dist/), not through Node's
 *     on-the-fly type stripping, which alone adds ~18 MB of RSS (--strip-types to measure that way).
 *   - udpThreads as a user sets it on the machine: one thread per CPU, less one CPU left to the rest of the box
 *     (in production the relay, the tester, the web UI and PostgreSQL; here the load generator, which alone
 *     takes about one CPU), at least 1: on a 2-CPU box, 1 (the main thread alone). The goals are judged on that
 *     setting. A full run also runs 1 and 2 threads for comparison (--udp-threads=N,N.. picks others), each its
 *     own process.
 *   - Load: dnsperf (Debian package dnsperf) when installed, else bench/dnsbl-load.ts (a Node UDP load
 *     generator, far slower than dnsperf: its figures are a floor for every server). Same query file, same
 *     parameters for all servers; after an untimed warm-up run each, timed runs alternate the servers (the order
 *     rotates every round). qps = dnsperf's "Queries per second".
 *   - CPU: the load generator runs on the same box. With few CPUs it competes with the servers for them, so the
 *     table also gives queries per second of server CPU time (all threads of the server process).
 *   - Memory: VmRSS of each server after the zone is loaded (idle) and at the end of the run (the goal), split
 *     into anonymous pages (heaps, the zone) and file pages (for Node mostly its own executable, ~48 MB, shared
 *     by every Node process on the box), VmHWM (peak, build included), and each server's RSS with an (almost)
 *     empty zone, so "RSS - empty RSS" compares the data alone (Node's runtime is ~40 MB before any data,
 *     rbldnsd's ~3 MB). relayguard also reports its V8 heap, young generation, external memory and the zone
 *     index's typed arrays.
 *
 *   - Per-packet profile (how the time of a query splits) is in src/dnsbl/server-udp.ts's header.
 *
 * A benchmark, not a test: it prints figures and PASS/MISS against the goals (qps >= 1.0x rbldnsd's, VmRSS at
 * the end of the run <= 1.5x rbldnsd's, both measured in the same run), asserting nothing. The box may be shared
 * and noisy: every round runs every server once, so the table also gives the spread of the per-round ratios.
 * Everything runs on 127.0.0.1. --help for options (BENCH_QUICK=1: short run).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { stripTypeScriptTypes } from 'node:module';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';
import { ZoneBuilder, writeRbldnsdFiles } from '../src/dnsbl/index.ts';
import { NODE } from '../src/testing/serve-process.ts';
import { benchEntries, benchQueries, ZONE_OPTIONS } from './dnsbl-data.ts';
import type { ServerMem } from './dnsbl-server.ts';
import { cleanupAll, installSignalHandlers, median, onCleanup, procStatusKb, sleep } from './lib.ts';

const GOAL_QPS_RATIO = 1.0;
const GOAL_RSS_RATIO = 1.5;

/** udpThreads as a user sets it on a box with `cpus` CPUs: one CPU left to everything else, at least 1. */
function userUdpThreads(cpuCount: number): number {
  return Math.max(1, Math.min(64, cpuCount - 1));
}
const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

// ---------------------------------------------------------------------------------------------------------------
// Options

interface Options {
  entries: number;
  seed: number;
  duration: number;
  warmup: number;
  rounds: number;
  clients: number;
  threads: number;
  outstanding: number;
  queries: number;
  udpThreads: number[];
  /** The setting the goals are judged on (userUdpThreads, or the first of an explicit --udp-threads). */
  goalThreads: number;
  loadgen: 'auto' | 'dnsperf' | 'node';
  stripTypes: boolean;
  nodeArgs: string[];
  quick: boolean;
}

const USAGE = `usage: node bench/dnsbl.ts [--entries=N] [--seed=N] [--duration=S] [--warmup=S] [--rounds=N] [--clients=N]
       [--threads=N] [--outstanding=N] [--queries=N] [--udp-threads=N,N..] [--loadgen=auto|dnsperf|node]
       [--strip-types] [--node-args="--flag ..."] [--quick]
env: BENCH_ENTRIES BENCH_SEED BENCH_DURATION ... (upper case, "-" as "_"), BENCH_QUICK=1
defaults: 1,000,000 entries; 3 rounds of 15 s per server after a 3 s warm-up; load dnsperf -c 8 -T 1 -q 200 over
          100,000 query lines; relayguard with udpThreads = CPUs - 1 (at least 1; the goals are judged on it),
          and 1 and 2 for comparison
quick:    3 rounds of 5 s, 2 s warm-up, udpThreads = CPUs - 1 only
--udp-threads=N,N..: these settings instead; the goals are judged on the first`;

function options(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  const args = new Map<string, string>();
  for (const a of argv) {
    if (a === '--help' || a === '-h') { console.log(USAGE); process.exit(0); }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`);
    args.set(m[1]!, m[2] ?? '1');
  }
  const known = ['entries', 'seed', 'duration', 'warmup', 'rounds', 'clients', 'threads', 'outstanding', 'queries', 'udp-threads', 'loadgen', 'strip-types', 'node-args', 'quick'];
  for (const k of args.keys()) if (!known.includes(k)) throw new Error(`unknown option --${k}\n${USAGE}`);
  const raw = (k: string): string | undefined => args.get(k) ?? env[`BENCH_${k.toUpperCase().replace(/-/g, '_')}`];
  const flag = (k: string): boolean => ['1', 'true', 'yes'].includes((raw(k) ?? '').toLowerCase());
  const quick = flag('quick');
  const int = (k: string, dflt: number, min: number): number => {
    const v = raw(k)?.replace(/_/g, '');
    if (v === undefined || v === '') return dflt;
    if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`--${k} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const loadgen = raw('loadgen') ?? 'auto';
  if (loadgen !== 'auto' && loadgen !== 'dnsperf' && loadgen !== 'node') throw new Error(`--loadgen must be auto, dnsperf or node\n${USAGE}`);
  const user = userUdpThreads(availableParallelism());
  const explicit = raw('udp-threads');
  const udpThreads = explicit !== undefined ? explicit.split(',').map((x) => Number(x.trim())) : quick ? [user] : [user, 1, 2];
  if (udpThreads.length === 0 || udpThreads.some((n) => !Number.isInteger(n) || n < 1 || n > 64)) throw new Error(`--udp-threads: a list of 1..64\n${USAGE}`);
  return {
    quick,
    entries: int('entries', 1_000_000, 1),
    seed: int('seed', 20260101, 0),
    duration: int('duration', quick ? 5 : 15, 1),
    warmup: int('warmup', quick ? 2 : 3, 0),
    rounds: int('rounds', 3, 1),
    clients: int('clients', 8, 1),
    threads: int('threads', 1, 1),
    outstanding: int('outstanding', 200, 1),
    queries: int('queries', 100_000, 100),
    udpThreads: [...new Set(udpThreads)],
    goalThreads: udpThreads[0]!,
    loadgen,
    stripTypes: flag('strip-types'),
    nodeArgs: (raw('node-args') ?? '').split(/\s+/).filter((x) => x !== ''),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const mb = (kb: number | null): string => (kb === null ? 'n/a' : `${fmt(kb / 1024, 1)} MB`);
const mbBytes = (b: number): string => `${fmt(b / 1048576, 1)} MB`;
const ratio = (a: number | null, b: number | null): string => (a === null || b === null || b === 0 ? 'n/a' : `${(a / b).toFixed(2)}x`);

function hasBinary(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU seconds of a process (all threads). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => { clearTimeout(t); done(); });
    child.kill('SIGTERM');
  });
}

/**
 * The relayguard server script and the modules it imports, with their types stripped (imports rewritten from
 * .ts to .js), under `out`; node_modules is linked. Returns the script's path.
 */
function compileServer(out: string): string {
  const roots = [join(ROOT, 'bench', 'dnsbl-server.ts'), join(ROOT, 'src', 'dnsbl', 'server-worker.ts')].filter((f) => existsSync(f));
  const seen = new Set<string>();
  const todo = [...roots];
  const emit = process.emitWarning;
  process.emitWarning = () => {}; // stripTypeScriptTypes is "experimental"
  try {
    while (todo.length > 0) {
      const file = todo.pop()!;
      if (seen.has(file)) continue;
      seen.add(file);
      const code = readFileSync(file, 'utf8');
      for (const m of code.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+\.ts)'/g)) todo.push(resolve(dirname(file), m[1]!));
      const js = stripTypeScriptTypes(code, { mode: 'strip' }).replace(/((?:from|import)\s*\(?\s*'\.{1,2}\/[^']+)\.ts'/g, "$1.js'");
      const target = join(out, relative(ROOT, file)).replace(/\.ts$/, '.js');
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, js);
    }
  } finally {
    process.emitWarning = emit;
  }
  writeFileSync(join(out, 'package.json'), '{"type":"module"}\n');
  symlinkSync(join(ROOT, 'node_modules'), join(out, 'node_modules'));
  return join(out, 'bench', 'dnsbl-server.js');
}

// ---------------------------------------------------------------------------------------------------------------
// Servers

interface MemReading { rssKb: number | null; hwmKb: number | null; anonKb: number | null; fileKb: number | null; node?: ServerMem }

interface RunningServer {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  mem(): Promise<MemReading>;
  stop(): Promise<void>;
}

async function startRbldnsd(dir: string, args: readonly string[]): Promise<RunningServer & { startMs: number }> {
  execFileSync('chown', ['-R', 'rbldns:rbldns', dir]);
  let output = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freeUdpPort();
    output = '';
    const t0 = performance.now();
    const child = spawn('rbldnsd', ['-n', '-b', `127.0.0.1/${port}`, '-w', dir, '-u', 'rbldns', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const off = onCleanup(() => stopChild(child));
    const started = await new Promise<boolean>((done) => {
      const t = setTimeout(() => done(false), 120_000);
      const check = (d: Buffer): void => { output += d.toString(); if (/started/.test(output)) { clearTimeout(t); done(true); } };
      child.stdout.on('data', check);
      child.stderr.on('data', check);
      child.on('exit', () => { clearTimeout(t); done(false); });
    });
    if (started && child.pid !== undefined) {
      const pid = child.pid;
      return {
        name: 'rbldnsd', pid, port, startMs: performance.now() - t0,
        mem: () => Promise.resolve({
          rssKb: procStatusKb(pid, 'VmRSS'), hwmKb: procStatusKb(pid, 'VmHWM'), anonKb: procStatusKb(pid, 'RssAnon'), fileKb: procStatusKb(pid, 'RssFile'),
        }),
        stop: async () => { off(); await stopChild(child); },
      };
    }
    off();
    await stopChild(child);
  }
  throw new Error(`rbldnsd did not start:\n${output}`);
}

interface RelayguardReady {
  port: number;
  buildMs: number;
  threads: number;
  zone: { v4Intervals: number; v6Intervals: number; values: number; indexBytes: number };
  mem: ServerMem;
}

async function startRelayguardDns(script: string, o: Options, entries: number, udpThreads: number): Promise<RunningServer & { ready: RelayguardReady }> {
  const child = spawn(NODE, [...o.nodeArgs, script, String(o.seed), String(entries), String(udpThreads)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const off = onCleanup(() => stopChild(child));
  const rl: Interface = createInterface({ input: child.stdout! });
  const lines: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  rl.on('line', (l) => { const w = waiters.shift(); if (w) w(l); else lines.push(l); });
  const nextLine = (timeoutMs: number): Promise<string> => new Promise((done, fail) => {
    const l = lines.shift();
    if (l !== undefined) { done(l); return; }
    const onExit = (): void => { clearTimeout(t); fail(new Error(`relayguard dns server exited (${child.exitCode ?? child.signalCode})`)); };
    const t = setTimeout(() => { child.off('exit', onExit); fail(new Error('relayguard dns server: no answer')); }, timeoutMs);
    child.once('exit', onExit);
    waiters.push((x) => { clearTimeout(t); child.off('exit', onExit); done(x); });
  });
  const ready = JSON.parse(await nextLine(300_000)) as RelayguardReady;
  const pid = child.pid!;
  return {
    name: `relayguard ${udpThreads}t`, pid, port: ready.port, ready,
    mem: async () => {
      child.stdin!.write('mem\n');
      const m = (JSON.parse(await nextLine(10_000)) as { mem: ServerMem }).mem;
      return { rssKb: m.rssKb, hwmKb: m.hwmKb, anonKb: m.rssAnonKb, fileKb: m.rssFileKb, node: m };
    },
    stop: async () => {
      off();
      child.stdin!.end();
      await stopChild(child);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Load

interface LoadResult {
  qps: number;
  sent: number;
  completed: number;
  lost: number;
  latencyMs: number;
  rcodes: string;
  serverCpu: number;
  seconds: number;
}

function parseDnsperf(out: string): Omit<LoadResult, 'serverCpu'> {
  const num = (re: RegExp): number => { const m = re.exec(out); return m ? Number(m[1]!.replace(/,/g, '')) : NaN; };
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    completed: num(/Queries completed:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    latencyMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
    rcodes: (/Response codes:\s+(.*)/.exec(out)?.[1] ?? '').trim(),
    seconds: num(/Run time \(s\):\s+([\d.]+)/),
  };
}

const LOADGEN_SCRIPT = fileURLToPath(new URL('./dnsbl-load.ts', import.meta.url));

async function runLoad(kind: 'dnsperf' | 'node', server: RunningServer, queryFile: string, o: Options, seconds: number): Promise<LoadResult> {
  const common = ['-s', '127.0.0.1', '-p', String(server.port), '-d', queryFile, '-l', String(seconds), '-c', String(o.clients), '-q', String(o.outstanding), '-t', '2'];
  const args = kind === 'dnsperf' ? ['dnsperf', ...common, '-T', String(o.threads)] : [NODE, LOADGEN_SCRIPT, ...common];
  const cpu0 = cpuSeconds(server.pid);
  const out = await new Promise<string>((done, fail) => {
    const child = spawn(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const off = onCleanup(() => stopChild(child));
    let text = '';
    child.stdout.on('data', (d: Buffer) => { text += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { text += d.toString(); });
    child.on('error', fail);
    child.on('exit', (code) => { off(); if (code === 0) done(text); else fail(new Error(`${args[0]} exited ${code}:\n${text}`)); });
  });
  const serverCpu = cpuSeconds(server.pid) - cpu0;
  const r = parseDnsperf(out);
  if (!Number.isFinite(r.qps)) throw new Error(`cannot parse the load generator's output:\n${out}`);
  return { ...r, serverCpu };
}

// ---------------------------------------------------------------------------------------------------------------
// Answer check: the servers must agree on what the load asks (so the rates compare the same work).

async function compareAnswers(a: RunningServer, b: RunningServer, lines: readonly string[], count: number): Promise<string[]> {
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const waiting = new Map<number, (m: Buffer) => void>();
  sock.on('message', (m) => { const w = waiting.get(m.readUInt16BE(0)); if (w) { waiting.delete(m.readUInt16BE(0)); w(m); } });
  let id = 0;
  const ask = (port: number, name: string, type: 'A' | 'TXT'): Promise<string> => {
    const qid = id = (id + 1) & 0xffff;
    return new Promise((done) => {
      const t = setTimeout(() => { waiting.delete(qid); done('timeout'); }, 2000);
      waiting.set(qid, (m) => {
        clearTimeout(t);
        const p = dnsPacket.decode(m) as dnsPacket.Packet & { rcode?: string };
        const ans = (p.answers ?? []).map((x) => { const d = (x as { data: unknown }).data; return `${x.type} ${Array.isArray(d) ? d.map(String).join('') : String(d)}`; }).sort();
        done(`${p.rcode} [${ans.join(' | ')}]`);
      });
      sock.send(dnsPacket.encode({ type: 'query', id: qid, questions: [{ type, name, class: 'IN' }] }), port, '127.0.0.1');
    });
  };
  const bad: string[] = [];
  try {
    for (let i = 0; i < Math.min(count, lines.length); i++) {
      const [name, type] = lines[i]!.split(' ') as [string, 'A' | 'TXT'];
      if (name.split('.').length > 10) continue; // IPv6: compared by test/interop/dnsbl-rbldnsd.test.ts (mapped names differ)
      const x = await ask(a.port, name, type);
      const y = await ask(b.port, name, type);
      if (x !== y && bad.length < 10) bad.push(`${name} ${type}: ${a.name} ${x}, ${b.name} ${y}`);
    }
  } finally {
    sock.close();
  }
  return bad;
}

// ---------------------------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  installSignalHandlers();
  const o = options(process.argv.slice(2), process.env);
  if (!hasBinary('rbldnsd')) throw new Error('rbldnsd is not installed: apt-get install -y rbldnsd');
  const loadgen: 'dnsperf' | 'node' = o.loadgen === 'auto' ? (hasBinary('dnsperf') ? 'dnsperf' : 'node') : o.loadgen;
  if (loadgen === 'dnsperf' && !hasBinary('dnsperf')) throw new Error('dnsperf is not installed: apt-get install -y dnsperf');

  console.log(`bench:dnsbl  ${fmt(o.entries)} entries (seed ${o.seed}), ${o.rounds} round(s) x ${o.duration} s per server after ${o.warmup} s warm-up, ` +
    `load: ${loadgen === 'dnsperf' ? `dnsperf -c ${o.clients} -T ${o.threads}` : `bench/dnsbl-load.ts -c ${o.clients}`} -q ${o.outstanding}, ${fmt(o.queries)} query lines`);
  console.log(`box: ${cpus().length} CPU(s) (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}, node ${process.version}`);
  console.log(`udpThreads judged against the goals: ${o.goalThreads}` + (o.goalThreads === userUdpThreads(availableParallelism())
    ? ` (as a user sets it here: ${availableParallelism()} CPUs, one left to the rest of the box, which here runs the load generator)` : ' (from --udp-threads)') +
    (o.udpThreads.length > 1 ? `; also run: ${o.udpThreads.slice(1).join(', ')}` : ''));
  if (cpus().length <= 2) console.log(`note: ${cpus().length} CPUs: the load generator shares them with the server under test (dnsperf alone takes about one).`);
  if (loadgen === 'node') console.log('note: dnsperf not found: bench/dnsbl-load.ts is the load; it saturates before fast servers do (figures are floors).');

  const dir = mkdirTemp();
  // Zone, rbldnsd export, queries.
  let t0 = performance.now();
  const builder = new ZoneBuilder(ZONE_OPTIONS);
  for (const e of benchEntries(o.seed, o.entries)) builder.add(e);
  let zone: ReturnType<ZoneBuilder['build']> | null = builder.build();
  const st = zone.stats;
  console.log(`zone: ${fmt(st.v4Intervals)} IPv4 + ${fmt(st.v6Intervals)} IPv6 intervals, ${st.values} values, built in ${fmt(performance.now() - t0)} ms (this process)`);
  t0 = performance.now();
  const rblDir = join(dir, 'rbl');
  mkdirSync(rblDir);
  const files = await writeRbldnsdFiles(zone, rblDir);
  const queryLines = benchQueries(zone, o.seed, o.queries);
  const queryFile = join(dir, 'queries.txt');
  writeFileSync(queryFile, `${queryLines.join('\n')}\n`);
  zone = null;
  const script = o.stripTypes ? join(ROOT, 'bench', 'dnsbl-server.ts') : compileServer(join(dir, 'js'));
  console.log(`rbldnsd files, ${fmt(queryLines.length)} queries${o.stripTypes ? '' : ' and the JavaScript of the relayguard server'} written in ${fmt(performance.now() - t0)} ms`);
  console.log(`relayguard runs ${o.stripTypes ? 'from the .ts sources (type stripping)' : 'as JavaScript (types stripped beforehand, like dist/)'}${o.nodeArgs.length ? ` with ${o.nodeArgs.join(' ')}` : ''}`);

  // Baselines: every server with an (almost) empty zone (one entry).
  const emptyDir = join(dir, 'rbl-empty');
  mkdirSync(emptyDir);
  {
    const eb = new ZoneBuilder(ZONE_OPTIONS);
    for (const e of benchEntries(o.seed, 1)) eb.add(e);
    await writeRbldnsdFiles(eb.build(), emptyDir);
  }
  const empty = new Map<string, MemReading>();
  {
    const r = await startRbldnsd(emptyDir, files.args);
    await sleep(300);
    empty.set(r.name, await r.mem());
    await r.stop();
    for (const n of o.udpThreads) {
      const g = await startRelayguardDns(script, o, 1, n);
      await sleep(500);
      empty.set(g.name, await g.mem());
      await g.stop();
    }
  }

  // The servers.
  const rbl = await startRbldnsd(rblDir, files.args);
  console.log(`rbldnsd: pid ${rbl.pid}, port ${rbl.port}, loaded in ${fmt(rbl.startMs)} ms`);
  const rgs: Array<Awaited<ReturnType<typeof startRelayguardDns>>> = [];
  for (const n of o.udpThreads) {
    const g = await startRelayguardDns(script, o, o.entries, n);
    rgs.push(g);
    console.log(`${g.name}: pid ${g.pid}, port ${g.port}, ${g.ready.threads} UDP thread(s), zone built in ${fmt(g.ready.buildMs)} ms, index ${mbBytes(g.ready.zone.indexBytes)}`);
  }
  await sleep(1000);
  const idle = new Map<string, MemReading>();
  for (const s of [rbl, ...rgs]) idle.set(s.name, await s.mem());

  for (const g of rgs) {
    const mismatches = await compareAnswers(g, rbl, queryLines, 2000);
    console.log(mismatches.length === 0 ? `answers: ${g.name} and rbldnsd agree on the first 2,000 queries of the file (IPv6 ones skipped)`
      : `answers DIFFER (first ${mismatches.length}):\n  ${mismatches.join('\n  ')}`);
  }

  // Warm-up (JIT, caches), then timed rounds, rotating the order.
  const servers: RunningServer[] = [...rgs, rbl];
  if (o.warmup > 0) for (const s of servers) await runLoad(loadgen, s, queryFile, o, o.warmup);
  const results = new Map<string, LoadResult[]>(servers.map((s) => [s.name, []]));
  for (let r = 0; r < o.rounds; r++) {
    const order = servers.map((_, i) => servers[(i + r) % servers.length]!);
    for (const s of order) {
      const res = await runLoad(loadgen, s, queryFile, o, o.duration);
      results.get(s.name)!.push(res);
      console.log(`  round ${r + 1}  ${s.name.padEnd(14)} ${fmt(res.qps).padStart(8)} qps  latency ${res.latencyMs.toFixed(3)} ms  lost ${res.lost}  ` +
        `server CPU ${res.serverCpu.toFixed(1)} s = ${fmt(res.completed / Math.max(res.serverCpu, 0.01))} q/CPU-s  ${res.rcodes}`);
    }
  }
  const loaded = new Map<string, MemReading>();
  for (const s of servers) loaded.set(s.name, await s.mem());
  for (const s of servers) await s.stop();

  // Report.
  const q = (n: string): number => median(results.get(n)!.map((x) => x.qps));
  const perCpu = (n: string): number => median(results.get(n)!.map((x) => x.completed / Math.max(x.serverCpu, 0.01)));
  const kb = (m: Map<string, MemReading>, n: string, f: 'rssKb' | 'hwmKb' | 'anonKb' | 'fileKb'): number | null => m.get(n)?.[f] ?? null;
  /** Per-round qps ratios against rbldnsd (each round ran every server once). */
  const roundRatios = (n: string): number[] => results.get(n)!.map((x, i) => x.qps / results.get(rbl.name)![i]!.qps).sort((a, b) => a - b);
  const qpsRatio = (n: string): number => q(n) / q(rbl.name);
  const rssRatio = (n: string): number => (kb(loaded, n, 'rssKb') ?? 0) / Math.max(1, kb(loaded, rbl.name, 'rssKb') ?? 1);
  const verdict = (ok: boolean): string => (ok ? 'PASS' : 'MISS');
  const data = (n: string): number | null => {
    const a = kb(loaded, n, 'rssKb');
    const b = kb(empty, n, 'rssKb');
    return a === null || b === null ? null : a - b;
  };
  const R = rbl.name;
  console.log('');
  console.log(`| ${o.entries.toLocaleString('en-US')} entries | ${rgs.map((g) => g.name).join(' | ')} | rbldnsd | ${rgs.map((g) => `${g.name} / rbldnsd`).join(' | ')} |`);
  console.log(`|---|${rgs.map(() => '---|').join('')}---|${rgs.map(() => '---|').join('')}`);
  const row = (label: string, cell: (n: string) => string, rat: (n: string) => string): void => {
    console.log(`| ${label} | ${rgs.map((g) => cell(g.name)).join(' | ')} | ${cell(R)} | ${rgs.map((g) => rat(g.name)).join(' | ')} |`);
  };
  row(`queries/s (median of ${o.rounds})`, (n) => fmt(q(n)), (n) => `${ratio(q(n), q(R))} (goal >= ${GOAL_QPS_RATIO.toFixed(1)}: ${verdict(qpsRatio(n) >= GOAL_QPS_RATIO)})`);
  row('qps ratio per round (min / median / max)', () => '', (n) => { const r = roundRatios(n); return `${r[0]!.toFixed(2)} / ${median(r).toFixed(2)} / ${r[r.length - 1]!.toFixed(2)}`; });
  row('queries lost (median per run)', (n) => fmt(median(results.get(n)!.map((x) => x.lost))), () => '');
  row('queries per server CPU second', (n) => fmt(perCpu(n)), (n) => ratio(perCpu(n), perCpu(R)));
  row('average latency', (n) => `${median(results.get(n)!.map((x) => x.latencyMs)).toFixed(3)} ms`, () => '');
  row('VmRSS, zone loaded, idle', (n) => mb(kb(idle, n, 'rssKb')), (n) => ratio(kb(idle, n, 'rssKb'), kb(idle, R, 'rssKb')));
  row('VmRSS at the end of the run', (n) => mb(kb(loaded, n, 'rssKb')), (n) => `${rssRatio(n).toFixed(2)}x (goal <= ${GOAL_RSS_RATIO}: ${verdict(rssRatio(n) <= GOAL_RSS_RATIO)})`);
  row('  of which anonymous / file pages', (n) => `${mb(kb(loaded, n, 'anonKb'))} / ${mb(kb(loaded, n, 'fileKb'))}`,
    (n) => `anon ${ratio(kb(loaded, n, 'anonKb'), kb(loaded, R, 'anonKb'))}`);
  row('VmHWM (peak: build and load)', (n) => mb(kb(loaded, n, 'hwmKb')), (n) => ratio(kb(loaded, n, 'hwmKb'), kb(loaded, R, 'hwmKb')));
  row('VmRSS with a 1-entry zone (runtime)', (n) => mb(kb(empty, n, 'rssKb')), () => '');
  row('RSS - 1-entry RSS (the data)', (n) => mb(data(n)), (n) => ratio(data(n), data(R)));
  row('zone index (typed arrays)', (n) => { const g = rgs.find((x) => x.name === n); return g ? mbBytes(g.ready.zone.indexBytes) : '-'; }, () => '');
  row('V8 heap used / total (main thread)', (n) => { const m = loaded.get(n)?.node; return m ? `${mbBytes(m.heapUsed)} / ${mbBytes(m.heapTotal)}` : '-'; }, () => '');
  row('V8 young generation (main thread)', (n) => { const m = loaded.get(n)?.node; return m ? mbBytes(m.newSpace) : '-'; }, () => '');
  row('external / array buffers', (n) => { const m = loaded.get(n)?.node; return m ? `${mbBytes(m.external)} / ${mbBytes(m.arrayBuffers)}` : '-'; }, () => '');
  row('UDP queries by thread (whole run)', (n) => { const m = loaded.get(n)?.node; return m?.udpByThread?.length ? m.udpByThread.map((x) => fmt(x)).join(' / ') : '-'; }, () => '');
  console.log('');
  const goal = rgs.find((g) => g.ready.threads === o.goalThreads) ?? rgs[0]!;
  console.log(`GOAL (${goal.name}, udpThreads ${goal.ready.threads}): queries/s ${qpsRatio(goal.name).toFixed(2)}x rbldnsd's (>= ${GOAL_QPS_RATIO.toFixed(1)}: ` +
    `${verdict(qpsRatio(goal.name) >= GOAL_QPS_RATIO)}; per round ${roundRatios(goal.name).map((x) => x.toFixed(2)).join(', ')}), ` +
    `VmRSS at the end ${rssRatio(goal.name).toFixed(2)}x rbldnsd's (<= ${GOAL_RSS_RATIO}: ${verdict(rssRatio(goal.name) <= GOAL_RSS_RATIO)})`);
  console.log(`load average at the end ${loadavg().map((x) => x.toFixed(2)).join(' ')} (other work on the box lowers every figure; read the ratios)`);
}

function mkdirTemp(): string {
  const dir = join(tmpdir(), `bench-dnsbl-${process.pid}-${Date.now()}`);
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  onCleanup(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

main().then(
  async () => { await cleanupAll(); },
  async (err: unknown) => { console.error(err); await cleanupAll(); process.exitCode = 1; },
);
