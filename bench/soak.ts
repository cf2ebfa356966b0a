/**
 * `npm run bench:soak` (node bench/soak.ts): does memory stay flat over a long run? Three processes under load,
 * each started with `--expose-gc --import bench/soak-probe.ts`: at every sample the bench sends SIGUSR2, the probe
 * runs a full GC and reports the live heap (heapUsed after GC) and RSS. One fresh process per run.
 *
 *  1. smtp: `relayguard serve` (bench/lib.ts startRelayguard: one mx listener, catch-all alias for peers.test,
 *     delivery.localTransport {discard: true}). Postfix's smtp-source sends MESSAGES messages (-s 20 -l 5120) in
 *     chunks of INTERVAL, twice: one connection per message, then with -d (20 reused connections), each in its own
 *     serve process. After each chunk the bench waits until the queue is empty (every message accepted, committed,
 *     delivered to the discard transport and removed), then samples. Goal (issue 9, "No leak"): live heap and RSS
 *     grow less than 5 MB per 100,000 messages after the first WARMUP (20,000) messages, as least-squares slopes
 *     over the samples after the warm-up. A live-heap MISS makes the exit code 1 (not in quick mode: too few
 *     samples); RSS is printed PASS/MISS but does not change the exit code: with Node's default flags V8 grows its
 *     young generation under load to 2 x 64 MB semi-spaces and keeps freed pages pooled, so RSS creeps by steps with
 *     a flat live heap (column "young gen.": resident/committed MB after the GC). Measured here: with
 *     --nodeargs=--max-semi-space-size=16 RSS stayed flat within 1 MB from 100,000 to 400,000 messages with reuse,
 *     at the same msg/s; without it, it rose 20-60 MB over the same run. --nodeargs passes V8/Node flags to every
 *     process under test (serve and scan) to try such settings.
 *  2. dns: `relayguard serve` with the ORDB on (UDP+TCP on a free port, 2,000 listings written to its store while
 *     it runs, as `dnsbl add` does). dnsperf sends QUERIES UDP queries in chunks, every chunk with fresh random
 *     names (listed and unlisted A and TXT, IPv6, apex SOA/NS, out of zone), so a per-name cache that is never
 *     pruned shows; then --tcp queries over TCP, one connection each (the per-connection state). Skipped
 *     without dnsperf (Debian package dnsperf).
 *  3. scan: `relayguard scan` of TARGETS loopback addresses (127.0.2.x, 127.0.3.x, ...): three in four run
 *     relayguard's SMTP engine with a closed-relay handler (bench/tester.ts scan-targets), one in four has
 *     nothing listening; full battery over plain + STARTTLS, concurrency 20, no rate limit. Samples every
 *     TARGETS/10 targets done (counted in the scan's JSON lines output).
 *
 * There is no reference server for a heap slope (Postfix's processes are recycled, its memory says nothing about
 * relayguard's), so the goal is absolute; the line "idle" (10 s after the last chunk, no traffic) shows what the
 * process keeps and the noise of a single sample. dns and scan have no goal: their curves are printed, with the
 * slope per million queries and per 1,000 targets after their warm-up (the first tenth).
 *
 * Default run: about 11 minutes on 2 vCPU (measured with other work on the box): smtp 2 x 200,000 messages
 * (~8 min: ~5 one connection per message, ~3 with reuse), dns 1,000,000 UDP + 20,000 TCP queries (~1 min), scan
 * 2,000 targets (~1.5 min). Quick (--quick / BENCH_QUICK=1): 40,000 messages per mode, 200,000 UDP + 5,000 TCP
 * queries, 400 targets (~3 min).
 * Options (or BENCH_<NAME> variables): --messages=N --interval=N --warmup=N --sessions=N --size=BYTES
 * --queries=N --tcp=N --targets=N --only=smtp,dns,scan --nodeargs="--flag ..." --quick. Everything runs on 127.0.0.0/8; every process the
 * bench starts is stopped on exit, error or signal; data goes to a temp dir that is removed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import dnsPacket from 'dns-packet';
import { ListingStore } from '../src/dnsbl/index.ts';
import { freePort } from '../src/testing/ports.ts';
import { hasBinary, smtpSource } from '../src/testing/postfix.ts';
import { CLI, NODE } from '../src/testing/serve-process.ts';
import { cleanupAll, installSignalHandlers, onCleanup, procStatusKb, queueCount, sleep, startRelayguard, type Relayguard } from './lib.ts';

const ROOT = resolve(import.meta.dirname, '..');
const PROBE = join(ROOT, 'bench', 'soak-probe.ts');
const PROBE_ARGS = ['--expose-gc', '--import', PROBE];
const GOAL_MB_PER_100K = 5;
const FROM = 'sender@example.org';
const TO = 'user@peers.test';
const ZONE = 'soak.test';
const DNSPERF = '/usr/bin/dnsperf';
const OUTSIDE = '127.0.0.2';

// ---------------------------------------------------------------------------------------------------------------
// Options

type Section = 'smtp' | 'dns' | 'scan';
interface Options {
  quick: boolean;
  messages: number;
  interval: number;
  warmup: number;
  sessions: number;
  size: number;
  queries: number;
  tcp: number;
  targets: number;
  only: Set<Section>;
  /** Extra node flags for the processes under test (serve, scan), e.g. --max-semi-space-size=16. */
  nodeArgs: string[];
}

