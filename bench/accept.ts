/**
 * `npm run bench:accept`: relayguard vs a loopback Postfix 3.7, both durable, and vs Postfix's smtp-sink (no queue
 * at all: the protocol ceiling of this machine), driven by Postfix's smtp-source in the same run (see
 * /work/shared/peers.md sections 1-2).
 *
 *   - Postfix: a private instance (startPostfix, mode 'discard'): default durable queue (cleanup fsyncs every
 *     message before 250), mail for peers.test discarded by qmgr + discard(8) while the load runs.
 *   - relayguard: `relayguard serve` as a child, one mx listener, localDomains [peers.test], log level warn,
 *     durable queue (bodies up to 64 KiB inline in the SQLite index, WAL fdatasynced off the event loop before
 *     250; larger ones as spool files, body + dir fsync first), the runner discarding accepted mail like the Postfix
 *     peer. A fresh process and empty data dir for every timed run, so queue growth does not carry over from one
 *     run to the next; after each timed run the queue must drain (untimed), as Postfix's does.
 *   - smtp-sink: `smtp-sink -u nobody 127.0.0.1:PORT 1024`, one process for the whole run: answers every command
 *     and discards the mail, nothing stored. relayguard/smtp-sink (goal >= 0.5) says how close the durable relay
 *     comes to what the generator and the protocol allow on this box.
 *   - Load: smtp-source -s SESSIONS -l SIZE -m MESSAGES, with -d (connection reuse) and without (one connection
 *     per message). msgs/s = messages / wall seconds of smtp-source. Rounds interleave the three servers (the order
 *     rotates each round); the table reports medians, relayguard/Postfix per mode against the 1.5 goal and
 *     relayguard/smtp-sink against the 0.5 goal, both as ratios of medians and as the median of the per-round
 *     ratios (each taken from runs measured minutes apart, so the box's load drifts less between them).
 *   - Memory: relayguard's VmRSS before and with N idle connections (opened from a child under prlimit), goal
 *     under 300 MB at 10,000.
 *
 * A benchmark, not a test: it prints figures and PASS/MISS against the goals, it asserts nothing about timing.
 * Everything runs on 127.0.0.1. Options: --help (or BENCH_* variables, BENCH_QUICK=1 for a short run).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasBinary, smtpSource, startPostfix, type PostfixInstance } from '../src/testing/postfix.ts';
import {
  benchOptions, cleanupAll, filesystemNote, installSignalHandlers, median, nofileWrap, onCleanup, openIdleConnections, procStatusKb,
  postfixBacklog, sleep, SMTP_SINK, startRelayguard, startSmtpSink, summariseProfiles, type BenchOptions, type Relayguard,
} from './lib.ts';

const GOAL_RATIO = 1.5;
/** relayguard (durable) against smtp-sink (no queue), per mode. */
const GOAL_SINK_RATIO = 0.5;
const GOAL_RSS_MB = 300;
const FROM = 'sender@example.org';
const TO = 'user@peers.test';

type Mode = 'reuse' | 'newconn';
type Server = 'relayguard' | 'postfix' | 'smtp-sink' | 'baseline';
const MODE_LABEL: Record<Mode, string> = { reuse: 'reuse (-d)', newconn: 'new conn per msg' };

interface RunResult {
  rate: number;
  /** relayguard only: CPU of the serve process per timed message, microseconds, by thread kind. */
  cpu?: ThreadCpu;
}

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const mb = (kb: number | null): string => (kb === null ? 'n/a' : `${fmt(kb / 1024, 1)} MB`);

/** CPU of a process by thread kind, microseconds: the event loop thread (user, sys), libuv's pool (fs calls), V8's workers. */
interface ThreadCpu { mainUser: number; mainSys: number; pool: number; v8: number; total: number }

