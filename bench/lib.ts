/**
 * Helpers for bench/accept.ts: options, a quiet `relayguard serve` child (log level warn, readiness by greeting),
 * /proc readings, an idle-connection client child, cleanup on signals, and a .cpuprofile summary.
 *
 * Everything talks to 127.0.0.1 only. Run as a script (`node bench/lib.ts idle-client PORT COUNT ADDRS`) it is
 * the idle-connection client that accept.ts starts under prlimit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { freePort } from '../src/testing/ports.ts';
import { CLI, NODE } from '../src/testing/serve-process.ts';
import type { PostfixInstance } from '../src/testing/postfix.ts';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------------------
// Options

export interface BenchOptions {
  /** Messages per timed smtp-source run (-m). */
  messages: number;
  /** Rounds; each round runs both servers in both modes, interleaved. */
  rounds: number;
  /** Parallel smtp-source sessions (-s). */
  sessions: number;
  /** Body bytes per message (-l). */
  size: number;
  /** Untimed messages sent to each freshly started server before a timed run (JIT and cache warm-up). */
  warmup: number;
  /** Idle connections for the memory figure (0 skips it). */
  idle: number;
  /** Write relayguard CPU profiles of the timed runs here and summarise them (null: no profiling). */
  profileDir: string | null;
  /** Another relayguard tree (for example `git archive` of the last commit) run as a fourth server, for a before/after. */
  baseline: string | null;
  quick: boolean;
}

const USAGE = `usage: node bench/accept.ts [--messages=N] [--rounds=N] [--sessions=N] [--size=BYTES] [--warmup=N] [--idle=N] [--profile[=DIR]] [--baseline=DIR] [--quick]
env: BENCH_MESSAGES BENCH_ROUNDS BENCH_SESSIONS BENCH_SIZE BENCH_WARMUP BENCH_IDLE BENCH_PROFILE(=1|DIR) BENCH_BASELINE=DIR BENCH_QUICK=1
--baseline=DIR: also run DIR/bin/relayguard.js (another tree of relayguard, e.g. git archive HEAD | tar -x -C DIR, with a
                node_modules) as a fourth server in the same interleaved rounds: before/after under the same load
defaults: 5000 messages x 3 rounds, 20 sessions, 5120-byte bodies, 500 warm-up, 10000 idle connections
quick:    1000 messages x 1 round, 200 warm-up (idle stays 10000 unless set)`;