function options(argv: readonly string[], env: NodeJS.ProcessEnv): Options {
  const args = new Map<string, string>();
  for (const a of argv) {
    if (a === '--help' || a === '-h') {
      console.log('usage: node bench/soak.ts [--messages=N] [--interval=N] [--warmup=N] [--sessions=N] [--size=BYTES] [--queries=N] [--tcp=N] [--targets=N] [--only=smtp,dns,scan] [--nodeargs="--flag ..."] [--quick]\n(see the header of bench/soak.ts; BENCH_<NAME> variables work too, BENCH_QUICK=1)');
      process.exit(0);
    }
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(a);
    if (!m || !['messages', 'interval', 'warmup', 'sessions', 'size', 'queries', 'tcp', 'targets', 'only', 'nodeargs', 'quick'].includes(m[1]!)) {
      throw new Error(`unknown argument ${JSON.stringify(a)}; see the header of bench/soak.ts (--help)`);
    }
    args.set(m[1]!, m[2] ?? '1');
  }
  const raw = (k: string): string | undefined => args.get(k) ?? env[`BENCH_${k.toUpperCase()}`];
  const quick = ['1', 'true', 'yes'].includes((raw('quick') ?? '').toLowerCase());
  const int = (k: string, dflt: number, min: number): number => {
    const v = raw(k);
    if (v === undefined || v === '') return dflt;
    if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`--${k} / BENCH_${k.toUpperCase()} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const only = new Set<Section>();
  for (const s of (raw('only') ?? 'smtp,dns,scan').split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    if (s !== 'smtp' && s !== 'dns' && s !== 'scan') throw new Error(`--only takes smtp, dns and scan, got ${JSON.stringify(s)}`);
    only.add(s);
  }
  const o: Options = {
    quick,
    messages: int('messages', quick ? 40_000 : 200_000, 1),
    interval: int('interval', quick ? 5_000 : 10_000, 100),
    warmup: int('warmup', 20_000, 0),
    sessions: int('sessions', 20, 1),
    size: int('size', 5120, 0),
    queries: int('queries', quick ? 200_000 : 1_000_000, 1000),
    tcp: int('tcp', quick ? 5_000 : 20_000, 0),
    targets: int('targets', quick ? 400 : 2_000, 10),
    only,
    nodeArgs: (raw('nodeargs') ?? '').split(/\s+/).filter((x) => x !== ''),
  };
  if (!o.nodeArgs.every((x) => x.startsWith('--'))) throw new Error(`--nodeargs takes node flags (--name[=value], space-separated), got ${JSON.stringify(o.nodeArgs.join(' '))}`);
  if (o.warmup >= o.messages) throw new Error(`--warmup (${o.warmup}) must be below --messages (${o.messages})`);
  if (o.targets > 250 * 254) throw new Error('--targets: at most 63,500');
  return o;
}

// ---------------------------------------------------------------------------------------------------------------
// Samples

interface ProbeLine {
  t: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; rss: number;
  /** space name -> [committed, resident, used] bytes */
  spaces: Record<string, [number, number, number]>;
}
/** One reading: x (messages, queries, targets so far), MB figures after a full GC. */
interface Sample {
  x: number; heapMb: number; rssMb: number; externalMb: number; at: number;
  /** Resident and committed MB of V8's young generation (new_space) after the GC: it grows under allocation pressure. */
  youngMb: number; youngCommittedMb: number;
}

const MB = 1024 * 1024;
const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** Asks the probe in `pid` for one reading (SIGUSR2) and waits for its line in `file`. */
class Probe {
  readonly child: ChildProcess;
  readonly file: string;
  #lines = 0;
  constructor(child: ChildProcess, file: string) {
    this.child = child;
    this.file = file;
  }

  async read(x: number, timeoutMs = 60_000): Promise<Sample> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`probed process exited (${this.child.exitCode ?? this.child.signalCode})`);
    this.child.kill('SIGUSR2');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await sleep(20);
      const lines = existsSync(this.file) ? readFileSync(this.file, 'utf8').split('\n').filter((l) => l !== '') : [];
      if (lines.length > this.#lines) {
        this.#lines = lines.length;
        const p = JSON.parse(lines.at(-1)!) as ProbeLine;
        const young = p.spaces['new_space'] ?? [0, 0, 0];
        return { x, heapMb: p.heapUsed / MB, rssMb: p.rss / MB, externalMb: p.external / MB, at: p.t, youngMb: young[1] / MB, youngCommittedMb: young[0] / MB };
      }
      if (Date.now() > deadline) throw new Error(`no probe reading from pid ${this.child.pid} within ${timeoutMs} ms (started without ${PROBE_ARGS.join(' ')}?)`);
    }
  }
}

/** Least-squares slope of heap MB over x, for the samples with x >= from; null with fewer than 2 such samples. */
function slope(samples: readonly Sample[], from: number, key: 'heapMb' | 'rssMb' = 'heapMb'): number | null {
  const s = samples.filter((p) => p.x >= from);
  if (s.length < 2) return null;
  const mx = s.reduce((a, p) => a + p.x, 0) / s.length;
  const my = s.reduce((a, p) => a + p[key], 0) / s.length;
  let num = 0;
  let den = 0;
  for (const p of s) {
    num += (p.x - mx) * (p[key] - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? null : num / den;
}

function printSample(label: string, s: Sample, prev: Sample | null, extra = ''): void {
  const d = prev === null ? '' : `  (${s.heapMb - prev.heapMb >= 0 ? '+' : ''}${fmt(s.heapMb - prev.heapMb, 2)})`;
  console.log(`   ${label.padStart(12)}  heap ${fmt(s.heapMb, 2).padStart(7)} MB${d.padEnd(10)}  RSS ${fmt(s.rssMb, 1).padStart(6)} MB  ` +
    `(young gen. ${fmt(s.youngMb, 0).padStart(3)}/${fmt(s.youngCommittedMb, 0)})  external ${fmt(s.externalMb, 1).padStart(4)} MB${extra}`);
}

interface Curve { name: string; unit: string; per: number; samples: Sample[]; idle: Sample | null; warmup: number; seconds: number }

/** Slopes of the live heap and of RSS after the warm-up, per `c.per` units, and a line saying so. */
function describe(c: Curve): { heap: number | null; rss: number | null; text: string } {
  const per = (v: number | null): number | null => (v === null ? null : v * c.per);
  const heap = per(slope(c.samples, c.warmup));
  const rss = per(slope(c.samples, c.warmup, 'rssMb'));
  const after = c.samples.filter((p) => p.x >= c.warmup);
  const first = after[0];
  const last = after.at(-1);
  const signed = (v: number | null, digits: number): string => (v === null ? 'n/a' : `${v >= 0 ? '+' : ''}${fmt(v, digits)}`);
  const span = first && last && last !== first
    ? ` (at ${fmt(first.x)}: heap ${fmt(first.heapMb, 2)} MB, RSS ${fmt(first.rssMb, 1)} MB; at ${fmt(last.x)}: heap ${fmt(last.heapMb, 2)} MB, RSS ${fmt(last.rssMb, 1)} MB)`
    : '';
  const text = heap === null
    ? 'too few samples after the warm-up for a slope'
    : `per ${fmt(c.per)} ${c.unit} after the first ${fmt(c.warmup)}: live heap ${signed(heap, 2)} MB, RSS ${signed(rss, 1)} MB${span}`;
  return { heap, rss, text };
}

// ---------------------------------------------------------------------------------------------------------------
// 1. smtp

async function smtpSoak(o: Options, scratch: string, reuse: boolean): Promise<Curve> {
  const name = reuse ? 'smtp, 20 reused connections (-d)' : 'smtp, one connection per message';
  console.log(`\n== ${name}: ${fmt(o.messages)} messages, smtp-source -s ${o.sessions} -l ${o.size}${reuse ? ' -d' : ''}, sample every ${fmt(o.interval)} after the queue drained`);
  const probeFile = join(scratch, `probe-smtp-${reuse ? 'reuse' : 'newconn'}.jsonl`);
  const rg = await startRelayguard({ nodeArgs: [...PROBE_ARGS, ...o.nodeArgs], env: { SOAK_PROBE_FILE: probeFile }, parentDir: scratch });
  const t0 = performance.now();
  try {
    const probe = new Probe(rg.child, probeFile);
    const samples: Sample[] = [await probe.read(0)];
    printSample('0', samples[0]!, null);
    let sent = 0;
    while (sent < o.messages) {
      const n = Math.min(o.interval, o.messages - sent);
      const c0 = performance.now();
      await smtpSource({ port: rg.port, sessions: o.sessions, messages: n, size: o.size, reuse, from: FROM, to: TO, timeoutMs: 900_000 });
      const sendMs = performance.now() - c0;
      await drain(rg);
      sent += n;
      const s = await probe.read(sent);
      printSample(fmt(sent), s, samples.at(-1)!, `  ${fmt(n / (sendMs / 1000)).padStart(5)} msg/s accepted`);
      samples.push(s);
    }
    await sleep(10_000);
    const idle = await probe.read(sent);
    printSample('idle 10 s', idle, samples.at(-1)!, `  VmHWM ${fmt((procStatusKb(rg.pid, 'VmHWM') ?? 0) / 1024, 1)} MB`);
    return { name, unit: 'messages', per: 100_000, samples, idle, warmup: o.warmup, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await rg.stop();
  }
}

/** Waits until every accepted message was delivered (discarded) and removed from the queue. */
async function drain(rg: Relayguard, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = rg.spoolCount();
    if (left === 0) return;
    if (rg.child.exitCode !== null || rg.child.signalCode !== null) throw new Error(`relayguard serve exited:\n${rg.stderr()}`);
    if (Date.now() > deadline) throw new Error(`relayguard queue still holds ${left} messages after ${timeoutMs / 1000} s:\n${rg.stderr()}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 2. dns

/** A random public-looking IPv4 address in 11.0.0.0/8 (never contacted: only names in queries). */
const randomV4 = (): string => `11.${(Math.random() * 256) | 0}.${(Math.random() * 256) | 0}.${(Math.random() * 256) | 0}`;
const reversed = (ip: string): string => ip.split('.').reverse().join('.');
/** The 32 reversed nibbles of a random IPv6 address (the RFC 5782 query name below the zone). */
const randomV6Name = (): string => Array.from({ length: 32 }, () => ((Math.random() * 16) | 0).toString(16)).join('.');

function queryLines(n: number, listed: readonly string[]): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = Math.random();
    if (r < 0.3) out.push(`${reversed(listed[(Math.random() * listed.length) | 0]!)}.${ZONE} A`);
    else if (r < 0.4) out.push(`${reversed(listed[(Math.random() * listed.length) | 0]!)}.${ZONE} TXT`);
    else if (r < 0.75) out.push(`${reversed(randomV4())}.${ZONE} A`);
    else if (r < 0.8) out.push(`${reversed(randomV4())}.${ZONE} TXT`);
    else if (r < 0.85) out.push(`${randomV6Name()}.${ZONE} A`);
    else if (r < 0.88) out.push(`${ZONE} SOA`);
    else if (r < 0.9) out.push(`${ZONE} NS`);
    else out.push(`${reversed(randomV4())}.other-${(Math.random() * 1e6) | 0}.example A`);
  }
  return `${out.join('\n')}\n`;
}

