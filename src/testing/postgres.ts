/**
 * Private PostgreSQL 15 instances for tests and benchmarks (Debian's postgresql-15, binaries in
 * /usr/lib/postgresql/15/bin; the system cluster in /var/lib/postgresql is never read, started or changed).
 *
 * Each instance: initdb in a fresh temp dir owned by the `postgres` system user (initdb and postgres refuse to
 * run as root, so as root they run under setpriv as `postgres`), trust authentication for local and loopback
 * connections only, listening on 127.0.0.1 at an ephemeral port and on a unix socket in the temp dir, fsync,
 * synchronous_commit and full_page_writes on (durability as in production, so latencies are honest), then one
 * database made with createdb. stop() runs `pg_ctl stop -m fast` and removes the dir.
 *
 * No postgres process outlives its test: the postmaster is a child of the test process started with a
 * parent-death signal (setpriv --pdeathsig), so even a test runner killed with SIGKILL takes it down, and an
 * exit hook stops instances a test forgot.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, chownSync, constants as fsConstants, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.ts';

export const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';
const PACKAGE_HINT = 'install the Debian postgresql-15 package (apt-get install postgresql-15; scripts/peers.sh lists it)';

export interface PostgresOptions {
  /** Name of the database createdb makes. Default "relayguard". */
  readonly database?: string;
  /** More server settings (postgresql.conf names), applied last. */
  readonly settings?: Readonly<Record<string, string | number>>;
}

export interface PostgresInstance {
  /** postgresql://postgres@127.0.0.1:PORT/DATABASE */
  readonly url: string;
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly database: string;
  /** The unix socket directory (connect with host=<socketDir>). */
  readonly socketDir: string;
  /** The temp dir holding the data directory, socket and log; removed by stop(). */
  readonly baseDir: string;
  /** Makes another database (createdb) and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** The server log so far. */
  readLog(): string;
  /** `pg_ctl stop -m fast` and waits for the postmaster to exit, keeping the data (an outage); resume() ends it. */
  pause(): Promise<void>;
  /** Starts the paused server again on the same port and data. */
  resume(): Promise<void>;
  /** `pg_ctl stop -m fast`, waits for the postmaster to exit, removes baseDir. Safe to call twice. */
  stop(): Promise<void>;
}

/** Throws, naming the Debian package, when PostgreSQL 15 is not installed. */
export function requirePostgres(): void {
  for (const b of ['initdb', 'postgres', 'pg_ctl', 'createdb']) {
    const path = join(POSTGRES_BIN, b);
    try {
      accessSync(path, fsConstants.X_OK);
    } catch {
      throw new Error(`PostgreSQL 15 is needed by this test but ${path} is missing: ${PACKAGE_HINT}`);
    }
  }
}

export interface Identity {
  readonly uid: number;
  readonly gid: number;
}

/** As root: the `postgres` system user (Debian's package creates it). Otherwise: ourselves. */
export function identity(): Identity | null {
  if (process.getuid?.() !== 0) return null;
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (r.status !== 0 || g.status !== 0) throw new Error(`Running as root, PostgreSQL needs the "postgres" system user, which is missing: ${PACKAGE_HINT}`);
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/** The command line that runs `argv` as the postgres user (as root), with a parent-death signal when given. */
export function asPostgres(who: Identity | null, argv: readonly string[], deathSignal?: string): [string, string[]] {
  const opts: string[] = [];
  if (who !== null) opts.push(`--reuid=${who.uid}`, `--regid=${who.gid}`, '--clear-groups');
  if (deathSignal) opts.push(`--pdeathsig=${deathSignal}`);
  return opts.length === 0 ? [argv[0]!, argv.slice(1)] : ['setpriv', [...opts, '--', ...argv]];
}

/** A clean environment: no PGHOST, PGDATA, PGPORT ... of the caller can point a tool at another cluster. */
export function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  env['LC_ALL'] = 'C.UTF-8';
  return env;
}

