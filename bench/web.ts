/**
 * `npm run bench:web`: what the web service costs the relay, and how fast its API answers.
 *
 *   (1) Intake with the web service on versus off, same run, same load as bench:accept (Postfix's smtp-source,
 *       20 sessions, 5,120-byte messages, with connection reuse and with a new connection per message; rounds
 *       interleave the two setups, the order alternating). "on": web enabled, so every relay decision is recorded
 *       (decision log, batched off the SMTP path), /metrics scraped every 5 s with a bearer token like Prometheus,
 *       and /api/overview polled every 15 s like an open dashboard. "off": web disabled (no decision log, no
 *       scrapes). The metrics' log tap runs in both (it is always on in serve). Goal: on/off >= 0.95.
 *   (2) API latency: p50/p99 of GET /api/queue (first page and a state filter) and GET /api/decisions (first page
 *       and a client filter) with QUEUED messages held in the queue (sent through SMTP with delivery off) and
 *       DECISIONS rows in the decision log (written to decisions.db before serve starts), from CONCURRENCY
 *       keep-alive HTTP clients (node:http) for the measuring window, while smtp-source traffic runs. Goal: p99
 *       < 50 ms.
 *   (3) The overview data endpoint at 50 requests/s: serve's CPU (utime + stime of the child from /proc) over a
 *       window without and with the requests; goal: the difference under 5 % of one core. A fresh serve has a
 *       short history, so the cost of answering from a full day's ring (1,440 points) is measured in-process too.
 *
 * A benchmark, not a test: it prints figures and PASS/MISS against the goals. Everything runs on 127.0.0.1.
 * BENCH_WEB_QUICK=1: a short run (smaller queue and decision log, shorter windows). Other knobs: BENCH_WEB_ROUNDS,
 * BENCH_WEB_MESSAGES, BENCH_WEB_QUEUED, BENCH_WEB_DECISIONS, BENCH_WEB_SECONDS, BENCH_WEB_CONCURRENCY.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasBinary, smtpSource } from '../src/testing/postfix.ts';
import { freePort } from '../src/testing/ports.ts';
import { CLI, NODE } from '../src/testing/serve-process.ts';
import { SqliteDecisionStore, sqliteDecisionsPath } from '../src/store/sqlite-decisions.ts';
import type { NewDecision } from '../src/policy/decisions.ts';
import { RelayMetrics } from '../src/web/metrics.ts';
import { OverviewSeries } from '../src/web/series.ts';
import { cleanupAll, installSignalHandlers, median, onCleanup, queueCount, sleep, startRelayguard, type Relayguard } from './lib.ts';
import { queueCounts } from '../src/queue/index.ts';

const GOAL_RATIO = 0.95;
const GOAL_P99_MS = 50;
const GOAL_CPU_SHARE = 0.05;
const FROM = 'sender@example.org';
const TO = 'user@peers.test';

const env = process.env;
const quick = ['1', 'true', 'yes'].includes((env['BENCH_WEB_QUICK'] ?? '').toLowerCase());
const int = (k: string, dflt: number): number => {
  const v = env[`BENCH_WEB_${k}`];
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new Error(`BENCH_WEB_${k} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
};
const O = {
  rounds: int('ROUNDS', quick ? 1 : 3),
  messages: int('MESSAGES', quick ? 1000 : 5000),
  warmup: int('WARMUP', quick ? 200 : 500),
  sessions: 20,
  size: 5120,
  queued: int('QUEUED', quick ? 10_000 : 100_000),
  decisions: int('DECISIONS', quick ? 100_000 : 1_000_000),
  seconds: int('SECONDS', quick ? 8 : 20),
  concurrency: int('CONCURRENCY', 8),
};

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

// --- helpers ------------------------------------------------------------------------------------------------------

function cli(configFile: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(NODE, [CLI, ...args, '--config', configFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`relayguard ${args.join(' ')}: ${code}: ${err}`))));
    c.stdin.end(input);
  });
}

/** An admin and an API token on a running serve (untimed). */
async function apiToken(rg: Relayguard): Promise<string> {
  const config = join(rg.dataDir, 'relayguard.yaml');
  await cli(config, ['admin', 'add', 'bench', '--password-stdin'], 'bench password long enough\n');
  return cli(config, ['admin', 'token', 'add', 'bench', '--admin', 'bench']);
}