/** Options from --key=value arguments, then BENCH_* environment variables, then defaults. */
export function benchOptions(argv: readonly string[], env: NodeJS.ProcessEnv): BenchOptions {
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
  const known = new Set(['messages', 'rounds', 'sessions', 'size', 'warmup', 'idle', 'profile', 'baseline', 'quick']);
  for (const k of args.keys()) if (!known.has(k)) throw new Error(`unknown option --${k}\n${USAGE}`);
  const raw = (k: string): string | undefined => args.get(k) ?? env[`BENCH_${k.toUpperCase()}`];
  const quick = ['1', 'true', 'yes'].includes((raw('quick') ?? '').toLowerCase());
  const int = (k: string, dflt: number, min: number): number => {
    const v = raw(k);
    if (v === undefined || v === '') return dflt;
    if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`--${k} / BENCH_${k.toUpperCase()} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const profile = raw('profile');
  return {
    quick,
    messages: int('messages', quick ? 1000 : 5000, 1),
    rounds: int('rounds', quick ? 1 : 3, 1),
    sessions: int('sessions', 20, 1),
    size: int('size', 5120, 0),
    warmup: int('warmup', quick ? 200 : 500, 0),
    idle: int('idle', 10_000, 0),
    profileDir: profile === undefined || profile === '' || profile === '0' ? null : profile === '1' ? '' : profile,
    baseline: baselineDir(raw('baseline')),
  };
}

function baselineDir(v: string | undefined): string | null {
  if (v === undefined || v === '' || v === '0') return null;
  if (!existsSync(join(v, 'bin', 'relayguard.js'))) throw new Error(`--baseline / BENCH_BASELINE: no bin/relayguard.js in ${JSON.stringify(v)}`);
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Small utilities

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A field of /proc/PID/status in kB (VmRSS, VmHWM, RssAnon, ...), or null. */
export function procStatusKb(pid: number, field: string): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The hard RLIMIT_NOFILE of this process (what a child may be raised to without CAP_SYS_RESOURCE). */
export function hardNofile(): number {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
  if (!m) return 1024;
  return m[2] === 'unlimited' ? 1_048_576 : Number(m[2]);
}

/** `prlimit --nofile=N:N --` for a child, N = min(65536, our hard limit): raising above the hard limit needs privileges. */
export function nofileWrap(): { wrap: string[]; limit: number } {
  const limit = Math.min(65_536, hardNofile());
  return { wrap: ['prlimit', `--nofile=${limit}:${limit}`, '--'], limit };
}

/**
 * A warning when `dir` is on ext4 without a journal: there, every file creation skips the inodes deleted in the
 * last 60-360 s (ext4 recently_deleted), so queues that create and delete a file per message (Postfix, relayguard)
 * slow down after file churn by anyone on the box. Null when that does not apply.
 */
export function filesystemNote(dir: string): string | null {
  let best: { mount: string; source: string; type: string } | null = null;
  try {
    for (const line of readFileSync('/proc/self/mounts', 'latin1').split('\n')) {
      const [source, mount, type] = line.split(' ');
      if (!source || !mount || !type) continue;
      if ((dir === mount || dir.startsWith(mount.endsWith('/') ? mount : `${mount}/`)) && (best === null || mount.length > best.mount.length)) {
        best = { mount, source, type };
      }
    }
  } catch {
    return null;
  }
  if (best === null || best.type !== 'ext4') return null;
  const dev = basename(best.source);
  if (existsSync(`/proc/fs/jbd2/${dev}-8`)) return null;
  return `${dir} is on ext4 without a journal (${best.source}): each file creation skips inodes deleted in the last 60-360 s ` +
    '(ext4 recently_deleted), so both servers\' create-a-file-per-message paths get slower after file churn; expect large run-to-run spread';
}

/** Messages in a relayguard queue (rows of `messages` in queue.db, read-only); 0 when there is no index yet. */
export function queueCount(dataDir: string): number {
  const path = join(dataDir, 'queue.db');
  if (!existsSync(path)) return 0;
  const db = new DatabaseSync(path, { readOnly: true, timeout: 5000 });
  try {
    return Number((db.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n);
  } finally {
    db.close();
  }
}

export function countFiles(dir: string): number {
  try {
    return readdirSync(dir).length;
  } catch {
    return 0;
  }
}

/** Reads the first line from 127.0.0.1:port, then QUITs. Null on any failure. */
function greeting(port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (v: string | null): void => {
      clearTimeout(t);
      s.removeAllListeners('data');
      if (v !== null) s.end('QUIT\r\n'); else s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(null), timeoutMs);
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\r\n');
      if (i >= 0) done(buf.slice(0, i));
    });
    s.on('error', () => done(null));
    s.on('close', () => done(null));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Cleanup: every process the bench starts is registered here and stopped on normal exit, error or signal.

const cleanups = new Set<() => Promise<void>>();

export function onCleanup(fn: () => Promise<void>): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

export async function cleanupAll(): Promise<void> {
  const fns = [...cleanups].reverse();
  cleanups.clear();
  for (const fn of fns) await fn().catch((err: unknown) => console.error('cleanup:', err));
}

let signalled = false;
export function installSignalHandlers(): void {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (signalled) return;
      signalled = true;
      console.error(`\n${sig}: stopping every process started by the bench ...`);
      void cleanupAll().finally(() => process.exit(130));
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// relayguard serve, quiet

export interface Relayguard {
  readonly pid: number;
  readonly port: number;
  readonly dataDir: string;
  readonly child: ChildProcess;
  /** Messages in the queue (commit records in the index; small bodies are stored inline, not as spool files). */
  spoolCount(): number;
  stderr(): string;
  /** SIGTERM, wait (SIGKILL after graceMs), remove the data dir (unless told not to). Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

export interface RelayguardOptions {
  /** relayguard.yaml keys merged over the generated ones (hostname, dataDir, localDomains, listeners, log). */
  config?: Record<string, unknown>;
  /** Prefix of the command (prlimit ...). */
  wrap?: string[];
  /** Extra node flags (--cpu-prof ...). */
  nodeArgs?: string[];
  /** Extra environment variables of the serve process (bench/soak.ts's probe file). */
  env?: Record<string, string>;
  /** Copy this tls/ directory (cert.pem + key.pem) into the new data dir, to skip key generation at start. */
  tlsDir?: string;
  /** Create the data dir under this directory (default: the system temp dir). */
  parentDir?: string;
  /** Remove the data dir in stop() (default true). Keeping it defers the unlink churn to the caller. */
  removeDataDir?: boolean;
  /** Extra `serve` arguments (bench/cluster.ts: --pid-file, written once every worker serves). */
  args?: string[];
  /** The relayguard tree to run (its bin/relayguard.js); default: this one. */
  tree?: string;
  /**
   * The port probed for the 220 greeting (and reported as `port`); default a free one, used by the generated mx
   * listener. bench/cluster.ts passes the port of a plain listener of its own next to its PROXY-protocol ones.
   */
  port?: number;
}

const live = new Set<ChildProcess>();
process.once('exit', () => { for (const c of live) c.kill('SIGKILL'); });

/**
 * Starts `relayguard serve` with one mx listener on a free 127.0.0.1 port, a fresh data dir and log level warn.
 * Readiness is the 220 greeting (the 'listening' line is info, below the level).
 */
export async function startRelayguard(options: RelayguardOptions = {}): Promise<Relayguard> {
  const dataDir = await mkdtemp(join(options.parentDir ?? tmpdir(), 'relayguard-bench-'));
  if (options.tlsDir !== undefined && existsSync(options.tlsDir)) cpSync(options.tlsDir, join(dataDir, 'tls'), { recursive: true });
  const port = options.port ?? (await freePort());
  // smtp-source sends to a different local part per message: like the Postfix peer's relay_domains, every address
  // of peers.test exists here, through a catch-all alias to the postmaster mailbox (a config, not a special wiring).
  const aliasFile = join(dataDir, 'aliases');
  await writeFile(aliasFile, '@peers.test  postmaster@peers.test\n');
  const config = {
    hostname: 'mx.peers.test',
    dataDir,
    localDomains: ['peers.test'],
    recipients: { aliasFiles: [aliasFile] },
    listeners: [{ name: 'mx', role: 'mx', address: '127.0.0.1', port, tls: 'starttls' }],
    log: { level: 'warn' },
    // Only the SMTP listener: a default DNSBL (5353) or web port would clash with any other relayguard on the box.
    web: { enabled: false },
    dnsbl: { enabled: false },
    // Like the Postfix peer (relay_transport = discard:): the runner delivers accepted mail to a discard transport.
    delivery: { localTransport: { discard: true } },
    ...options.config,
  };
  const configFile = join(dataDir, 'relayguard.yaml');
  await writeFile(configFile, stringify(config));
  const cli = options.tree === undefined ? CLI : join(options.tree, 'bin', 'relayguard.js');
  const argv = [...(options.wrap ?? []), NODE, ...(options.nodeArgs ?? []), cli, 'serve', '--config', configFile, ...(options.args ?? [])];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  live.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 65_536) stderr += d; });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 65_536) stderr += d; }); // warn+ lines
  const exited = new Promise<void>((r) => child.once('exit', () => { live.delete(child); r(); }));
  let stopped = false;
  const stop = async (graceMs = 15_000): Promise<void> => {
    if (stopped) return;
    stopped = true;
    unregister();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
    }
    if (options.removeDataDir !== false) await rm(dataDir, { recursive: true, force: true });
  };
  const unregister = onCleanup(() => stop(3000));
  const rg: Relayguard = {
    get pid() { return child.pid!; },
    port,
    dataDir,
    child,
    spoolCount: () => queueCount(dataDir),
    stderr: () => stderr,
    stop,
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      throw new Error(`relayguard serve exited (${child.exitCode ?? child.signalCode}) before answering:\n${stderr}`);
    }
    const g = await greeting(port, 1000);
    if (g !== null) {
      if (/^220 /.test(g)) return rg;
      await stop();
      throw new Error(`relayguard port ${port} answered ${JSON.stringify(g)}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`relayguard serve did not greet within 30 s:\n${stderr}`);
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Idle connections

export interface IdleClient {
  readonly pid: number;
  readonly opened: number;
  readonly failed: number;
  readonly firstError: string | null;
  readonly openMs: number;
  /** How many of the connections are still open (asks the child). */
  openNow(): Promise<number>;
  stop(): Promise<void>;
}

const SELF = fileURLToPath(import.meta.url);

/**
 * Starts a child (under `wrap`, e.g. prlimit) that opens `count` TCP connections to 127.0.0.1:port from the given
 * 127.0.0.x source addresses, reads each 220 greeting and then stays silent. Resolves when all are open or failed.
 */
export async function openIdleConnections(port: number, count: number, sources: readonly string[], wrap: readonly string[]): Promise<IdleClient> {
  const argv = [...wrap, NODE, SELF, 'idle-client', String(port), String(count), sources.join(',')];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 65_536) stderr += d; });
  const exited = new Promise<void>((r) => child.once('exit', () => { live.delete(child); r(); }));
  const lines = createInterface({ input: child.stdout! });
  const pending: ((line: string) => void)[] = [];
  lines.on('line', (l) => pending.shift()?.(l));
  const nextLine = (timeoutMs: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`idle client: no answer within ${timeoutMs} ms\n${stderr}`)), timeoutMs);
      pending.push((l) => { clearTimeout(t); resolve(l); });
      void exited.then(() => { clearTimeout(t); reject(new Error(`idle client exited (${child.exitCode ?? child.signalCode}):\n${stderr}`)); });
    });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    unregister();
    child.stdin!.end();
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
  const unregister = onCleanup(stop);
  try {
    const report = JSON.parse(await nextLine(300_000)) as { opened: number; failed: number; firstError: string | null; openMs: number };
    return {
      pid: child.pid!,
      ...report,
      async openNow() {
        child.stdin!.write('count\n');
        return (JSON.parse(await nextLine(10_000)) as { open: number }).open;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The idle client child: opens the connections, reports, answers "count" on stdin, closes everything at EOF. */
async function idleClientMain(args: string[]): Promise<void> {
  const port = Number(args[0]);
  const count = Number(args[1]);
  const sources = (args[2] ?? '127.0.0.1').split(',');
  if (!(port > 0) || !(count > 0) || !sources.every((s) => /^127\.\d+\.\d+\.\d+$/.test(s))) throw new Error('idle-client PORT COUNT 127.x.y.z[,...]');
  const sockets = new Set<Socket>();
  let opened = 0;
  let failed = 0;
  let firstError: string | null = null;
  const started = performance.now();
  const openOne = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const s = connect({ host: '127.0.0.1', port, localAddress: sources[i % sources.length]! });
      let buf = '';
      let settled = false;
      const settle = (ok: boolean, why?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(t);
        if (ok) {
          opened++;
          sockets.add(s);
          s.removeAllListeners('data');
          s.on('data', () => {}); // stay silent; swallow a late 421
        } else {
          failed++;
          firstError ??= why ?? 'failed';
          s.destroy();
        }
        resolve();
      };
      const t = setTimeout(() => settle(false, 'no greeting within 30 s'), 30_000);
      s.setEncoding('latin1');
      s.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\r\n');
        if (nl >= 0) settle(buf.startsWith('220 '), `greeting ${JSON.stringify(buf.slice(0, nl))}`);
      });
      s.on('error', (e) => settle(false, String(e)));
      s.on('close', () => { sockets.delete(s); settle(false, 'closed before the greeting'); });
    });
  // A bounded number of handshakes in flight, so the listen backlog never overflows.
  let next = 0;
  const worker = async (): Promise<void> => { while (next < count) await openOne(next++); };
  await Promise.all(Array.from({ length: Math.min(200, count) }, worker));
  process.stdout.write(`${JSON.stringify({ opened, failed, firstError, openMs: Math.round(performance.now() - started) })}\n`);
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (l) => { if (l.trim() === 'count') process.stdout.write(`${JSON.stringify({ open: sockets.size })}\n`); });
  rl.on('close', () => {
    for (const s of sockets) s.destroy();
    process.exit(0);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// CPU profile summary

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  /** Self time by function, descending. */
  functions: { name: string; ms: number }[];
  /** Self time by source (file or package), descending. */
  sources: { name: string; ms: number }[];
  /** Inclusive time of selected frames (whole subtree), descending. */
  inclusive: { name: string; ms: number }[];
}

function sourceOf(url: string): string {
  if (url === '') return '(native/VM)';
  if (url.startsWith('node:')) return url;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `npm:${nm[1]}`;
  const src = /\/(src|bin|bench)\/(.*)$/.exec(url);
  return src ? `${src[1]}/${src[2]}` : basename(url);
}

/** Self and inclusive time per function over every .cpuprofile in `dir`. */
export function summariseProfiles(dir: string, top = 25): ProfileSummary | null {
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')) : [];
  if (files.length === 0) return null;
  const self = new Map<string, number>();
  const bySource = new Map<string, number>();
  const incl = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const f of files) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const label = (n: ProfileNode): string => {
      const cf = n.callFrame;
      const name = cf.functionName === '' ? '(anonymous)' : cf.functionName;
      return cf.url === '' ? name : `${name}  ${sourceOf(cf.url)}:${cf.lineNumber + 1}`;
    };
    const nodeUs = new Map<number, number>();
    for (let i = 0; i < p.samples.length; i++) {
      const us = p.timeDeltas[i + 1] ?? 0; // the delta after a sample is the time it stood for
      nodeUs.set(p.samples[i]!, (nodeUs.get(p.samples[i]!) ?? 0) + us);
    }
    for (const [id, us] of nodeUs) {
      const n = byId.get(id)!;
      totalUs += us;
      const fn = n.callFrame.functionName;
      if (fn === '(idle)') {
        idleUs += us;
        continue;
      }
      self.set(label(n), (self.get(label(n)) ?? 0) + us);
      const src = fn.startsWith('(') && n.callFrame.url === '' ? fn : sourceOf(n.callFrame.url);
      bySource.set(src, (bySource.get(src) ?? 0) + us);
      // Inclusive: charge every distinct ancestor frame once.
      const seen = new Set<string>();
      for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
        const l = label(byId.get(cur)!);
        if (seen.has(l)) continue;
        seen.add(l);
        incl.set(l, (incl.get(l) ?? 0) + us);
      }
    }
  }
  const sorted = (m: Map<string, number>, n: number): { name: string; ms: number }[] =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, us]) => ({ name, ms: us / 1000 }));
  const inclusive = sorted(incl, 400).filter((e) => !e.name.startsWith('(root)') && !e.name.startsWith('(program)'));
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, functions: sorted(self, top), sources: sorted(bySource, 20), inclusive: inclusive.slice(0, 40) };
}