/** One UDP query; resolves with the rcode name, or null after timeoutMs. */
function udpQuery(port: number, name: string, type: 'A' | 'TXT' | 'SOA', timeoutMs = 1000): Promise<string | null> {
  return new Promise((res) => {
    const sock = createSocket('udp4');
    const t = setTimeout(() => { sock.close(); res(null); }, timeoutMs);
    sock.on('message', (msg) => {
      clearTimeout(t);
      sock.close();
      try { res((dnsPacket.decode(msg) as { rcode?: string }).rcode ?? 'NOERROR'); } catch { res('BAD'); }
    });
    sock.send(dnsPacket.encode({ type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] }), port, '127.0.0.1');
  });
}

/** One query over its own TCP connection; true when an answer came back. */
function tcpQuery(port: number, name: string, timeoutMs = 5000): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const done = (ok: boolean): void => { clearTimeout(t); s.destroy(); res(ok); };
    const t = setTimeout(() => done(false), timeoutMs);
    s.on('connect', () => s.write(dnsPacket.streamEncode({ type: 'query', id: 2, questions: [{ type: 'A', name, class: 'IN' }] })));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(true);
    });
    s.on('error', () => done(false));
    s.on('close', () => done(false));
  });
}

function dnsperf(port: number, file: string): Promise<{ completed: number; lost: number; qps: number }> {
  return new Promise((res, rej) => {
    const child = spawn(DNSPERF, ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-n', '1', '-c', '4', '-q', '200', '-t', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const unregister = onCleanup(async () => { child.kill('SIGKILL'); });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.on('error', rej);
    child.on('close', (code) => {
      unregister();
      const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? NaN);
      const completed = num(/Queries completed:\s+(\d+)/);
      if (code !== 0 || Number.isNaN(completed)) rej(new Error(`dnsperf exited ${code}:\n${out}`));
      else res({ completed, lost: num(/Queries lost:\s+(\d+)/), qps: num(/Queries per second:\s+([\d.]+)/) });
    });
  });
}