/** A dashboard session as a browser gets it: the login form's CSRF cookie, then POST /login; returns the Cookie header. */
async function sessionCookie(port: number): Promise<string> {
  const call = (method: string, path: string, headers: Record<string, string>, body?: string) => new Promise<{ status: number; cookies: string[]; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => resolve({ status: res.statusCode!, cookies: [res.headers['set-cookie'] ?? []].flat(), body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
  const form = await call('GET', '/login', {});
  const csrf = /rg_login_csrf=([^;]+)/.exec(form.cookies.join('\n'))?.[1];
  if (csrf === undefined) throw new Error('no login CSRF cookie');
  const r = await call('POST', '/login', { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${csrf}` },
    new URLSearchParams({ name: 'bench', password: 'bench password long enough', _csrf: csrf }).toString());
  const session = /rg_session=([^;]+)/.exec(r.cookies.join('\n'))?.[1];
  if (r.status !== 303 || session === undefined) throw new Error(`login failed: ${r.status} ${r.body.slice(0, 200)}`);
  return `rg_session=${session}`;
}

/** Authorization: a bearer token (scripts, Prometheus) or the session cookie (the dashboard in a browser). */
type Credential = { readonly token: string } | { readonly cookie: string };

interface HttpClient {
  get(path: string): Promise<{ status: number; ms: number; bytes: number }>;
  close(): void;
}

function httpClient(port: number, credential: string | Credential, sockets: number): HttpClient {
  const agent = new Agent({ keepAlive: true, maxSockets: sockets });
  const c: Credential = typeof credential === 'string' ? { token: credential } : credential;
  const auth: Record<string, string> = 'token' in c ? { authorization: `Bearer ${c.token}` } : { cookie: c.cookie };
  return {
    get(path) {
      const t0 = performance.now();
      return new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, agent, headers: auth }, (res) => {
          let bytes = 0;
          res.on('data', (d: Buffer) => { bytes += d.length; });
          res.on('end', () => resolve({ status: res.statusCode!, ms: performance.now() - t0, bytes }));
        });
        req.on('error', reject);
        req.end();
      });
    },
    close() { agent.destroy(); },
  };
}

function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** utime + stime of a process, seconds (clock ticks are 100 Hz). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** CPU seconds of a process's main thread (the event loop: SMTP sessions, HTTP, the log tap). */
function mainThreadSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** smtp-source in a loop until stop() (background traffic). */
function backgroundMail(port: number, sessions = 10): { stop(): Promise<number> } {
  let stopping = false;
  let sent = 0;
  const loop = (async () => {
    while (!stopping) {
      await smtpSource({ port, sessions, messages: 500, size: 5120, reuse: true, from: FROM, to: TO });
      sent += 500;
    }
  })();
  return { async stop() { stopping = true; await loop; return sent; } };
}

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

// --- (1) intake, web on vs off -------------------------------------------------------------------------------------

async function intake(scratch: string, tlsCache: string): Promise<void> {
  console.log(`(1) intake: web on vs off, smtp-source -s ${O.sessions} -l ${O.size} -m ${fmt(O.messages)} (+${fmt(O.warmup)} warm-up), ${O.rounds} round(s)`);
  type Setup = 'off' | 'on';
  type Result = { rate: number; cpuUs: number; mainUs: number };
  const results: Record<'reuse' | 'newconn', Record<Setup, Result[]>> = { reuse: { off: [], on: [] }, newconn: { off: [], on: [] } };
  const run = async (setup: Setup, reuse: boolean): Promise<Result> => {
    const webPort = setup === 'on' ? await freePort() : 0;
    const rg = await startRelayguard({
      tlsDir: tlsCache, parentDir: scratch, removeDataDir: false,
      ...(setup === 'on' ? { config: { web: { enabled: true, address: '127.0.0.1', port: webPort } } } : {}),
    });
    let scraper: NodeJS.Timeout | null = null;
    let poller: NodeJS.Timeout | null = null;
    let client: HttpClient | null = null;
    try {
      if (setup === 'on') {
        client = httpClient(webPort, await apiToken(rg), 2);
        const c = client;
        const check = (p: Promise<{ status: number }>, what: string): void => {
          void p.then((r) => { if (r.status !== 200) console.log(`  note: ${what} answered ${r.status}`); }, (err) => console.log(`  note: ${what} failed: ${err}`));
        };
        check(c.get('/metrics'), '/metrics');
        scraper = setInterval(() => check(c.get('/metrics'), '/metrics'), 5000);
        poller = setInterval(() => check(c.get('/api/overview?minutes=60'), '/api/overview'), 15_000);
      }
      if (O.warmup > 0) await smtpSource({ port: rg.port, sessions: O.sessions, messages: O.warmup, size: O.size, reuse, from: FROM, to: TO });
      const cpu0 = cpuSeconds(rg.pid);
      const main0 = mainThreadSeconds(rg.pid);
      const { wallMs } = await smtpSource({ port: rg.port, sessions: O.sessions, messages: O.messages, size: O.size, reuse, from: FROM, to: TO });
      // serve's CPU per message over the timed load (all threads: the decision log's writer thread included).
      const cpuUs = ((cpuSeconds(rg.pid) - cpu0) * 1e6) / O.messages;
      const mainUs = ((mainThreadSeconds(rg.pid) - main0) * 1e6) / O.messages;
      if (setup === 'on') {
        // The decisions of the run reach the log (what "on" pays for): at least one per message.
        const d = await client!.get('/api/decisions?limit=1');
        if (d.status !== 200) console.log(`  note: /api/decisions answered ${d.status}`);
      }
      const deadline = Date.now() + 60_000;
      while (rg.spoolCount() > 0 && Date.now() < deadline) await sleep(100);
      return { rate: O.messages / (wallMs / 1000), cpuUs, mainUs };
    } finally {
      if (scraper) clearInterval(scraper);
      if (poller) clearInterval(poller);
      client?.close();
      await rg.stop();
    }
  };
  for (let round = 1; round <= O.rounds; round++) {
    for (const mode of ['reuse', 'newconn'] as const) {
      const order: Setup[] = round % 2 === 1 ? ['off', 'on'] : ['on', 'off'];
      for (const setup of order) {
        const r = await run(setup, mode === 'reuse');
        results[mode][setup].push(r);
        console.log(`  round ${round}/${O.rounds}  ${mode.padEnd(7)}  web ${setup.padEnd(3)}  ${fmt(r.rate).padStart(6)} msg/s  serve CPU ${fmt(r.cpuUs)} us/msg (event loop ${fmt(r.mainUs)})`);
      }
    }
  }
  const rows = [['mode', 'web off msg/s', 'web on msg/s', 'on/off', `goal >= ${GOAL_RATIO}`, 'on/off per round', 'CPU us/msg off', 'CPU us/msg on', 'CPU off/on', 'event loop us/msg off', 'on']];
  for (const mode of ['reuse', 'newconn'] as const) {
    const off = median(results[mode].off.map((r) => r.rate));
    const on = median(results[mode].on.map((r) => r.rate));
    const per = results[mode].on.map((r, i) => r.rate / results[mode].off[i]!.rate);
    const cpuOff = median(results[mode].off.map((r) => r.cpuUs));
    const cpuOn = median(results[mode].on.map((r) => r.cpuUs));
    rows.push([mode, fmt(off), fmt(on), fmt(on / off, 2), on / off >= GOAL_RATIO ? 'PASS' : 'MISS', per.map((x) => fmt(x, 2)).join(' / '),
      fmt(cpuOff), fmt(cpuOn), fmt(cpuOff / cpuOn, 2),
      fmt(median(results[mode].off.map((r) => r.mainUs))), fmt(median(results[mode].on.map((r) => r.mainUs)))]);
  }
  printTable(rows);
  console.log('  CPU off/on: the throughput the CPU cost alone allows (msg/s per core), on against off: less sensitive to other work on the box than msg/s;');
  console.log('  event loop: serve\'s main thread only (SMTP, HTTP, the log tap); the rest is libuv\'s pool, V8 and the decision log\'s writer thread');
  console.log('');
}

// --- (2) API latency with a large queue and decision log -------------------------------------------------------------

async function apiLatency(scratch: string, tlsCache: string): Promise<void> {
  console.log(`(2) API latency: ${fmt(O.queued)} messages queued, ${fmt(O.decisions)} decisions stored, ${O.concurrency} keep-alive clients for ${O.seconds} s per endpoint, smtp-source traffic running`);
  const webPort = await freePort();
  // The decision log, written directly (what a long-running node accumulates) into the data dir serve then opens.
  const dataDir = mkdtempSync(join(scratch, 'api-'));
  const t0 = performance.now();
  const store = new SqliteDecisionStore(sqliteDecisionsPath(dataDir));
  const now = Date.now();
  const BATCH = 10_000;
  for (let i = 0; i < O.decisions; i += BATCH) {
    const rows: NewDecision[] = [];
    for (let j = i; j < Math.min(O.decisions, i + BATCH); j++) {
      const reject = j % 5 === 0;
      rows.push({
        at: now - (O.decisions - j) * 100, node: 'bench', sessionId: `s${j >> 2}`, clientIp: `10.${(j >> 16) & 255}.${(j >> 8) & 255}.${j & 255}`,
        listener: 'mx', helo: `client${j % 1000}.example`, user: null, mailFrom: `sender${j % 5000}@example.org`, rcpt: `user${j % 20000}@peers.test`,
        action: reject ? 'reject' : 'local', rule: reject ? 'default-deny' : 'local-domain', reason: reject ? 'not a local domain' : 'local domain',
        reply: reject ? '554 5.7.1 Relay access denied' : null,
      });
    }
    await store.append(rows);
  }
  await store.close();
  console.log(`  decision log: ${fmt(O.decisions)} rows written in ${fmt((performance.now() - t0) / 1000, 1)} s`);
  // Delivery off: every message stays queued. The retention keeps every row (default: at most 1,000,000).
  const rg2 = await startRelayguard({
    tlsDir: tlsCache, parentDir: scratch, removeDataDir: false,
    config: { dataDir, web: { enabled: true, address: '127.0.0.1', port: webPort, decisionRetention: { maxRows: Math.max(1_000_000, O.decisions * 2) } }, delivery: { enabled: false } },
  });
  let bg: { stop(): Promise<number> } | null = null;
  const tokenClientToken = await apiToken(rg2);
  const tokenClient = httpClient(webPort, tokenClientToken, O.concurrency);
  // The dashboard's own views use the session cookie; scripts use a token (checked and stamped per request).
  const cookieClient = httpClient(webPort, { cookie: await sessionCookie(webPort) }, O.concurrency);
  try {
    const t1 = performance.now();
    await smtpSource({ port: rg2.port, sessions: 20, messages: O.queued, size: 512, reuse: true, from: FROM, to: TO });
    console.log(`  queue: ${fmt(O.queued)} messages sent in ${fmt((performance.now() - t1) / 1000, 1)} s (held: delivery off); queue holds ${fmt(queueCount(dataDir))}`);
    bg = backgroundMail(rg2.port);
    const cpu0 = cpuSeconds(rg2.pid);
    // The keyset cursor of the 1,000th queued message (what a client paging with `next` holds at that depth).
    const deep = await new Promise<string>((resolve, reject) => {
      request({ host: '127.0.0.1', port: webPort, path: '/api/queue?state=queued&limit=1000', headers: { authorization: `Bearer ${tokenClientToken}` } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
          const m = (JSON.parse(body) as { messages: { receivedAt: number; queueId: string }[] }).messages.at(-1);
          if (m) resolve(`${m.receivedAt}.${m.queueId}`); else reject(new Error('no queued message'));
        });
      }).on('error', reject).end();
    });
    const paths: [string, string, HttpClient][] = [
      ['GET /api/queue (limit 100)', '/api/queue?limit=100', cookieClient],
      ['  same, bearer token', '/api/queue?limit=100', tokenClient],
      ['GET /api/queue?state=queued&offset=1000', '/api/queue?state=queued&limit=100&offset=1000', cookieClient],
      ['  same depth, after=<next>', `/api/queue?state=queued&limit=100&after=${deep}`, cookieClient],
      ['GET /api/decisions (limit 100)', '/api/decisions?limit=100', cookieClient],
      ['  same, bearer token', '/api/decisions?limit=100', tokenClient],
      ['GET /api/decisions?client=<one>', '/api/decisions?client=10.0.1.44&limit=100', cookieClient],
      ['GET /api/decisions?action=reject', '/api/decisions?action=reject&limit=100', cookieClient],
    ];
    const rows = [['endpoint (session cookie unless said)', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'max ms', `p99 < ${GOAL_P99_MS} ms`, 'non-200']];
    for (const [label, path, client] of paths) {
      await client.get(path); // warm
      const lat: number[] = [];
      let bad = 0;
      const end = performance.now() + O.seconds * 1000;
      await Promise.all(Array.from({ length: O.concurrency }, async () => {
        while (performance.now() < end) {
          const r = await client.get(path);
          if (r.status !== 200) bad++;
          lat.push(r.ms);
        }
      }));
      const p99 = percentile(lat, 99);
      rows.push([label, fmt(lat.length), fmt(lat.length / O.seconds), fmt(percentile(lat, 50), 1), fmt(p99, 1), fmt(Math.max(...lat), 1), p99 < GOAL_P99_MS ? 'PASS' : 'MISS', String(bad)]);
    }
    const sent = await bg.stop();
    bg = null;
    printTable(rows);
    console.log(`  background SMTP during the measurement: ${fmt(sent)} messages accepted; serve CPU ${fmt((cpuSeconds(rg2.pid) - cpu0) / (paths.length * O.seconds) * 100)} % of one core on average`);
  } finally {
    await bg?.stop().catch(() => 0);
    tokenClient.close();
    cookieClient.close();
    await rg2.stop();
  }
  console.log('');
}

// --- (3) overview endpoint CPU ---------------------------------------------------------------------------------------

async function overviewCpu(scratch: string, tlsCache: string): Promise<void> {
  const RATE = 50;
  console.log(`(3) overview data endpoint: GET /api/overview?minutes=60 (session cookie) at ${RATE}/s for ${O.seconds} s vs none, serve's CPU from /proc (SMTP idle)`);
  const webPort = await freePort();
  const rg = await startRelayguard({ tlsDir: tlsCache, parentDir: scratch, removeDataDir: false, config: { web: { enabled: true, address: '127.0.0.1', port: webPort } } });
  await apiToken(rg);
  // As the overview page polls it: with the session cookie of a browser.
  const client = httpClient(webPort, { cookie: await sessionCookie(webPort) }, 4);
  try {
    // A little history: some mail and refusals in the counters.
    await smtpSource({ port: rg.port, sessions: 5, messages: 200, size: 1024, reuse: true, from: FROM, to: TO });
    await client.get('/api/overview?minutes=60');
    await sleep(2000);
    const window = async (rate: number): Promise<{ cpu: number; n: number; p99: number; bytes: number }> => {
      const lat: number[] = [];
      let bytes = 0;
      const pending: Promise<void>[] = [];
      const c0 = cpuSeconds(rg.pid);
      const t0 = performance.now();
      if (rate > 0) {
        const interval = 1000 / rate;
        for (let i = 0; performance.now() - t0 < O.seconds * 1000; i++) {
          const due = t0 + i * interval;
          const wait = due - performance.now();
          if (wait > 0) await sleep(wait);
          pending.push(client.get('/api/overview?minutes=60').then((r) => {
            if (r.status !== 200) throw new Error(`/api/overview answered ${r.status}`);
            lat.push(r.ms);
            bytes = r.bytes;
          }));
        }
        await Promise.all(pending);
      } else {
        await sleep(O.seconds * 1000);
      }
      const secs = (performance.now() - t0) / 1000;
      return { cpu: (cpuSeconds(rg.pid) - c0) / secs, n: lat.length, p99: percentile(lat, 99), bytes };
    };
    const idle1 = await window(0);
    const loaded = await window(RATE);
    const idle2 = await window(0);
    const idle = (idle1.cpu + idle2.cpu) / 2;
    const added = loaded.cpu - idle;
    console.log(`  serve CPU: ${fmt(idle * 100, 2)} % of one core without requests (two windows: ${fmt(idle1.cpu * 100, 2)} / ${fmt(idle2.cpu * 100, 2)}), ` +
      `${fmt(loaded.cpu * 100, 2)} % with ${fmt(loaded.n)} requests (${fmt(loaded.n / O.seconds)}/s, p99 ${fmt(loaded.p99, 1)} ms, ${fmt(loaded.bytes)} bytes each)`);
    console.log(`  added by the overview endpoint: ${fmt(added * 100, 2)} % of one core; goal < ${GOAL_CPU_SHARE * 100} %: ${added < GOAL_CPU_SHARE ? 'PASS' : 'MISS'}`);
  } finally {
    client.close();
    await rg.stop();
  }
  // A full day's ring (1,440 points, 8 refusal rules) answered in-process: the worst case a fresh serve cannot show.
  const m = new RelayMetrics('bench', { processMetrics: false });
  m.setSources({ connections: () => 12, queueCounts: async () => queueCounts([{ state: 'queued', messages: 100, oldest: 0 }, { state: 'deferred', messages: 5, oldest: 0 }, { state: 'hold', messages: 1, oldest: 0 }], 1000), ordbDns: () => ({ answered: 1000, nxdomain: 900, formerr: 0, refused: 0, dropped: 0 }) });
  let clock = Date.now();
  const series = new OverviewSeries({ node: 'bench', metrics: m, now: () => clock });
  for (let i = 0; i < 1440; i++) {
    for (let k = 0; k < 20; k++) {
      m.observe('message accepted', { rcpts: 1, bytes: 5000, accept_ms: 2 });
      m.observe('relay decision', { action: 'reject', rule: `rule-${k % 8}` });
    }
    await series.sample();
    clock += 60_000;
  }
  const N = 500;
  const c0 = process.cpuUsage();
  let size = 0;
  for (let i = 0; i < N; i++) size = JSON.stringify(series.query(1440)).length;
  const c = process.cpuUsage(c0);
  const perQueryMs = (c.user + c.system) / 1000 / N;
  // What the endpoint pays: json() recomputes at most once a second per window length, else returns the cached string.
  const c1 = process.cpuUsage();
  for (let i = 0; i < RATE * 10; i++) { series.json(1440); if (i % RATE === 0) clock += 1000; }
  const cc = process.cpuUsage(c1);
  const perSecondMs = (cc.user + cc.system) / 1000 / 10;
  console.log(`  full ring in-process: one query(1440) + JSON (${fmt(size)} bytes) costs ${fmt(perQueryMs, 3)} ms CPU; ` +
    `${RATE} json(1440) calls a second (cached a second) cost ${fmt(perSecondMs, 2)} ms CPU per second = ${fmt(perSecondMs / 10, 2)} % of one core (plus HTTP handling, measured above)`);
  console.log('');
}

async function main(): Promise<void> {
  installSignalHandlers();
  if (!hasBinary('/usr/sbin/smtp-source')) throw new Error('/usr/sbin/smtp-source not found (Debian postfix, see /work/shared/peers.md)');
  const cpu = cpus();
  console.log('relayguard web benchmark (npm run bench:web)');
  console.log(`host: ${cpu.length} vCPU ${cpu[0]?.model.trim() ?? '?'}, node ${process.version}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}${quick ? '  [QUICK]' : ''}`);
  console.log('');
  const scratch = mkdtempSync(join(tmpdir(), 'relayguard-bench-web-'));
  onCleanup(async () => rmSync(scratch, { recursive: true, force: true }));
  const tlsCache = join(scratch, 'tls');
  {
    const rg = await startRelayguard();
    cpSync(join(rg.dataDir, 'tls'), tlsCache, { recursive: true });
    await rg.stop();
  }
  const only = (env['BENCH_WEB_ONLY'] ?? '1,2,3').split(',');
  if (only.includes('1')) await intake(scratch, tlsCache);
  if (only.includes('2')) await apiLatency(scratch, tlsCache);
  if (only.includes('3')) await overviewCpu(scratch, tlsCache);
  console.log(`load average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (2 vCPU shared with other work: spread between runs is 10-25 %)`);
}

try {
  await main();
} catch (err) {
  console.error(`bench:web failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
