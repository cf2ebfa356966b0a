/**
 * Outages of a private PostgreSQL (testing/postgres.ts) for fault tests: stop the server of an instance and start
 * it again on the same port and data, so clients see "connection refused" and then the same database back.
 *
 * takeDown() runs `pg_ctl stop -m fast` on the instance's data directory (the instance's own postmaster exits);
 * bringUp() starts a new postmaster as our child, with a parent-death signal, on the same port, socket directory
 * and settings as startPostgres() uses. The instance's stop() only stops the postmaster it started itself: call
 * stopRestarted() before it (also on failure), so no postgres outlives the test.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { POSTGRES_BIN, type PostgresInstance } from './postgres.ts';

function identity(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

function asPostgres(argv: readonly string[], deathSignal?: string): [string, string[]] {
  const who = identity();
  const opts: string[] = [];
  if (who !== null) opts.push(`--reuid=${who.uid}`, `--regid=${who.gid}`, '--clear-groups');
  if (deathSignal) opts.push(`--pdeathsig=${deathSignal}`);
  return opts.length === 0 ? [argv[0]!, argv.slice(1)] : ['setpriv', [...opts, '--', ...argv]];
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  env['LC_ALL'] = 'C.UTF-8';
  return env;
}

const restarted = new Map<PostgresInstance, ChildProcess>();

/** Stops the server (fast shutdown: sessions are cut, as a crash or failover would). */
export function takeDown(pg: PostgresInstance): void {
  const [cmd, args] = asPostgres([join(POSTGRES_BIN, 'pg_ctl'), '-D', join(pg.baseDir, 'data'), 'stop', '-m', 'fast', '-w', '-t', '30']);
  const r = spawnSync(cmd, args, { cwd: pg.baseDir, env: cleanEnv(), encoding: 'utf8', timeout: 40_000 });
  if (r.status !== 0) throw new Error(`pg_ctl stop failed: ${r.stdout}${r.stderr}`);
  restarted.delete(pg);
}

/** Starts the server again on the same port and data; resolves when it accepts connections. */
export async function bringUp(pg: PostgresInstance): Promise<void> {
  const logFile = join(pg.baseDir, 'postgres.log');
  const before = readFileSync(logFile, 'utf8').length;
  const settings = {
    listen_addresses: '127.0.0.1', unix_socket_directories: pg.socketDir, fsync: 'on', synchronous_commit: 'on',
    full_page_writes: 'on', max_connections: 100, shared_buffers: '64MB', logging_collector: 'off', log_min_messages: 'warning',
  };
  const argv = [join(POSTGRES_BIN, 'postgres'), '-D', join(pg.baseDir, 'data'), '-p', String(pg.port), ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  const [cmd, args] = asPostgres(argv, 'SIGINT');
  const log = openSync(logFile, 'a');
  const child = spawn(cmd, args, { cwd: pg.baseDir, env: cleanEnv(), stdio: ['ignore', log, log] });
  closeSync(log);
  restarted.set(pg, child);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (readFileSync(logFile, 'utf8').slice(before).includes('database system is ready to accept connections')) return;
    if (child.exitCode !== null) throw new Error(`PostgreSQL did not restart:\n${readFileSync(logFile, 'utf8').slice(before)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill('SIGQUIT');
  throw new Error('PostgreSQL did not restart within 60 s');
}

/** Stops a server started by bringUp() and waits for it to exit; nothing to do when none runs. */
export async function stopRestarted(pg: PostgresInstance): Promise<void> {
  const child = restarted.get(pg);
  if (child === undefined || child.exitCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  takeDown(pg);
  await gone;
}