export function run(who: Identity | null, argv: readonly string[], cwd: string): void {
  const [cmd, args] = asPostgres(who, argv);
  const r = spawnSync(cmd, args, { cwd, env: cleanEnv(), encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw new Error(`${argv[0]} could not run: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (exit ${r.status}):\n${r.stdout}${r.stderr}`);
}

/** Postmasters started by this module and postgres-pair.ts (stopped by the exit hook). */
export const running = new Set<ChildProcess>();
let hooked = false;
export function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // A test that forgot stop(): SIGQUIT is PostgreSQL's immediate shutdown. (pdeathsig covers a killed process.)
  process.on('exit', () => { for (const c of running) c.kill('SIGQUIT'); });
}

/** Starts a private PostgreSQL 15; see the header. */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresInstance> {
  requirePostgres();
  const who = identity();
  const database = options.database ?? 'relayguard';
  const baseDir = mkdtempSync(join(tmpdir(), 'relayguard-pg-'));
  const dataDir = join(baseDir, 'data');
  const socketDir = join(baseDir, 'sock');
  const logFile = join(baseDir, 'postgres.log');
  let child: ChildProcess | null = null;
  try {
    mkdirSync(socketDir, { mode: 0o700 });
    closeSync(openSync(logFile, 'a', 0o600));
    if (who !== null) for (const p of [baseDir, socketDir, logFile]) chownSync(p, who.uid, who.gid);
    run(who, [
      join(POSTGRES_BIN, 'initdb'), '-D', dataDir, '--username=postgres', '--auth=trust', '--encoding=UTF8', '--locale=C.UTF-8',
    ], baseDir);
    // Loopback only: initdb --auth=trust writes local, 127.0.0.1/32 and ::1/128 lines; listen_addresses keeps
    // the server off every other interface.
    const settings: Record<string, string | number> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: socketDir,
      fsync: 'on',
      synchronous_commit: 'on',
      full_page_writes: 'on',
      max_connections: 100,
      shared_buffers: '64MB',
      logging_collector: 'off',
      log_min_messages: 'warning',
      ...options.settings,
    };
    let port = 0;
    const launch = async (): Promise<string> => {
      const argv = [join(POSTGRES_BIN, 'postgres'), '-D', dataDir, '-p', String(port), ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
      const [cmd, args] = asPostgres(who, argv, 'SIGINT');
      const log = openSync(logFile, 'a');
      const from = readFileSync(logFile, 'utf8').length;
      child = spawn(cmd, args, { cwd: baseDir, env: cleanEnv(), stdio: ['ignore', log, log] });
      closeSync(log);
      running.add(child);
      hookExit();
      return waitReady(child, logFile, port, from);
    };
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      const started = await launch();
      if (started === 'ready') break;
      const failed = child as ChildProcess | null; // set by launch()
      if (failed !== null) running.delete(failed);
      child = null;
      if (started === 'port-taken' && attempt < 5) continue;
      throw new Error(`PostgreSQL did not start (${started}):\n${tail(logFile)}`);
    }
    const url = (db: string): string => `postgresql://postgres@127.0.0.1:${port}/${db}`;
    const createDatabase = async (name: string): Promise<string> => {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`Bad database name "${name}"`);
      run(null, [join(POSTGRES_BIN, 'createdb'), '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', name], baseDir);
      return url(name);
    };
    await createDatabase(database);
    let postmaster: ChildProcess | null = child;
    let stopping: Promise<void> | null = null;
    return {
      url: url(database),
      host: '127.0.0.1',
      port,
      database,
      socketDir,
      baseDir,
      createDatabase,
      readLog: () => readFileSync(logFile, 'utf8'),
      async pause() {
        if (postmaster !== null) await stopChild(who, postmaster, dataDir);
        postmaster = null;
      },
      async resume() {
        if (postmaster !== null || stopping !== null) return;
        const started = await launch();
        if (started !== 'ready') throw new Error(`PostgreSQL did not restart (${started}):\n${tail(logFile)}`);
        postmaster = child;
      },
      stop() {
        stopping ??= (async () => {
          if (postmaster !== null) await stopChild(who, postmaster, dataDir);
          rmSync(baseDir, { recursive: true, force: true });
        })();
        return stopping;
      },
    };
  } catch (err) {
    if (child !== null) await stopChild(who, child, dataDir).catch(() => {});
    rmSync(baseDir, { recursive: true, force: true });
    throw err;
  }
}

export function tail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Waits for "ready to accept connections", an early exit, or 60 s. */
export async function waitReady(child: ChildProcess, logFile: string, port: number, from = 0): Promise<'ready' | 'port-taken' | string> {
  const deadline = Date.now() + 60_000;
  let exited: string | null = null;
  child.once('exit', (code, signal) => { exited = `exited with ${code ?? signal}`; });
  while (Date.now() < deadline) {
    const log = readFileSync(logFile, 'utf8').slice(from);
    if (log.includes('database system is ready to accept connections')) return 'ready';
    if (exited !== null) {
      return /could not bind|Address already in use/.test(log) && log.includes(String(port)) ? 'port-taken' : exited;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill('SIGQUIT');
  return 'no "ready" line within 60 s';
}

/** pg_ctl stop -m fast, then waits for the postmaster (our child) to be gone; SIGQUIT, then SIGKILL if it lingers. */
export async function stopChild(who: Identity | null, child: ChildProcess, dataDir: string): Promise<void> {
  const gone = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  if (child.exitCode === null && child.signalCode === null) {
    const [cmd, args] = asPostgres(who, [join(POSTGRES_BIN, 'pg_ctl'), '-D', dataDir, 'stop', '-m', 'fast', '-w', '-t', '30']);
    const r = spawnSync(cmd, args, { cwd: tmpdir(), env: cleanEnv(), encoding: 'utf8', timeout: 40_000 });
    if (r.status !== 0) child.kill('SIGQUIT');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(timer);
  running.delete(child);
}
