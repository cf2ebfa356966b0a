/**
 * Runs `relayguard serve` as a real child process for tests and benchmarks: a temp data dir, a generated
 * relayguard.yaml on ephemeral loopback ports, JSON log lines collected, and a stop that never leaves a
 * process behind (SIGTERM, then SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from './ports.ts';
import { UserAccounts } from '../policy/directory.ts';
import { SqliteDirectoryStore } from '../store/index.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
export const NODE = process.execPath;
export const CLI = join(ROOT, 'bin', 'relayguard.js');

export interface ServeOptions {
  /** Extra relayguard.yaml keys (merged over the generated ones). */
  config?: Record<string, unknown>;
  /** Reuse an existing data directory (restart after a crash). */
  dataDir?: string;
  /** Reuse ports (restart). */
  ports?: { mx: number; submission: number; submissions: number };
  /** Prefix the command (for example ['strace', '-f', ...]). */
  wrap?: string[];
  /** More arguments after `serve --config FILE` (for example ['--force']). */
  args?: string[];
  env?: Record<string, string>;
  /** Log lines also go to this callback. */
  onLog?: (line: Record<string, unknown>) => void;
  /**
   * Mailboxes created in the database before start (users with a random password): unknown local users are refused.
   * Default: u@, user@, v@ and rcpt@local.test.
   */
  mailboxes?: readonly string[];
}

export const DEFAULT_MAILBOXES = ['u', 'user', 'v', 'rcpt'].map((l) => `${l}@local.test`);

/** Creates mailboxes (users with random passwords, cheap scrypt) in a data directory's database. */
export async function addMailboxes(dataDir: string, mailboxes: readonly string[]): Promise<void> {
  if (mailboxes.length === 0) return;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const store = new SqliteDirectoryStore(join(dataDir, 'relayguard.db'));
  const users = new UserAccounts(store, { scrypt: { N: 1024, r: 8, p: 1 } });
  try {
    for (const m of mailboxes) if (!(await store.isMailbox(m))) await users.add(m, randomBytes(12).toString('hex'));
  } finally {
    await store.close();
  }
}

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly dataDir: string;
  readonly configFile: string;
  readonly ports: { mx: number; submission: number; submissions: number };
  /** JSON log lines, parsed (none with `log.format: text`). */
  readonly logs: Record<string, unknown>[];
  /** Every stdout line as written (either log format). */
  readonly lines: string[];
  readonly stderr: () => string;
  /** SIGTERM and wait (SIGKILL after the grace time). */
  stop(graceMs?: number): Promise<number | null>;
  /** SIGKILL now and wait for the exit. */
  kill9(): Promise<void>;
  /** Removes the data directory (when the test created it). */
  cleanup(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => { for (const c of running) c.kill('SIGKILL'); });

/**
 * Starts `relayguard serve`. Ports this function chooses (options.ports not given) are free when probed, but another
 * process's outgoing connection can take one as its local port before serve binds it (EADDRINUSE, seen on a busy
 * machine): then it tries again with fresh ports, up to 4 times. Pinned ports are never changed.
 */
export async function startServe(options: ServeOptions = {}): Promise<ServeProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServeOnce(options);
    } catch (err) {
      if (options.ports === undefined && attempt < 4 && /EADDRINUSE/.test(String((err as Error).message))) continue;
      throw err;
    }
  }
}

/**
 * Data directories this harness made: removed when the test process exits, whatever the test did with them (a test
 * that restarts serve on the same directory and cleans up only the second process would otherwise leave it).
 */
const madeDirs = new Set<string>();
process.once('exit', () => {
  for (const d of madeDirs) {
    try { rmSync(d, { recursive: true, force: true }); } catch { /* best effort at exit */ }
  }
});

async function startServeOnce(options: ServeOptions): Promise<ServeProcess> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'relayguard-serve-')));
  if (ownDir) madeDirs.add(dataDir);
  const ports = options.ports ?? { mx: await freePort(), submission: await freePort(), submissions: await freePort() };
  const config = {
    hostname: 'mx.local.test',
    dataDir,
    localDomains: ['local.test'],
    // Receive-path tests inspect the queue: the runner stays off unless a test turns delivery on.
    delivery: { enabled: false },
    // Tests run in parallel: the ORDB DNS server takes a free port instead of 5353.
    dnsbl: { listen: { port: 0 } },
    // The web service binds 8025 by default: tests that want it set `web` (port 0 or a free port).
    web: { enabled: false },
    listeners: [
      { name: 'mx', role: 'mx', address: '127.0.0.1', port: ports.mx, tls: 'starttls' },
      { name: 'submission', role: 'submission', address: '127.0.0.1', port: ports.submission, tls: 'starttls' },
      { name: 'submissions', role: 'submission', address: '127.0.0.1', port: ports.submissions, tls: 'implicit' },
    ],
    ...options.config,
  };
  await addMailboxes(dataDir, options.mailboxes ?? DEFAULT_MAILBOXES);
  const configFile = join(dataDir, 'relayguard.yaml');
  await writeFile(configFile, stringify(config));
  const argv = [...(options.wrap ?? []), NODE, CLI, 'serve', '--config', configFile, ...(options.args ?? [])];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  running.add(child);
  const logs: Record<string, unknown>[] = [];
  const lines: string[] = [];
  let stderr = '';
  let partial = '';
  const exited = new Promise<number | null>((resolveExit) => child.once('exit', (code) => { running.delete(child); resolveExit(code); }));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  // With workers (serve-primary.ts), ready is the primary's 'workers ready', once every worker listens.
  const clustered = (config as { workers?: unknown }).workers !== undefined && (config as { workers?: unknown }).workers !== 1;
  const ready = new Promise<void>((resolveReady, reject) => {
    const listening = new Set<string>();
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      partial += d;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        lines.push(line);
        // log.format: text
        const text = / relayguard\[\d+\]: info: listening: .*\blistener=(\S+)/.exec(line);
        if (/ relayguard\[\d+\]: info: workers ready/.test(line)) resolveReady();
        if (text && !clustered) {
          listening.add(text[1]!);
          if (listening.size === (config.listeners as unknown[]).length) resolveReady();
          continue;
        }
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          logs.push(rec);
          options.onLog?.(rec);
          if (rec['msg'] === 'workers ready') resolveReady();
          if (rec['msg'] === 'listening' && !clustered) {
            listening.add(String(rec['listener']));
            if (listening.size === (config.listeners as unknown[]).length) resolveReady();
          }
        } catch { /* not JSON (strace noise, text format) */ }
      }
    });
    void exited.then((code) => reject(new Error(`relayguard serve exited with ${code} before listening:\n${stderr}`)));
    setTimeout(() => reject(new Error(`relayguard serve did not start within 20 s:\n${stderr}`)), 20_000).unref();
  });
  try {
    await ready;
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    if (ownDir) await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    child,
    pid: child.pid!,
    dataDir,
    configFile,
    ports,
    logs,
    lines,
    stderr: () => stderr,
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async cleanup() {
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