function threadCpu(pid: number): ThreadCpu {
  const out: ThreadCpu = { mainUser: 0, mainSys: 0, pool: 0, v8: 0, total: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try { stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1'); } catch { continue; }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const user = Number(f[11]) * 10_000; // clock ticks are 100 Hz
    const sys = Number(f[12]) * 10_000;
    out.total += user + sys;
    if (Number(tid) === pid) { out.mainUser += user; out.mainSys += sys; }
    else if (comm.startsWith('libuv-worker')) out.pool += user + sys;
    else if (comm.startsWith('V8Worker')) out.v8 += user + sys;
  }
  return out;
}

function cpuDelta(a: ThreadCpu, b: ThreadCpu, messages: number): ThreadCpu {
  const per = (k: keyof ThreadCpu): number => (b[k] - a[k]) / messages;
  return { mainUser: per('mainUser'), mainSys: per('mainSys'), pool: per('pool'), v8: per('v8'), total: per('total') };
}


/** Waits until Postfix has discarded everything, so its delivery work never overlaps the next timed run. */
async function drainPostfix(pf: PostfixInstance, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (postfixBacklog(pf) > 0) {
    if (Date.now() > deadline) throw new Error(`Postfix queue did not drain within ${timeoutMs} ms (${postfixBacklog(pf)} files left)`);
    await sleep(100);
  }
}

function header(o: BenchOptions): void {
  let postfixVersion = '?';
  try { postfixVersion = execFileSync('/usr/sbin/postconf', ['-d', '-h', 'mail_version'], { encoding: 'utf8' }).trim(); } catch { /* keep ? */ }
  const cpu = cpus();
  console.log('relayguard accept benchmark (npm run bench:accept)');
  console.log(`host: ${cpu.length} vCPU ${cpu[0]?.model.trim() ?? '?'}, node ${process.version}, Postfix ${postfixVersion}, smtp-source on 127.0.0.1`);
  console.log(`load: smtp-source -s ${o.sessions} -l ${o.size} -m ${fmt(o.messages)} per timed run, ${o.rounds} round(s) interleaved (order rotates), ` +
    `${fmt(o.warmup)} untimed warm-up messages before each run${o.quick ? '  [QUICK]' : ''}`);
  console.log('both durable: Postfix cleanup fsyncs each message; relayguard fdatasyncs its SQLite WAL (inline body + envelope, group commit) before 250');
  console.log('smtp-sink: Postfix\'s test server, no queue (the protocol ceiling of the box and generator); relayguard/smtp-sink goal >= ' + GOAL_SINK_RATIO);
  console.log('relayguard: fresh process + empty queue per run, log level warn (data dirs removed only at the end); ' +
    'Postfix: one instance, queue drained (discarded) before each run');
  console.log(`load average before the run: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (other work on the box skews the figures)`);
  const fsNote = filesystemNote(tmpdir());
  if (fsNote !== null) console.log(`note: ${fsNote}`);
  if (o.profileDir !== null) console.log('PROFILING: relayguard runs under --cpu-prof, its figures are lower than unprofiled ones');
  console.log('');
}

async function main(): Promise<void> {
  const o = benchOptions(process.argv.slice(2), process.env);
  installSignalHandlers();
  if (process.getuid?.() !== 0) throw new Error('bench:accept needs root (a private Postfix master must start as root)');
  for (const b of ['/usr/sbin/smtp-source', '/usr/sbin/postfix', SMTP_SINK, 'prlimit']) if (!hasBinary(b)) throw new Error(`${b} not found (see /work/shared/peers.md)`);
  header(o);

  const scratch = mkdtempSync(join(tmpdir(), 'relayguard-bench-accept-'));
  onCleanup(async () => rmSync(scratch, { recursive: true, force: true }));
  let profileDir: string | null = null;
  if (o.profileDir !== null) profileDir = o.profileDir === '' ? join(scratch, 'profiles') : o.profileDir;
  const nodeArgs = profileDir === null ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`];

  process.stdout.write('starting Postfix (discard) ... ');
  const pf = await startPostfix({ mode: 'discard' });
  onCleanup(() => pf.stop());
  console.log(`127.0.0.1:${pf.port}`);
  process.stdout.write('starting smtp-sink ... ');
  const sink = await startSmtpSink();
  console.log(`127.0.0.1:${sink.port}`);

  // Generate relayguard's self-signed certificate once; every fresh data dir gets a copy (no key generation per start).
  const tlsCache = join(scratch, 'tls');
  {
    const rg = await startRelayguard();
    cpSync(join(rg.dataDir, 'tls'), tlsCache, { recursive: true });
    await rg.stop();
  }

  const load = (port: number, reuse: boolean, messages: number) =>
    smtpSource({ port, sessions: o.sessions, messages, size: o.size, reuse, from: FROM, to: TO });

  const runRelayguard = async (mode: Mode, tree?: string): Promise<RunResult> => {
    // The data dir stays until the end: removing 5,000 files here would slow the next runs' file creation (see header).
    const rg: Relayguard = await startRelayguard({
      tlsDir: tlsCache, nodeArgs, parentDir: scratch, removeDataDir: false, ...(tree === undefined ? {} : { tree }),
    });
    try {
      if (o.warmup > 0) await load(rg.port, mode === 'reuse', o.warmup);
      const cpu0 = threadCpu(rg.pid);
      const { wallMs } = await load(rg.port, mode === 'reuse', o.messages);
      const cpu1 = threadCpu(rg.pid);
      // Every accepted message is delivered (discarded) by the runner, as Postfix's are: wait for it, untimed.
      const deadline = Date.now() + 60_000;
      while (rg.spoolCount() > 0 && Date.now() < deadline) await sleep(100);
      const left = rg.spoolCount();
      if (left > 0) console.log(`  note: relayguard queue still holds ${left} messages 60 s after the run`);
      return { rate: o.messages / (wallMs / 1000), cpu: cpuDelta(cpu0, cpu1, o.messages) };
    } finally {
      await rg.stop();
    }
  };

  const runPostfix = async (mode: Mode): Promise<RunResult> => {
    await drainPostfix(pf);
    if (o.warmup > 0) {
      await load(pf.port, mode === 'reuse', o.warmup);
      await drainPostfix(pf);
    }
    const { wallMs } = await load(pf.port, mode === 'reuse', o.messages);
    await drainPostfix(pf);
    return { rate: o.messages / (wallMs / 1000) };
  };

  const runSink = async (mode: Mode): Promise<RunResult> => {
    if (o.warmup > 0) await load(sink.port, mode === 'reuse', o.warmup);
    const { wallMs } = await load(sink.port, mode === 'reuse', o.messages);
    return { rate: o.messages / (wallMs / 1000) };
  };

  const SERVERS: readonly Server[] = o.baseline === null ? ['relayguard', 'postfix', 'smtp-sink'] : ['relayguard', 'postfix', 'smtp-sink', 'baseline'];
  const results: Record<Mode, Record<Server, RunResult[]>> = {
    reuse: { relayguard: [], postfix: [], 'smtp-sink': [], baseline: [] },
    newconn: { relayguard: [], postfix: [], 'smtp-sink': [], baseline: [] },
  };
  for (let round = 1; round <= o.rounds; round++) {
    for (const mode of ['reuse', 'newconn'] as const) {
      // The order rotates each round (and is reversed every other one), so no server always runs first or last.
      const shift = (round - 1) % SERVERS.length;
      const rotated = [...SERVERS.slice(shift), ...SERVERS.slice(0, shift)];
      const order: Server[] = round % 2 === 1 ? rotated : rotated.reverse();
      for (const server of order) {
        const r = server === 'relayguard' ? await runRelayguard(mode)
          : server === 'baseline' ? await runRelayguard(mode, o.baseline!)
          : server === 'postfix' ? await runPostfix(mode) : await runSink(mode);
        results[mode][server].push(r);
        const c = r.cpu;
        const cpu = c === undefined ? '' : `  CPU us/msg: ${fmt(c.total)} = event loop ${fmt(c.mainUser)} user + ${fmt(c.mainSys)} sys, fs pool ${fmt(c.pool)}, V8 ${fmt(c.v8)}`;
        console.log(`round ${round}/${o.rounds}  ${MODE_LABEL[mode].padEnd(17)} ${server.padEnd(10)} ${fmt(r.rate).padStart(7)} msg/s${cpu}`);
      }
    }
  }

  console.log('');
  console.log(`messages/second (median of ${o.rounds}; ${fmt(o.messages)} x ${o.size}-byte messages per run, ${o.sessions} sessions)`);
  const rows: string[][] = [[
    'mode', 'relayguard', 'postfix', 'smtp-sink', 'rg/postfix', `goal >= ${GOAL_RATIO}`, 'rg/smtp-sink', `goal >= ${GOAL_SINK_RATIO}`,
    'rg/sink per round', 'rg CPU us/msg', 'rg runs', 'postfix runs', 'smtp-sink runs',
  ]];
  for (const mode of ['reuse', 'newconn'] as const) {
    const rg = results[mode].relayguard;
    const p = results[mode].postfix;
    const sk = results[mode]['smtp-sink'];
    const rgMed = median(rg.map((r) => r.rate));
    const pMed = median(p.map((r) => r.rate));
    const skMed = median(sk.map((r) => r.rate));
    const ratio = rgMed / pMed;
    const sinkRatio = rgMed / skMed;
    const perRound = rg.map((r, i) => r.rate / sk[i]!.rate);
    rows.push([
      MODE_LABEL[mode], fmt(rgMed), fmt(pMed), fmt(skMed),
      fmt(ratio, 2), ratio >= GOAL_RATIO ? 'PASS' : 'MISS',
      fmt(sinkRatio, 2), sinkRatio >= GOAL_SINK_RATIO ? 'PASS' : 'MISS',
      `${fmt(median(perRound), 2)} (${perRound.map((x) => fmt(x, 2)).join(' / ')})`,
      fmt(median(rg.map((r) => r.cpu?.total ?? 0))),
      rg.map((r) => fmt(r.rate)).join(' / '), p.map((r) => fmt(r.rate)).join(' / '), sk.map((r) => fmt(r.rate)).join(' / '),
    ]);
  }
  printTable(rows);
  console.log('');
  console.log('relayguard CPU per timed message, microseconds (median of the runs): the serve process by thread');
  const cpuRows: string[][] = [['mode', 'tree', 'total', 'event loop user', 'event loop sys', 'fs pool', 'V8 (GC, JIT)']];
  for (const mode of ['reuse', 'newconn'] as const) {
    for (const server of ['relayguard', 'baseline'] as const) {
      const cs = results[mode][server].map((r) => r.cpu).filter((c): c is ThreadCpu => c !== undefined);
      if (cs.length === 0) continue;
      const m = (k: keyof ThreadCpu): string => fmt(median(cs.map((c) => c[k])));
      cpuRows.push([MODE_LABEL[mode], server === 'relayguard' ? 'this tree' : 'baseline', m('total'), m('mainUser'), m('mainSys'), m('pool'), m('v8')]);
    }
  }
  printTable(cpuRows, 2);
  if (o.baseline !== null) {
    console.log('');
    console.log(`before/after in the same rounds: this tree vs --baseline ${o.baseline}`);
    const ba: string[][] = [['mode', 'baseline', 'this tree', 'this/baseline per round', 'base/sink', 'this/sink', 'baseline runs', 'this tree runs']];
    for (const mode of ['reuse', 'newconn'] as const) {
      const rg = results[mode].relayguard;
      const bl = results[mode].baseline;
      const skMed = median(results[mode]['smtp-sink'].map((r) => r.rate));
      const perRound = rg.map((r, i) => r.rate / bl[i]!.rate);
      ba.push([
        MODE_LABEL[mode], fmt(median(bl.map((r) => r.rate))), fmt(median(rg.map((r) => r.rate))),
        `${fmt(median(perRound), 2)} (${perRound.map((x) => fmt(x, 2)).join(' / ')})`,
        fmt(median(bl.map((r) => r.rate)) / skMed, 2), fmt(median(rg.map((r) => r.rate)) / skMed, 2),
        bl.map((r) => fmt(r.rate)).join(' / '), rg.map((r) => fmt(r.rate)).join(' / '),
      ]);
    }
    printTable(ba, 6);
  }
  console.log('rg CPU: the whole serve process per timed message (the per-run lines split it: event loop thread, fs pool = libuv threads ' +
    'doing fdatasync of the WAL and, for large bodies, open/writev/fsync/rename: mostly kernel time; V8 = GC and compiler threads)');
  console.log('(goals are informational; on this 2-vCPU box spread between runs is 10-25 %, differences under ~20 % are noise)');
  console.log(`load average after the timed runs: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  if (o.idle > 0) await idleMemory(o);

  if (profileDir !== null) printProfile(profileDir);
}

async function idleMemory(o: BenchOptions): Promise<void> {
  const { wrap, limit } = nofileWrap();
  console.log('');
  console.log(`idle connections: ${fmt(o.idle)} TCP connections to relayguard's mx port, each after its 220 greeting (fd limit ${fmt(limit)} for both processes)`);
  if (limit < o.idle + 200) console.log(`  warning: the hard fd limit ${limit} is below ${o.idle} + headroom; expect failures`);
  const rg = await startRelayguard({
    wrap,
    config: { limits: { connections: o.idle + 1000, connectionsPerIp: o.idle + 1000, idleTimeout: '1h', sessionTimeout: '2h' } },
  });
  try {
    await sleep(1000);
    const before = procStatusKb(rg.pid, 'VmRSS');
    // Ten source addresses keep every (source, destination) pair far from ephemeral-port exhaustion.
    const sources = Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 2}`);
    const idle = await openIdleConnections(rg.port, o.idle, sources, wrap);
    try {
      await sleep(2000);
      const withConns = procStatusKb(rg.pid, 'VmRSS');
      const hwm = procStatusKb(rg.pid, 'VmHWM');
      const stillOpen = await idle.openNow();
      console.log(`  opened ${fmt(idle.opened)} in ${fmt(idle.openMs / 1000, 1)} s, failed ${fmt(idle.failed)}${idle.firstError ? ` (first: ${idle.firstError})` : ''}, still open after 2 s: ${fmt(stillOpen)}`);
      const perConn = before !== null && withConns !== null && idle.opened > 0 ? ((withConns - before) / idle.opened) : null;
      console.log(`  relayguard VmRSS: ${mb(before)} idle, ${mb(withConns)} with ${fmt(stillOpen)} connections` +
        `${perConn === null ? '' : ` (+${fmt(perConn, 1)} KB/connection)`}, peak (VmHWM) ${mb(hwm)}`);
      const verdict = withConns !== null && stillOpen >= o.idle ? (withConns / 1024 < GOAL_RSS_MB ? 'PASS' : 'MISS') : 'n/a (not all connections open)';
      console.log(`  goal: under ${GOAL_RSS_MB} MB with ${fmt(o.idle)} idle connections${o.idle === 10_000 ? '' : ' (goal is stated for 10,000)'}: ${verdict}`);
    } finally {
      await idle.stop();
    }
  } finally {
    await rg.stop();
  }
}

function printProfile(dir: string): void {
  const s = summariseProfiles(dir);
  console.log('');
  if (s === null) { console.log(`profile: no .cpuprofile written in ${dir}`); return; }
  const busy = s.totalMs - s.idleMs;
  const pct = (ms: number): string => `${fmt((100 * ms) / busy, 1).padStart(5)} %`;
  console.log(`relayguard CPU profile (${dir}): ${fmt(busy)} ms busy of ${fmt(s.totalMs)} ms sampled`);
  console.log('  self time by source:');
  for (const e of s.sources) console.log(`    ${pct(e.ms)}  ${e.name}`);
  console.log('  self time, top functions:');
  for (const e of s.functions) console.log(`    ${pct(e.ms)}  ${e.name}`);
  console.log('  inclusive time (frame and everything it called), top frames:');
  for (const e of s.inclusive) console.log(`    ${pct(e.ms)}  ${e.name}`);
}

/** Columns from `leftFrom` on (and the first) are left-aligned, the others right-aligned. */
function printTable(rows: string[][], leftFrom = 8): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((cell, c) => (c === 0 || c >= leftFrom ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

try {
  await main();
} catch (err) {
  console.error(`bench:accept failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
