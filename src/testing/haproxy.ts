/**
 * Private HAProxy instances for tests and benchmarks (Debian's haproxy 2.6, /usr/sbin/haproxy; the system service
 * is never started or read).
 *
 * startHaproxy({ config }) writes the configuration into a fresh temp dir, checks it (`haproxy -c`), and runs
 * `haproxy -db -f` in the foreground as a child of this process with a parent-death signal (setpriv --pdeathsig),
 * so no haproxy outlives its test even when the test runner is killed; an exit hook catches a forgotten stop().
 * A second `global` section added to the caller's configuration gives it an admin socket in the temp dir, through
 * which tests read server states (`show stat`). Its stderr (alerts, server UP/DOWN warnings) is kept.
 * Callers choose loopback addresses and ports (src/testing/ports.ts); start() waits until every `waitFor` port
 * accepts connections.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const HAPROXY_BIN = '/usr/sbin/haproxy';
const PACKAGE_HINT = 'install the Debian haproxy package (apt-get install haproxy; scripts/peers.sh lists it)';

export interface HaproxyOptions {
  /** The configuration (global, defaults, frontend and backend sections), loopback addresses only. */
  readonly config: string;
  /** Ports on 127.0.0.1 that must accept connections before start returns (the frontends). */
  readonly waitFor?: readonly number[];
}

/** One row of `show stat` for a server (or FRONTEND/BACKEND). */
export interface HaproxyStat {
  readonly proxy: string;
  readonly server: string;
  /** UP, DOWN, "UP 1/2", "DOWN 1/2", OPEN, no check ... */
  readonly status: string;
  /** Sessions in total (stot). */
  readonly sessions: number;
  /** Current sessions (scur). */
  readonly current: number;
}

export interface HaproxyInstance {
  readonly pid: number;
  readonly baseDir: string;
  readonly configFile: string;
  /** What haproxy wrote to stdout and stderr so far (alerts, server state changes). */
  output(): string;
  /** `show stat` over the admin socket. */
  stats(): Promise<HaproxyStat[]>;
  /** A raw command on the admin socket ("show servers state", "disable server be/n1" ...). */
  command(line: string): Promise<string>;
  /** SIGTERM (hard stop), SIGKILL after 5 s, waits for the exit, removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

/** Throws, naming the Debian package, when haproxy is not installed. */
export function requireHaproxy(): void {
  try {
    accessSync(HAPROXY_BIN, fsConstants.X_OK);
  } catch {
    throw new Error(`HAProxy is needed by this test but ${HAPROXY_BIN} is missing: ${PACKAGE_HINT}`);
  }
}

const running = new Set<ChildProcess>();
let hooked = false;

function adminCommand(socket: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(socket);
    let out = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => { out += d; });
    c.once('error', reject);
    c.once('close', () => resolve(out));
    c.once('connect', () => c.write(`${line}\n`));
    setTimeout(() => { c.destroy(); reject(new Error(`haproxy admin socket: no answer to "${line}"`)); }, 5000).unref();
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ host: '127.0.0.1', port });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/** Starts a private haproxy; see the header. */
export async function startHaproxy(options: HaproxyOptions): Promise<HaproxyInstance> {
  requireHaproxy();
  const baseDir = mkdtempSync(join(tmpdir(), 'relayguard-haproxy-'));
  const configFile = join(baseDir, 'haproxy.cfg');
  const socket = join(baseDir, 'admin.sock');
  let child: ChildProcess | null = null;
  try {
    writeFileSync(configFile, `${options.config.trimEnd()}\n\n# added by src/testing/haproxy.ts\nglobal\n    stats socket ${socket} mode 600 level admin\n`, { mode: 0o600 });
    const check = spawnSync(HAPROXY_BIN, ['-c', '-q', '-f', configFile], { encoding: 'utf8', timeout: 30_000 });
    if (check.status !== 0) throw new Error(`haproxy -c refused the configuration (exit ${check.status}):\n${check.stdout}${check.stderr}\n--- config ---\n${options.config}`);
    // -db: foreground, no daemon, no master-worker; setpriv: the kernel sends SIGTERM when this process dies.
    child = spawn('setpriv', ['--pdeathsig=SIGTERM', '--', HAPROXY_BIN, '-db', '-f', configFile], { cwd: baseDir, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    if (!hooked) {
      hooked = true;
      process.on('exit', () => { for (const c of running) c.kill('SIGKILL'); });
    }
    let output = '';
    const keep = (d: string): void => { if (output.length < 1_000_000) output += d; };
    child.stdout!.setEncoding('utf8').on('data', keep);
    child.stderr!.setEncoding('utf8').on('data', keep);
    const proc = child;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => { running.delete(proc); resolve(); }));
    const deadline = Date.now() + 15_000;
    const waitPorts = options.waitFor ?? [];
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`haproxy exited (${proc.exitCode ?? proc.signalCode}) while starting:\n${output}`);
      const admin = await adminCommand(socket, 'show info').then(() => true, () => false);
      const open = admin && (await Promise.all(waitPorts.map(portOpen))).every(Boolean);
      if (open) break;
      if (Date.now() > deadline) throw new Error(`haproxy did not come up within 15 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    let stopping: Promise<void> | null = null;
    return {
      pid: proc.pid!,
      baseDir,
      configFile,
      output: () => output,
      command: (line) => adminCommand(socket, line),
      async stats() {
        const csv = await adminCommand(socket, 'show stat');
        const lines = csv.split('\n').filter((l) => l.trim() !== '');
        const head = (lines.shift() ?? '').replace(/^# /, '').split(',');
        const col = (name: string): number => head.indexOf(name);
        return lines.map((l) => {
          const f = l.split(',');
          return {
            proxy: f[col('pxname')] ?? '',
            server: f[col('svname')] ?? '',
            status: f[col('status')] ?? '',
            sessions: Number(f[col('stot')] ?? 0),
            current: Number(f[col('scur')] ?? 0),
          };
        });
      },
      stop() {
        stopping ??= (async () => {
          if (proc.exitCode === null && proc.signalCode === null) {
            proc.kill('SIGTERM');
            const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
            await exited;
            clearTimeout(t);
          }
          rmSync(baseDir, { recursive: true, force: true });
        })();
        return stopping;
      },
    };
  } catch (err) {
    if (child !== null && child.exitCode === null && child.signalCode === null) {
      const c = child;
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGKILL');
      await gone;
      running.delete(c);
    }
    rmSync(baseDir, { recursive: true, force: true });
    throw err;
  }
}