async function dnsSoak(o: Options, scratch: string): Promise<Curve[]> {
  console.log(`\n== dns: the ORDB in relayguard serve, ${fmt(o.queries)} UDP queries (dnsperf, fresh random names per chunk), then ${fmt(o.tcp)} TCP queries (one connection each)`);
  if (!hasBinary(DNSPERF)) {
    console.log(`   skipped: ${DNSPERF} not found (Debian package dnsperf)`);
    return [];
  }
  const probeFile = join(scratch, 'probe-dns.jsonl');
  let dnsPort = 0;
  let rg: Relayguard | null = null;
  for (let attempt = 0; rg === null; attempt++) {
    dnsPort = await freePort();
    try {
      rg = await startRelayguard({
        nodeArgs: [...PROBE_ARGS, ...o.nodeArgs], env: { SOAK_PROBE_FILE: probeFile }, parentDir: scratch,
        config: { dnsbl: { enabled: true, zone: ZONE, listen: { address: '127.0.0.1', port: dnsPort }, schedulerInterval: '0' } },
      });
    } catch (err) {
      if (attempt >= 2) throw err; // the UDP twin of a free TCP port was taken: try another
    }
  }
  const t0 = performance.now();
  const curves: Curve[] = [];
  try {
    // 2,000 listings written while serve runs (as `dnsbl add` does): 1,800 addresses, 200 /24 networks.
    const listed: string[] = [];
    const store = ListingStore.open(join(rg.dataDir, 'relayguard.db'));
    try {
      const inputs = [];
      for (let i = 0; i < 2000; i++) {
        const ip = randomV4();
        if (i < 200) {
          const net = `${ip.split('.').slice(0, 3).join('.')}.0/24`;
          inputs.push({ network: net, reason: 'soak test network' });
          listed.push(`${ip.split('.').slice(0, 3).join('.')}.${1 + ((Math.random() * 254) | 0)}`);
        } else {
          inputs.push({ network: ip, reason: 'soak test listing' });
          listed.push(ip);
        }
      }
      store.addMany(inputs);
    } finally {
      store.close();
    }
    const deadline = Date.now() + 30_000;
    while ((await udpQuery(dnsPort, `${reversed(listed[500]!)}.${ZONE}`, 'A')) !== 'NOERROR') {
      if (Date.now() > deadline) throw new Error(`the zone did not pick up the listings within 30 s:\n${rg.stderr()}`);
      await sleep(250);
    }

    const probe = new Probe(rg.child, probeFile);
    const chunk = Math.max(1000, Math.round(o.queries / 20));
    const udp: Sample[] = [await probe.read(0)];
    printSample('0', udp[0]!, null);
    let sent = 0;
    let lost = 0;
    const file = join(scratch, 'queries.txt');
    while (sent < o.queries) {
      const n = Math.min(chunk, o.queries - sent);
      writeFileSync(file, queryLines(n, listed));
      const r = await dnsperf(dnsPort, file);
      sent += n;
      lost += r.lost;
      const s = await probe.read(sent);
      printSample(fmt(sent), s, udp.at(-1)!, `  ${fmt(r.qps).padStart(6)} q/s, lost ${fmt(r.lost)}`);
      udp.push(s);
    }
    console.log(`   UDP: ${fmt(sent)} queries sent, ${fmt(lost)} lost (dnsperf -c 4 -q 200 -t 2)`);
    curves.push({ name: 'dns, UDP queries', unit: 'queries', per: 1_000_000, samples: udp, idle: null, warmup: Math.round(o.queries / 10), seconds: (performance.now() - t0) / 1000 });

    if (o.tcp > 0) {
      const t1 = performance.now();
      const tcpChunk = Math.max(100, Math.round(o.tcp / 10));
      const tcp: Sample[] = [await probe.read(0)];
      printSample('TCP 0', tcp[0]!, null);
      let done = 0;
      let failed = 0;
      while (done < o.tcp) {
        const n = Math.min(tcpChunk, o.tcp - done);
        let next = 0;
        const c0 = performance.now();
        const worker = async (): Promise<void> => {
          while (next < n) {
            next++;
            if (!(await tcpQuery(dnsPort, `${reversed(randomV4())}.${ZONE}`))) failed++;
          }
        };
        await Promise.all(Array.from({ length: 10 }, worker));
        done += n;
        const s = await probe.read(done);
        printSample(`TCP ${fmt(done)}`, s, tcp.at(-1)!, `  ${fmt(n / ((performance.now() - c0) / 1000)).padStart(6)} conn/s, failed ${fmt(failed)}`);
        tcp.push(s);
      }
      curves.push({ name: 'dns, TCP queries (one connection each)', unit: 'connections', per: 100_000, samples: tcp, idle: null, warmup: tcpChunk, seconds: (performance.now() - t1) / 1000 });
    }
    await sleep(10_000);
    const idle = await probe.read(o.queries);
    printSample('idle 10 s', idle, null, `  VmHWM ${fmt((procStatusKb(rg.pid, 'VmHWM') ?? 0) / 1024, 1)} MB`);
    curves[0] = { ...curves[0]!, idle };
    return curves;
  } finally {
    await rg.stop();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. scan

/** Counts the lines of type "target" a growing JSON-lines file holds, reading only what was appended. */
class LineCounter {
  #offset = 0;
  #rest = '';
  count = 0;
  readonly file: string;
  constructor(file: string) {
    this.file = file;
  }
  poll(): number {
    if (!existsSync(this.file)) return this.count;
    const size = statSync(this.file).size;
    if (size <= this.#offset) return this.count;
    const fd = openSync(this.file, 'r');
    try {
      const buf = Buffer.alloc(size - this.#offset);
      readSync(fd, buf, 0, buf.length, this.#offset);
      this.#offset = size;
      const text = this.#rest + buf.toString('utf8');
      const lines = text.split('\n');
      this.#rest = lines.pop() ?? '';
      for (const l of lines) if (l.startsWith('{"type":"target"')) this.count++;
    } finally {
      closeSync(fd);
    }
    return this.count;
  }
}

async function scanSoak(o: Options, scratch: string): Promise<Curve> {
  const addresses: string[] = [];
  for (let i = 0; addresses.length < o.targets; i++) addresses.push(`127.0.${2 + Math.floor(i / 254)}.${(i % 254) + 1}`);
  const listening = addresses.filter((_, i) => i % 4 !== 3);
  console.log(`\n== scan: relayguard scan of ${fmt(o.targets)} loopback addresses (${fmt(listening.length)} with a closed relay, the rest with nothing listening), full battery, plain + STARTTLS, concurrency 20`);
  const port = await freePort();
  const targets = spawn(NODE, [join(ROOT, 'bench', 'tester.ts'), 'scan-targets', String(port), ...listening], { stdio: ['ignore', 'pipe', 'pipe'] });
  let targetsErr = '';
  targets.stderr!.setEncoding('utf8').on('data', (d: string) => { if (targetsErr.length < 65_536) targetsErr += d; });
  const stopTargets = async (): Promise<void> => {
    if (targets.exitCode !== null || targets.signalCode !== null) return;
    targets.kill('SIGTERM');
    const t = setTimeout(() => targets.kill('SIGKILL'), 10_000);
    await new Promise((r) => targets.once('exit', r));
    clearTimeout(t);
  };
  const unregisterTargets = onCleanup(stopTargets);
  await new Promise<void>((res, rej) => {
    targets.stdout!.setEncoding('utf8').on('data', (d: string) => { if (d.includes('ready')) res(); });
    targets.once('exit', (code) => rej(new Error(`scan-targets exited with ${code}: ${targetsErr}`)));
  });

  const list = join(scratch, 'targets.txt');
  writeFileSync(list, `${addresses.join('\n')}\n`);
  const out = join(scratch, 'scan.jsonl');
  const probeFile = join(scratch, 'probe-scan.jsonl');
  const t0 = performance.now();
  const scan = spawn(NODE, [...PROBE_ARGS, ...o.nodeArgs, CLI, 'scan', '--input', list, '--allow', '127.0.0.0/8', '-p', `${port}:mx`, '--source-address', OUTSIDE,
    '-o', out, '--concurrency', '20', '--rate', '0', '--no-progress'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SOAK_PROBE_FILE: probeFile } });
  let scanErr = '';
  scan.stdout!.setEncoding('utf8').on('data', () => {});
  scan.stderr!.setEncoding('utf8').on('data', (d: string) => { if (scanErr.length < 65_536) scanErr += d; });
  const scanExit = new Promise<number | null>((r) => scan.once('exit', (code) => r(code)));
  const unregisterScan = onCleanup(async () => { if (scan.exitCode === null && scan.signalCode === null) { scan.kill('SIGKILL'); await scanExit; } });
  try {
    const probe = new Probe(scan, probeFile);
    const counter = new LineCounter(out);
    const step = Math.max(1, Math.round(o.targets / 10));
    // The first reading once the scan is under way (the probe's handler is installed by then).
    while (counter.poll() < 1 && scan.exitCode === null) await sleep(50);
    const samples: Sample[] = [];
    let next = counter.count;
    let lastAt = performance.now();
    while (scan.exitCode === null && scan.signalCode === null) {
      if (counter.poll() >= next && counter.count < o.targets) {
        const done = counter.count;
        let s: Sample;
        try { s = await probe.read(done); } catch (err) { if (scan.exitCode !== null) break; throw err; }
        const now = performance.now();
        printSample(`${fmt(done)} tgt`, s, samples.at(-1) ?? null, samples.length === 0 ? '' : `  ${fmt((done - samples.at(-1)!.x) / ((now - lastAt) / 1000), 1).padStart(5)} targets/s`);
        samples.push(s);
        lastAt = now;
        next = (Math.floor(done / step) + 1) * step;
      }
      await sleep(100);
    }
    const code = await scanExit;
    if (code !== 0 && code !== 1 && code !== 2) throw new Error(`scan exited ${code}:\n${scanErr}`);
    const summary = JSON.parse(readFileSync(out, 'utf8').trimEnd().split('\n').at(-1)!) as { tested: number; closed: number; noService: number; open: number; inconclusive: number; durationMs: number };
    console.log(`   ${fmt(summary.tested)} tested in ${fmt(summary.durationMs / 1000, 1)} s: ${summary.closed} closed, ${summary.noService} no service, ${summary.open} open, ${summary.inconclusive} inconclusive`);
    return { name: 'scan, loopback targets', unit: 'targets', per: 1000, samples, idle: null, warmup: Math.round(o.targets / 10), seconds: (performance.now() - t0) / 1000 };
  } finally {
    unregisterScan();
    if (scan.exitCode === null && scan.signalCode === null) { scan.kill('SIGKILL'); await scanExit; }
    unregisterTargets();
    await stopTargets();
  }
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = options(process.argv.slice(2), process.env);
  installSignalHandlers();
  if (o.only.has('smtp') && !hasBinary('/usr/sbin/smtp-source')) throw new Error('/usr/sbin/smtp-source not found: install the Debian postfix package');
  const cpu = cpus();
  console.log('relayguard soak benchmark (npm run bench:soak)');
  console.log(`host: ${cpu.length} vCPU ${cpu[0]?.model.trim() ?? '?'}, node ${process.version}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}${o.quick ? '  [QUICK]' : ''}`);
  console.log('each sample: SIGUSR2 -> bench/soak-probe.ts runs gc() twice and reports heapUsed (the live heap) and RSS of the process under load');
  if (o.nodeArgs.length > 0) console.log(`node flags of the processes under test: ${o.nodeArgs.join(' ')}`);
  const scratch = mkdtempSync(join(tmpdir(), 'relayguard-bench-soak-'));
  onCleanup(async () => rmSync(scratch, { recursive: true, force: true }));
  const started = performance.now();
  const curves: Curve[] = [];
  if (o.only.has('smtp')) {
    curves.push(await smtpSoak(o, scratch, false));
    curves.push(await smtpSoak(o, scratch, true));
  }
  if (o.only.has('dns')) curves.push(...await dnsSoak(o, scratch));
  if (o.only.has('scan')) curves.push(await scanSoak(o, scratch));

  console.log('\nsummary (least-squares slope of the samples after the warm-up)');
  let miss = false;
  for (const c of curves) {
    const d = describe(c);
    const idle = c.idle === null ? '' : `; idle 10 s after: heap ${fmt(c.idle.heapMb, 2)} MB, RSS ${fmt(c.idle.rssMb, 1)} MB`;
    console.log(` - ${c.name} (${fmt(c.seconds)} s): ${d.text}${idle}`);
    if (c.name.startsWith('smtp')) {
      const heapOk = d.heap !== null && d.heap < GOAL_MB_PER_100K;
      const rssOk = d.rss !== null && d.rss < GOAL_MB_PER_100K;
      if (!heapOk) miss = true;
      console.log(`     goal < ${GOAL_MB_PER_100K} MB per 100,000 messages: live heap ${heapOk ? 'PASS' : 'MISS'}, ` +
        `RSS ${rssOk ? 'PASS' : 'MISS (informational: see "young gen." and the header)'}`);
    }
  }
  console.log(`total ${fmt((performance.now() - started) / 1000)} s; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  if (miss && !o.quick) process.exitCode = 1;
  if (miss && o.quick) console.log('(quick run: a MISS is indicative only, the exit code stays 0)');
}

try {
  await main();
} catch (err) {
  console.error(`bench:soak failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
