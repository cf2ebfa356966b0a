/**
 * `npm run bench:relay`: relaying end to end, relayguard vs a loopback Postfix 3.7, in the same run
 * (see /work/shared/peers.md sections 1-2):
 *
 *   smtp-source -> relayguard -> smtp-sink      and      smtp-source -> Postfix -> smtp-sink
 *
 *   - Next hop: one smtp-sink (`-c` counters on stdout) shared by both servers; relayguard reaches it through
 *     `delivery.smartHost: [127.0.0.1]:PORT`, Postfix through `relay_transport = relay:[127.0.0.1]:PORT`.
 *   - Both durable: Postfix's cleanup fsyncs each message before 250; relayguard commits small bodies inline in its
 *     SQLite index and fdatasyncs the WAL (group commit), larger ones as spool files (body + dir fsync first).
 *     Both remove the message after delivery. Both log every message (relayguard JSON lines at level
 *     info to a file, Postfix its maillog): the latency figures come from those logs.
 *   - Load: smtp-source -s SESSIONS -l SIZE -m MESSAGES to user@peers.test, one connection per message (add
 *     --reuse for -d). Rounds interleave the two servers (the order alternates).
 *   - End-to-end rate: MESSAGES / (time from smtp-source's start until the sink has counted all MESSAGES).
 *     Also shown: the accept rate (MESSAGES / smtp-source wall time) and how long the queue took to drain after.
 *   - Latency "250 -> delivered" per message, p50 / p99 per run:
 *       relayguard: `recipient delivered` delay_ms (now - receivedAt; receivedAt is stamped at commit, before the
 *       fsyncs and the 250);
 *       Postfix: `status=sent ... delay=` with delay_logging_resolution_limit = 3 (ms); Postfix's clock starts at
 *       arrival (MAIL FROM), so it also counts DATA transfer and cleanup, a slight overestimate against relayguard.
 *
 * A benchmark, not a test: it prints figures and PASS/MISS against the goal (relayguard/Postfix >= 1.5 end to end),
 * it asserts nothing about timing. Everything runs on 127.0.0.1; every process it starts is stopped at the end,
 * on error and on SIGINT/SIGTERM. Options: --help, or BENCH_* variables; BENCH_QUICK=1 for a short run.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../src/testing/ports.ts';
import { CLI, NODE } from '../src/testing/serve-process.ts';
import { hasBinary, smtpSource, startPostfix, type PostfixInstance } from '../src/testing/postfix.ts';
import { cleanupAll, filesystemNote, installSignalHandlers, median, onCleanup, queueCount, sleep, startRelayguard, summariseProfiles, postfixBacklog } from './lib.ts';

const GOAL_RATIO = 1.5;
const FROM = 'sender@example.org';
const TO = 'user@peers.test';
const SMTP_SINK = '/usr/sbin/smtp-sink';

// ---------------------------------------------------------------------------------------------------------------
// Options

interface Options {
  messages: number;
  rounds: number;
  sessions: number;
  size: number;
  warmup: number;
  reuse: boolean;
  /** Keep the scratch directory (relayguard data dirs and logs) for inspection. */
  keep: boolean;
  /** Longest wait for one run's messages to reach the sink. */
  timeoutMs: number;
  quick: boolean;
  /** Run relayguard under --cpu-prof into this directory ('' = a scratch subdirectory) and print a summary; null = off. */
  profileDir: string | null;
}

const USAGE = `usage: node bench/relay.ts [--messages=N] [--rounds=N] [--sessions=N] [--size=BYTES] [--warmup=N] [--reuse] [--keep] [--timeout=SECONDS] [--profile[=DIR]] [--quick]
env: BENCH_MESSAGES BENCH_ROUNDS BENCH_SESSIONS BENCH_SIZE BENCH_WARMUP BENCH_REUSE=1 BENCH_KEEP=1 BENCH_TIMEOUT BENCH_PROFILE(=1|DIR) BENCH_QUICK=1
--keep: leave the scratch dir (relayguard data dirs with serve.log) in place and print its path
--profile: run relayguard under --cpu-prof (figures drop) and print where its CPU went
defaults: 5000 messages x 3 rounds, 20 sessions, 5120-byte bodies, 500 warm-up, one connection per message, 300 s timeout
quick:    1000 messages x 1 round, 200 warm-up`;

