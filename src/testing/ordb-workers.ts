/**
 * Purpose: `relayguard dnsbl worker` as real child processes for tests and bench/workers.ts, against a queue of
 * submissions aimed at loopback fake relays (fake-relays.ts): a temp data dir and relayguard.yaml, the submissions
 * made through the workflow, JSON log lines collected per worker, and a stop that never leaves a process behind
 * (SIGTERM, then SIGKILL).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { JobQueue, ListingStore, OrdbWorkflow } from '../dnsbl/index.ts';
import { CLI, NODE } from './serve-process.ts';

export interface WorkerProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** JSON log lines so far (stdout). */
  readonly logs: Record<string, unknown>[];
  /** Standard error so far. */
  stderr(): string;
  /** Resolves with the exit code (null when killed by a signal) and the signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after graceMs; resolves when it is gone. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startWorkerProcess(configPath: string, args: readonly string[] = []): WorkerProcess {
  const child = spawn(NODE, [CLI, 'dnsbl', 'worker', '-c', configPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Record<string, unknown>[] = [];
  let err = '';
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try { logs.push(JSON.parse(line) as Record<string, unknown>); } catch { logs.push({ msg: 'unparsed', line }); }
    }
  });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return {
    pid: child.pid!,
    child,
    logs,
    stderr: () => err,
    exited,
    async stop(graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const r = await exited;
        clearTimeout(t);
        return r;
      }
      return exited;
    },
  };
}

export interface WorkerRig {
  readonly dir: string;
  readonly configPath: string;
  /** The listing store (the test's own connection to the shared file). */
  readonly store: ListingStore;
  readonly jobs: JobQueue;
  readonly workflow: OrdbWorkflow;
  /** Submits addresses through the workflow; throws when one is refused. */
  submit(addresses: readonly string[]): void;
  close(): void;
}

/** A data dir and relayguard.yaml whose dnsbl section tests `port` (role mx) on loopback targets. */
export function workerRig(options: { port: number; dnsbl?: Record<string, unknown>; log?: Record<string, unknown> }): WorkerRig {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-ordb-workers-'));
  const configPath = join(dir, 'relayguard.yaml');
  writeFileSync(configPath, stringify({
    dataDir: join(dir, 'data'),
    log: { level: 'info', ...options.log },
    dnsbl: { zone: 'relays.test', allowPrivateTargets: true, testPorts: [`${options.port}:mx`], ...options.dnsbl },
  }));
  mkdirSync(join(dir, 'data'), { mode: 0o700 });
  const store = ListingStore.open(join(dir, 'data', 'relayguard.db'));
  const jobs = new JobQueue(store);
  const workflow = new OrdbWorkflow({
    store, test: async () => { throw new Error('the test process never tests'); }, allowNonGlobal: true, rateLimit: { perSubmitterPerHour: 0 },
  });
  return {
    dir, configPath, store, jobs, workflow,
    submit(addresses) {
      for (const a of addresses) {
        const r = workflow.submit(a, 'worker-test');
        if (!r.ok || r.status !== 'queued') throw new Error(`submission of ${a} not queued: ${JSON.stringify(r)}`);
      }
    },
    close() {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
