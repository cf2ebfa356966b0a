/**
 * A private PostgreSQL 15 primary with a synchronous streaming-replication standby, for the cluster fault tests
 * (issue 10: "kill -9 the primary during load, promote the standby, no message that got a 250 is missing").
 * Built on src/testing/postgres.ts (same binaries, same rules: temp dirs owned by the `postgres` user when run as
 * root, loopback only, trust authentication, fsync on, parent-death signal, nothing left running).
 *
 *   startPostgresPair()  initdb + start the primary (wal_level replica), createdb, pg_basebackup -R -X stream into
 *                        the standby's directory, start the standby (cluster_name = its application_name), then
 *                        make it synchronous: synchronous_standby_names = '"standby1"' (ALTER SYSTEM + reload) and
 *                        wait until pg_stat_replication says sync_state = 'sync'. From then on a COMMIT on the
 *                        primary returns only once the standby has the WAL on disk (synchronous_commit = on), or
 *                        has applied it (remote_apply, visible to queries on the standby).
 *   killPrimary()        SIGKILL to the primary's postmaster (a machine dying), then waits until its backends,
 *                        which notice the postmaster's death, are gone (SIGKILL to any left after 10 s).
 *   promoteStandby()     pg_ctl promote -w; resolves once the standby accepts writes.
 *   stop()               stops whatever still runs (pg_ctl stop -m fast) and removes the temp dir.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './ports.ts';
import {
  POSTGRES_BIN, asPostgres, cleanEnv, hookExit, identity, requirePostgres, run, running, stopChild, tail, type Identity,
} from './postgres.ts';

export const STANDBY_NAME = 'standby1';

export interface PairOptions {
  /** Database createdb makes on the primary (replicated). Default "relayguard". */
  readonly database?: string;
  /** synchronous_commit of both servers. Default 'on' (the standby has flushed the WAL when COMMIT returns). */
  readonly synchronousCommit?: 'on' | 'remote_write' | 'remote_apply';
  /** More server settings for both (postgresql.conf names). */
  readonly settings?: Readonly<Record<string, string | number>>;
}

export interface PgServer {
  /** postgresql://postgres@127.0.0.1:PORT/DATABASE */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** The postmaster's pid. */
  readonly pid: number;
  readLog(): string;
}

export interface PostgresPair {
  readonly primary: PgServer;
  readonly standby: PgServer;
  readonly database: string;
  readonly baseDir: string;
  /** SIGKILL to the primary's postmaster; resolves when none of its processes is left. */
  killPrimary(): Promise<void>;
  /** Promotes the standby; resolves when it accepts writes. */
  promoteStandby(): Promise<void>;
  /** Stops what still runs, removes baseDir. Safe to call twice. */
  stop(): Promise<void>;
}

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
}

async function waitLog(child: ChildProcess, logFile: string, pattern: RegExp, timeoutMs = 60_000): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  let exited: string | null = null;
  child.once('exit', (code, signal) => { exited = `exited with ${code ?? signal}`; });
  while (Date.now() < deadline) {
    if (pattern.test(readFileSync(logFile, 'utf8'))) return null;
    if (exited !== null) return exited;
    await new Promise((r) => setTimeout(r, 25));
  }
  return `no ${pattern} in the log within ${timeoutMs} ms`;
}

async function startServer(who: Identity | null, dataDir: string, baseDir: string, logFile: string, settings: Record<string, string | number>, ready: RegExp): Promise<Started> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const argv = [join(POSTGRES_BIN, 'postgres'), '-D', dataDir, '-p', String(port), ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
    const [cmd, args] = asPostgres(who, argv, 'SIGINT');
    const mark = readFileSync(logFile, 'utf8').length;
    const log = openSync(logFile, 'a');
    const child = spawn(cmd, args, { cwd: baseDir, env: cleanEnv(), stdio: ['ignore', log, log] });
    closeSync(log);
    running.add(child);
    hookExit();
    const failure = await waitLog(child, logFile, ready);
    if (failure === null) return { child, port };
    running.delete(child);
    const text = readFileSync(logFile, 'utf8').slice(mark);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGQUIT');
    if (/could not bind|Address already in use/.test(text) && attempt < 5) continue;
    throw new Error(`PostgreSQL (${dataDir}) did not start (${failure}):\n${tail(logFile)}`);
  }
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Pids whose parent is `pid` (the postmaster's backends and auxiliary processes). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch { /* gone */ }
  }
  return out;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
}