function options(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  const args = new Map<string, string>();
  for (const a of argv) {
    if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`);
    args.set(m[1]!, m[2] ?? '1');
  }
  const known = new Set(['messages', 'rounds', 'sessions', 'size', 'warmup', 'reuse', 'keep', 'timeout', 'quick', 'profile']);
  for (const k of args.keys()) if (!known.has(k)) throw new Error(`unknown option --${k}\n${USAGE}`);
  const raw = (k: string): string | undefined => args.get(k) ?? env[`BENCH_${k.toUpperCase()}`];
  const flag = (k: string): boolean => ['1', 'true', 'yes'].includes((raw(k) ?? '').toLowerCase());
  const quick = flag('quick');
  const int = (k: string, dflt: number, min: number): number => {
    const v = raw(k);
    if (v === undefined || v === '') return dflt;
    if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`--${k} / BENCH_${k.toUpperCase()} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  return {
    quick,
    messages: int('messages', quick ? 1000 : 5000, 1),
    rounds: int('rounds', quick ? 1 : 3, 1),
    sessions: int('sessions', 20, 1),
    size: int('size', 5120, 0),
    warmup: int('warmup', quick ? 200 : 500, 0),
    reuse: flag('reuse'),
    keep: flag('keep'),
    timeoutMs: int('timeout', 300, 1) * 1000,
    profileDir: (() => {
      const v = raw('profile');
      if (v === undefined || v === '' || ['0', 'false', 'no'].includes(v.toLowerCase())) return null;
      return ['1', 'true', 'yes'].includes(v.toLowerCase()) ? '' : v;
    })(),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Small utilities

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** The q-quantile (0..1) by nearest rank; NaN for an empty list. */
function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs: number, explain: () => string = () => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s${explain() ? `\n${explain()}` : ''}`);
    await sleep(5);
  }
}

function printTable(rows: string[][], leftColumns: number): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((cell, c) => (c < leftColumns ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// smtp-sink with a live message counter

interface Sink {
  readonly port: number;
  /** Messages the sink has accepted so far (its `-c` counter). */
  count(): number;
  stop(): Promise<void>;
}

async function startSink(): Promise<Sink> {
  const port = await freePort();
  // -c: "sess=N quit=N mesg=N" after every event, \r separated; backlog 1024 as in peers.md.
  const child: ChildProcess = spawn(SMTP_SINK, ['-u', 'nobody', '-c', `127.0.0.1:${port}`, '1024'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let count = 0;
  let tail = '';
  let stderr = '';
  child.stdout!.setEncoding('latin1').on('data', (d: string) => {
    tail = (tail + d).slice(-256);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    const last = all[all.length - 1];
    if (last) count = Math.max(count, Number(last[1]));
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 8192) stderr += d; });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  onCleanup(stop);
  const deadline = Date.now() + 5000;
  for (;;) {
    const ok = await smtpGreets(port);
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`smtp-sink did not start on 127.0.0.1:${port}: ${stderr}`);
    }
    await sleep(50);
  }
  return { port, count: () => count, stop };
}

/** True when 127.0.0.1:port answers with a 220 line (then QUIT). */
function smtpGreets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let buf = '';
    const t = setTimeout(() => { s.destroy(); resolve(false); }, 1000);
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\r\n')) { clearTimeout(t); s.end('QUIT\r\n'); resolve(buf.startsWith('220')); }
    });
    s.on('error', () => { clearTimeout(t); resolve(false); });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// relayguard serve relaying to the sink, JSON log (level info) to a file

interface RelayguardRun {
  readonly port: number;
  readonly pid: number;
  readonly logFile: string;
  /** 'recipient delivered' and 'recipient deferred/bounced' counts, and the delay_ms of deliveries of messages queued at or after sinceMs. */
  readLog(sinceMs: number): { delaysMs: number[]; delivered: number; deferred: number; bounced: number; errors: string[]; slowest: Record<string, unknown> | null };
  /** Messages still in the queue (index rows: small bodies are inline, not spool files). */
  spoolCount(): number;
  stop(): Promise<void>;
}

async function startRelayguardRelay(sinkPort: number, tlsDir: string, parentDir: string, nodeArgs: readonly string[] = []): Promise<RelayguardRun> {
  const dataDir = await mkdtemp(join(parentDir, 'relayguard-bench-relay-'));
  cpSync(tlsDir, join(dataDir, 'tls'), { recursive: true });
  const port = await freePort();
  const config = {
    hostname: 'mx.relay.test',
    dataDir,
    localDomains: ['local.test'],
    listeners: [{ name: 'mx', role: 'mx', address: '127.0.0.1', port, tls: 'starttls' }],
    log: { level: 'info' },
    web: { enabled: false },
    dnsbl: { enabled: false },
    // smtp-source connects from 127.0.0.1, inside the default trustedNetworks: it may relay to peers.test.
    delivery: { enabled: true, smartHost: `[127.0.0.1]:${sinkPort}`, localTransport: { discard: true } },
  };
  const configFile = join(dataDir, 'relayguard.yaml');
  await writeFile(configFile, stringify(config));
  const logFile = join(dataDir, 'serve.log');
  const fd = openSync(logFile, 'a');
  const child = spawn(NODE, [...nodeArgs, CLI, 'serve', '--config', configFile], { stdio: ['ignore', fd, 'pipe'] });
  closeSync(fd);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 65_536) stderr += d; });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    unregister();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    }
  };
  const unregister = onCleanup(stop);
  const readText = (): string => { try { return readFileSync(logFile, 'utf8'); } catch { return ''; } };
  try {
    await waitFor('relayguard serve listening', () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`relayguard serve exited (${child.exitCode ?? child.signalCode}):\n${stderr}\n${readText()}`);
      return readText().includes('"msg":"listening"');
    }, 30_000, () => stderr);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    port,
    pid: child.pid!,
    logFile,
    readLog(sinceMs) {
      const queuedAt = new Map<string, number>();
      const delaysMs: number[] = [];
      const errors: string[] = [];
      let delivered = 0;
      let deferred = 0;
      let bounced = 0;
      let slowest: Record<string, unknown> | null = null;
      for (const line of readText().split('\n')) {
        if (line === '') continue;
        let rec: Record<string, unknown>;
        try { rec = JSON.parse(line) as Record<string, unknown>; } catch { continue; }
        const msg = rec['msg'];
        if (msg === 'message accepted') queuedAt.set(String(rec['queue_id']), Date.parse(String(rec['time'])));
        else if (msg === 'recipient delivered') {
          const at = queuedAt.get(String(rec['queue_id']));
          if (at === undefined || at < sinceMs) continue;
          delivered++;
          delaysMs.push(Number(rec['delay_ms']));
          if (slowest === null || Number(rec['delay_ms']) > Number(slowest['delay_ms'])) slowest = { ...rec, queued_at: new Date(at).toISOString() };
        } else if (msg === 'recipient deferred') deferred++;
        else if (msg === 'recipient bounced') bounced++;
        if ((rec['level'] === 'error' || rec['level'] === 'warn') && errors.length < 5) errors.push(line);
      }
      return { delaysMs, delivered, deferred, bounced, errors, slowest };
    },
    spoolCount: () => queueCount(dataDir),
    stop,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Postfix


function logSize(file: string): number {
  try { return statSync(file).size; } catch { return 0; }
}

/** delay= (ms) of every `status=sent` line written after byte `offset`, and counts of deferred/bounced. */
function postfixDelays(pf: PostfixInstance, offset: number): { delaysMs: number[]; deferred: number; bounced: number } {
  let text = '';
  try { text = readFileSync(pf.logFile, 'latin1').slice(offset); } catch { /* none */ }
  const delaysMs: number[] = [];
  let deferred = 0;
  let bounced = 0;
  for (const line of text.split('\n')) {
    if (!/ postfix\/(smtp|relay)\[/.test(line) && !/\/smtp\[/.test(line)) continue;
    const m = /, delay=([\d.]+),.* status=(\w+)/.exec(line);
    if (!m) continue;
    if (m[2] === 'sent') delaysMs.push(Number(m[1]) * 1000);
    else if (m[2] === 'deferred') deferred++;
    else if (m[2] === 'bounced') bounced++;
  }
  return { delaysMs, deferred, bounced };
}

// ---------------------------------------------------------------------------------------------------------------

type Server = 'relayguard' | 'postfix';

interface RunResult {
  /** Messages per second, end to end (source start → sink counted all). */
  e2e: number;
  /** Messages per second accepted (smtp-source wall time). */
  accept: number;
  /** Seconds from smtp-source's exit to the last message at the sink. */
  drainS: number;
  p50: number;
  p99: number;
  max: number;
  /** Deliveries with a latency figure (should equal messages). */
  samples: number;
  notes: string[];
}

function header(o: Options): void {
  let postfixVersion = '?';
  try { postfixVersion = execFileSync('/usr/sbin/postconf', ['-d', '-h', 'mail_version'], { encoding: 'utf8' }).trim(); } catch { /* keep ? */ }
  const cpu = cpus();
  console.log('relayguard relay benchmark (npm run bench:relay): smtp-source -> server -> smtp-sink, end to end');
  console.log(`host: ${cpu.length} vCPU ${cpu[0]?.model.trim() ?? '?'}, node ${process.version}, Postfix ${postfixVersion}; everything on 127.0.0.1`);
  console.log(`load: smtp-source -s ${o.sessions} -l ${o.size} -m ${fmt(o.messages)}${o.reuse ? ' -d (connection reuse)' : ' (one connection per message)'} per timed run, ` +
    `${o.rounds} round(s) interleaved (order alternates), ${fmt(o.warmup)} untimed warm-up messages delivered before each run${o.quick ? '  [QUICK]' : ''}`);
  console.log('next hop: one smtp-sink for both (relayguard delivery.smartHost [127.0.0.1]:PORT, Postfix relay_transport relay:[127.0.0.1]:PORT)');
  console.log('both durable (fsync before 250) and both logging every message; relayguard: fresh process + empty queue per run; Postfix: one instance, drained between runs');
  console.log('latency 250 -> delivered: relayguard "recipient delivered" delay_ms (from commit); Postfix status=sent delay= (from MAIL FROM; ms below 1 s, 2 significant digits above)');
  console.log(`load average before the run: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (other work on the box skews the figures)`);
  const fsNote = filesystemNote(tmpdir());
  if (fsNote !== null) console.log(`note: ${fsNote}`);
  console.log('');
}

async function main(): Promise<void> {
  const o = options(process.argv.slice(2), process.env);
  installSignalHandlers();
  if (process.getuid?.() !== 0) throw new Error('bench:relay needs root (a private Postfix master must start as root)');
  for (const b of ['/usr/sbin/smtp-source', SMTP_SINK, '/usr/sbin/postfix']) if (!hasBinary(b)) throw new Error(`${b} not found (see /work/shared/peers.md)`);
  header(o);

  const scratch = mkdtempSync(join(tmpdir(), 'relayguard-bench-relay-'));
  if (o.keep) console.log(`scratch dir kept: ${scratch}`);
  else onCleanup(async () => rmSync(scratch, { recursive: true, force: true }));

  const sink = await startSink();
  console.log(`smtp-sink on 127.0.0.1:${sink.port}`);
  process.stdout.write('starting Postfix (relay to the sink) ... ');
  const pf = await startPostfix({
    mode: 'relay-to',
    relayHost: `127.0.0.1:${sink.port}`,
    extraMain: { delay_logging_resolution_limit: '3' },
  });
  onCleanup(() => pf.stop());
  console.log(`127.0.0.1:${pf.port}`);

  // relayguard's self-signed certificate, generated once and copied into every fresh data dir.
  const tlsCache = join(scratch, 'tls');
  const profileDir = o.profileDir === null ? null : o.profileDir === '' ? join(scratch, 'profiles') : o.profileDir;
  if (profileDir !== null) console.log('PROFILING: relayguard runs under --cpu-prof, its figures are lower than unprofiled ones');
  {
    const rg = await startRelayguard({ parentDir: scratch });
    cpSync(join(rg.dataDir, 'tls'), tlsCache, { recursive: true });
    await rg.stop();
  }

  const load = (port: number, messages: number) =>
    smtpSource({ port, sessions: o.sessions, messages, size: o.size, reuse: o.reuse, from: FROM, to: TO, timeoutMs: o.timeoutMs });

  /** Sends `messages` and waits until the sink counted them all; times both. */
  const timed = async (port: number, messages: number, explain: () => string): Promise<{ e2eMs: number; acceptMs: number }> => {
    const target = sink.count() + messages;
    const t0 = performance.now();
    const { wallMs } = await load(port, messages);
    await waitFor(`sink count ${target}`, () => sink.count() >= target, o.timeoutMs, () => `sink has ${sink.count()}; ${explain()}`);
    return { e2eMs: performance.now() - t0, acceptMs: wallMs };
  };

  const summarise = (e2eMs: number, acceptMs: number, delays: number[], notes: string[]): RunResult => ({
    e2e: o.messages / (e2eMs / 1000),
    accept: o.messages / (acceptMs / 1000),
    drainS: (e2eMs - acceptMs) / 1000,
    p50: quantile(delays, 0.5),
    p99: quantile(delays, 0.99),
    max: quantile(delays, 1),
    samples: delays.length,
    notes,
  });

  const runRelayguard = async (): Promise<RunResult> => {
    const rg = await startRelayguardRelay(sink.port, tlsCache, scratch, profileDir === null ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]);
    try {
      const explain = (): string => {
        const l = rg.readLog(0);
        return `relayguard spool ${rg.spoolCount()}, deferred ${l.deferred}, bounced ${l.bounced}; ${l.errors.join('\n')}`;
      };
      if (o.warmup > 0) {
        await timed(rg.port, o.warmup, explain);
        await waitFor('relayguard spool empty after warm-up', () => rg.spoolCount() === 0, 60_000, explain);
      }
      const since = Date.now();
      const { e2eMs, acceptMs } = await timed(rg.port, o.messages, explain);
      await waitFor('relayguard spool empty', () => rg.spoolCount() === 0, 60_000, explain);
      await rg.stop(); // flushes the log
      const l = rg.readLog(since);
      const notes: string[] = [];
      if (l.delaysMs.length !== o.messages) notes.push(`${l.delaysMs.length} delivery log lines for ${o.messages} messages`);
      if (l.deferred + l.bounced > 0) notes.push(`${l.deferred} deferred, ${l.bounced} bounced`);
      const w = l.slowest;
      if (w !== null && Number(w['delay_ms']) > 1000) {
        notes.push(`slowest ${String(w['queue_id'])}: queued ${String(w['queued_at'])}, delivered ${String(w['time'])}, attempt ${String(w['attempts'])}`);
      }
      if (o.keep) notes.push(`log kept: ${rg.logFile}`);
      return summarise(e2eMs, acceptMs, l.delaysMs, notes);
    } finally {
      await rg.stop();
    }
  };

  const drainPostfix = (): Promise<void> =>
    waitFor('Postfix queue drained', () => postfixBacklog(pf) === 0, 120_000, () => `${postfixBacklog(pf)} files left`);

  const runPostfix = async (): Promise<RunResult> => {
    await drainPostfix();
    const explain = (): string => `Postfix backlog ${postfixBacklog(pf)} files`;
    if (o.warmup > 0) {
      await timed(pf.port, o.warmup, explain);
      await drainPostfix();
    }
    await sleep(500); // let postlogd write the warm-up's lines before taking the offset
    const offset = logSize(pf.logFile);
    const { e2eMs, acceptMs } = await timed(pf.port, o.messages, explain);
    await drainPostfix();
    let d = postfixDelays(pf, offset);
    for (let i = 0; i < 40 && d.delaysMs.length < o.messages; i++) { await sleep(100); d = postfixDelays(pf, offset); }
    const notes: string[] = [];
    if (d.delaysMs.length !== o.messages) notes.push(`${d.delaysMs.length} status=sent lines for ${o.messages} messages`);
    if (d.deferred + d.bounced > 0) notes.push(`${d.deferred} deferred, ${d.bounced} bounced`);
    return summarise(e2eMs, acceptMs, d.delaysMs, notes);
  };

  const results: Record<Server, RunResult[]> = { relayguard: [], postfix: [] };
  for (let round = 1; round <= o.rounds; round++) {
    const order: Server[] = round % 2 === 1 ? ['relayguard', 'postfix'] : ['postfix', 'relayguard'];
    for (const server of order) {
      const r = server === 'relayguard' ? await runRelayguard() : await runPostfix();
      results[server].push(r);
      console.log(`round ${round}/${o.rounds}  ${server.padEnd(10)}  end to end ${fmt(r.e2e).padStart(6)} msg/s  (accept ${fmt(r.accept).padStart(6)} msg/s, ` +
        `queue drained ${fmt(r.drainS, 1)} s after the last 250)  250->delivered p50 ${fmt(r.p50)} ms, p99 ${fmt(r.p99)} ms, max ${fmt(r.max)} ms` +
        `${r.notes.length > 0 ? `  [${r.notes.join('; ')}]` : ''}`);
    }
  }

  console.log('');
  console.log(`end to end (median of ${o.rounds}; ${fmt(o.messages)} x ${o.size}-byte messages per run, ${o.sessions} sessions${o.reuse ? ', -d' : ''})`);
  const rows: string[][] = [['server', 'e2e msg/s', 'accept msg/s', 'drain s', 'p50 ms', 'p99 ms', 'e2e runs']];
  for (const s of ['relayguard', 'postfix'] as const) {
    const rs = results[s];
    rows.push([
      s, fmt(median(rs.map((r) => r.e2e))), fmt(median(rs.map((r) => r.accept))), fmt(median(rs.map((r) => r.drainS)), 1),
      fmt(median(rs.map((r) => r.p50))), fmt(median(rs.map((r) => r.p99))), rs.map((r) => fmt(r.e2e)).join(' / '),
    ]);
  }
  printTable(rows, 1);
  const ratio = median(results.relayguard.map((r) => r.e2e)) / median(results.postfix.map((r) => r.e2e));
  console.log('');
  console.log(`relayguard/Postfix end to end: ${fmt(ratio, 2)} (goal >= ${GOAL_RATIO}): ${ratio >= GOAL_RATIO ? 'PASS' : 'MISS'}`);
  console.log(`p99 250 -> delivered: relayguard ${fmt(median(results.relayguard.map((r) => r.p99)))} ms, Postfix ${fmt(median(results.postfix.map((r) => r.p99)))} ms (medians of the per-run p99)`);
  console.log('(goals are informational; on this 2-vCPU box spread between runs is 10-25 %, differences under ~20 % are noise)');
  console.log(`load average after the timed runs: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  if (profileDir !== null) printProfile(profileDir);
}

function printProfile(dir: string): void {
  const s = summariseProfiles(dir);
  console.log('');
  if (s === null) { console.log(`profile: no .cpuprofile written in ${dir}`); return; }
  const busy = s.totalMs - s.idleMs;
  const pct = (ms: number): string => `${fmt((100 * ms) / busy, 1).padStart(5)} %`;
  console.log(`relayguard CPU profile (${dir}): ${fmt(busy)} ms busy of ${fmt(s.totalMs)} ms sampled (includes start-up)`);
  console.log('  self time by source:');
  for (const e of s.sources) console.log(`    ${pct(e.ms)}  ${e.name}`);
  console.log('  self time, top functions:');
  for (const e of s.functions) console.log(`    ${pct(e.ms)}  ${e.name}`);
  console.log('  inclusive time (frame and everything it called), top frames:');
  for (const e of s.inclusive) console.log(`    ${pct(e.ms)}  ${e.name}`);
}

try {
  await main();
} catch (err) {
  console.error(`bench:relay failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