// ---------------------------------------------------------------------------------------------------------------

if (import.meta.main && process.argv[2] === 'idle-client') {
  idleClientMain(process.argv.slice(3)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}

/** Files still in Postfix's incoming/active/maildrop/deferred queues. */
export function postfixBacklog(pf: PostfixInstance): number {
  let n = 0;
  const walk = (d: string): void => {
    let entries: string[];
    try { entries = readdirSync(d); } catch { return; }
    for (const e of entries) {
      const p = join(d, e);
      try { if (statSync(p).isDirectory()) walk(p); else n++; } catch { /* moved on */ }
    }
  };
  for (const q of ['maildrop', 'incoming', 'active', 'deferred']) walk(join(pf.queueDir, q));
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// Postfix's smtp-sink: the protocol ceiling (no queue, no fsync), see /work/shared/peers.md section 2

export const SMTP_SINK = '/usr/sbin/smtp-sink';

export interface SmtpSink {
  readonly pid: number;
  readonly port: number;
  stop(): Promise<void>;
}

/**
 * Starts `smtp-sink -u nobody 127.0.0.1:PORT 1024` (backlog 1024 as in peers.md): it accepts every command and
 * throws the mail away. Readiness is its 220 greeting.
 */
export async function startSmtpSink(): Promise<SmtpSink> {
  const port = await freePort();
  const child: ChildProcess = spawn(SMTP_SINK, ['-u', 'nobody', `127.0.0.1:${port}`, '1024'], { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 8192) stderr += d; });
  const exited = new Promise<void>((r) => child.once('exit', () => { live.delete(child); r(); }));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    unregister();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };
  const unregister = onCleanup(stop);
  const deadline = Date.now() + 5000;
  for (;;) {
    const g = await greeting(port, 1000);
    if (g !== null && /^220[ -]/.test(g)) return { pid: child.pid!, port, stop };
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`smtp-sink did not greet on 127.0.0.1:${port}: ${g === null ? '' : JSON.stringify(g)} ${stderr}`);
    }
    await sleep(50);
  }
}