/** Starts a primary and a synchronous standby; see the header. */
export async function startPostgresPair(options: PairOptions = {}): Promise<PostgresPair> {
  requirePostgres();
  const who = identity();
  const database = options.database ?? 'relayguard';
  const baseDir = mkdtempSync(join(tmpdir(), 'relayguard-pgpair-'));
  const dirs = {
    primary: join(baseDir, 'primary'),
    standby: join(baseDir, 'standby'),
    sockP: join(baseDir, 'sock-primary'),
    sockS: join(baseDir, 'sock-standby'),
    logP: join(baseDir, 'primary.log'),
    logS: join(baseDir, 'standby.log'),
  };
  const started: { primary: Started | null; standby: Started | null } = { primary: null, standby: null };
  const common = (socketDir: string): Record<string, string | number> => ({
    listen_addresses: '127.0.0.1',
    unix_socket_directories: socketDir,
    fsync: 'on',
    full_page_writes: 'on',
    synchronous_commit: options.synchronousCommit ?? 'on',
    wal_level: 'replica',
    max_wal_senders: 10,
    hot_standby: 'on',
    max_connections: 100,
    shared_buffers: '64MB',
    logging_collector: 'off',
    log_min_messages: 'warning',
    ...options.settings,
  });
  const stopAll = async (): Promise<void> => {
    if (started.standby) await stopChild(who, started.standby.child, dirs.standby).catch(() => undefined);
    if (started.primary) await stopChild(who, started.primary.child, dirs.primary).catch(() => undefined);
  };
  try {
    for (const d of [dirs.sockP, dirs.sockS]) mkdirSync(d, { mode: 0o700 });
    for (const f of [dirs.logP, dirs.logS]) closeSync(openSync(f, 'a', 0o600));
    if (who !== null) for (const p of [baseDir, dirs.sockP, dirs.sockS, dirs.logP, dirs.logS]) chownSync(p, who.uid, who.gid);
    run(who, [join(POSTGRES_BIN, 'initdb'), '-D', dirs.primary, '--username=postgres', '--auth=trust', '--encoding=UTF8', '--locale=C.UTF-8'], baseDir);
    // initdb --auth=trust also writes `host replication all 127.0.0.1/32 trust`: the standby connects with it.
    started.primary = await startServer(who, dirs.primary, baseDir, dirs.logP, common(dirs.sockP), /database system is ready to accept connections/);
    const pPort = started.primary.port;
    run(null, [join(POSTGRES_BIN, 'createdb'), '-h', '127.0.0.1', '-p', String(pPort), '-U', 'postgres', database], baseDir);
    run(who, [
      join(POSTGRES_BIN, 'pg_basebackup'), '-h', '127.0.0.1', '-p', String(pPort), '-U', 'postgres', '-D', dirs.standby,
      '-R', '-X', 'stream', '-c', 'fast', '--no-password',
    ], baseDir);
    started.standby = await startServer(
      who, dirs.standby, baseDir, dirs.logS, { ...common(dirs.sockS), cluster_name: STANDBY_NAME },
      /database system is ready to accept read-only connections/,
    );
    const url = (port: number): string => `postgresql://postgres@127.0.0.1:${port}/${database}`;
    const primaryUrl = url(pPort);
    await query(primaryUrl, `ALTER SYSTEM SET synchronous_standby_names = '"${STANDBY_NAME}"'`);
    await query(primaryUrl, 'SELECT pg_reload_conf()');
    const deadline = Date.now() + 30_000;
    for (;;) {
      const rows = await query<{ sync_state: string }>(primaryUrl, 'SELECT sync_state FROM pg_stat_replication WHERE application_name = $1', [STANDBY_NAME]);
      if (rows[0]?.sync_state === 'sync') break;
      if (Date.now() > deadline) throw new Error(`the standby did not become synchronous: ${JSON.stringify(rows)}\n${tail(dirs.logS)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const primaryChild = started.primary.child;
    const standbyStarted = started.standby;
    let stopping: Promise<void> | null = null;
    return {
      database,
      baseDir,
      primary: { url: primaryUrl, port: pPort, dataDir: dirs.primary, pid: primaryChild.pid!, readLog: () => readFileSync(dirs.logP, 'utf8') },
      standby: { url: url(standbyStarted.port), port: standbyStarted.port, dataDir: dirs.standby, pid: standbyStarted.child.pid!, readLog: () => readFileSync(dirs.logS, 'utf8') },
      async killPrimary() {
        const pid = primaryChild.pid!;
        const backends = childrenOf(pid);
        const gone = new Promise<void>((r) => {
          if (primaryChild.exitCode !== null || primaryChild.signalCode !== null) r();
          else primaryChild.once('exit', () => r());
        });
        primaryChild.kill('SIGKILL');
        await gone;
        running.delete(primaryChild);
        // Its backends notice the postmaster's death and exit; none may stay behind.
        const until = Date.now() + 10_000;
        while (backends.some(isAlive) && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
        for (const b of backends.filter(isAlive)) { try { process.kill(b, 'SIGKILL'); } catch { /* gone */ } }
      },
      async promoteStandby() {
        const [cmd, args] = asPostgres(who, [join(POSTGRES_BIN, 'pg_ctl'), '-D', dirs.standby, 'promote', '-w', '-t', '60']);
        const r = spawnSync(cmd, args, { cwd: baseDir, env: cleanEnv(), encoding: 'utf8', timeout: 70_000 });
        if (r.status !== 0) throw new Error(`pg_ctl promote failed (exit ${r.status}):\n${r.stdout}${r.stderr}\n${tail(dirs.logS)}`);
        const until = Date.now() + 30_000;
        for (;;) {
          const [row] = await query<{ r: boolean }>(url(standbyStarted.port), 'SELECT pg_is_in_recovery() AS r');
          if (row?.r === false) return;
          if (Date.now() > until) throw new Error('the promoted standby is still in recovery');
          await new Promise((res) => setTimeout(res, 50));
        }
      },
      stop() {
        stopping ??= (async () => {
          await stopAll();
          rmSync(baseDir, { recursive: true, force: true });
        })();
        return stopping;
      },
    };
  } catch (err) {
    await stopAll();
    rmSync(baseDir, { recursive: true, force: true });
    throw err;
  }
}
