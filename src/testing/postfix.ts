/**
 * Private Postfix instances for tests and benchmarks (see /work/shared/peers.md section 1).
 *
 * Each instance has its own config_directory, queue_directory and data_directory under one temp dir, a single
 * smtpd listener on 127.0.0.1:<port> (plus the same port on any `listenAddresses`), no chroot, and its log in
 * `<base>/maillog`. The system instance in
 * /etc/postfix is neither read at run time nor changed: main.cf and master.cf are copied, then edited with
 * `postconf -c`. Several instances coexist (distinct queue dirs, data dirs hence master.lock files, and ports).
 * Needs root (Postfix's master must start as root) and the Debian postfix package.
 *
 * DNS: Postfix's resolver (libc, /etc/resolv.conf, port 53 only) has no port setting. With `nameserver`, the
 * instance's smtpd processes run chrooted in the queue directory (Debian's own default for smtpd) and the
 * chroot's etc/resolv.conf names that loopback address, so DNSBL lookups (reject_rbl_client) go to a test DNS
 * server listening on <nameserver>:53; the system /etc/resolv.conf and the system Postfix are never touched.
 *
 * Mail for the relay domains (default peers.test) is accepted from anyone, then discarded ('discard') or relayed
 * to a loopback next hop ('relay-to'); every other domain gets `554 5.7.1 Relay access denied`, even from
 * 127.0.0.1 (no permit_mynetworks), and default_transport is an error transport as a second lock.
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants as fsConstants, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { freePort } from './ports.ts';

const execFileAsync = promisify(execFile);

const POSTFIX = '/usr/sbin/postfix';
const POSTCONF = '/usr/sbin/postconf';
const SMTP_SOURCE = '/usr/sbin/smtp-source';
const SYSTEM_CONFIG_DIR = '/etc/postfix';

export interface PostfixOptions {
  /** Domains accepted from anyone (relay_domains). Default ['peers.test']. */
  relayDomains?: string[];
  /** 'discard': accept then drop. 'relay-to': forward to relayHost over SMTP. */
  mode: 'discard' | 'relay-to';
  /** Next hop for 'relay-to': "127.0.0.1:PORT" or "[127.0.0.1]:PORT" (loopback IPv4 only). */
  relayHost?: string;
  /** Listener port on 127.0.0.1. Default: a free ephemeral port. */
  port?: number;
  /** More main.cf settings, applied last (they override the helper's own). */
  extraMain?: Record<string, string>;
  /** More loopback addresses smtpd listens on (same port); add them to proxy_interfaces to make their literals local. */
  listenAddresses?: string[];
  /**
   * A loopback IPv4 address whose port 53 serves DNS for this instance's smtpd (DNSBL lookups): smtpd then runs
   * chrooted in the queue directory with its own etc/resolv.conf.
   */
  nameserver?: string;
}

export interface PostfixInstance {
  port: number;
  configDir: string;
  queueDir: string;
  dataDir: string;
  /** The instance's maillog_file. */
  logFile: string;
  /** The temp dir holding everything above; removed by stop(). */
  baseDir: string;
  /** The unique token at the end of the 220 banner ("220 host ESMTP Postfix-peer <token>"). */
  bannerToken: string;
  /** Reads the maillog ('' if none yet). */
  readLog(): Promise<string>;
  /** Stops master and its children, then removes baseDir. Safe to call twice. */
  stop(): Promise<void>;
}

/** True if `name` is an executable file: a path, or a name found on PATH, /usr/sbin or /sbin. */
export function hasBinary(name: string): boolean {
  if (name === '') return false;
  const candidates = name.includes('/')
    ? [name]
    : [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/local/sbin', '/usr/sbin', '/sbin'].map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, fsConstants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

/** PIDs of live (non-zombie) processes started for this config directory (master and children carry MAIL_CONFIG). */
export function postfixProcesses(configDir: string): number[] {
  const wanted = `MAIL_CONFIG=${configDir}`;
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return pids;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      const env = readFileSync(`/proc/${e}/environ`, 'latin1');
      if (!env.split('\0').includes(wanted)) continue;
      if (isZombieOrGone(pid)) continue;
      pids.push(pid);
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

function isZombieOrGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // "pid (comm) S ...": the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function run(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  try {
    return await execFileAsync(cmd, args, { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr || e.stdout || e.message).trim()}`, { cause: err });
  }
}

function parseRelayHost(relayHost: string | undefined): string {
  const m = /^\[?(127\.\d{1,3}\.\d{1,3}\.\d{1,3})\]?:(\d{1,5})$/.exec(relayHost ?? '');
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new Error(`relay-to needs relayHost "127.x.y.z:PORT" (loopback only), got ${JSON.stringify(relayHost)}`);
  }
  return `[${m[1]}]:${m[2]}`;
}

const DOMAIN = /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/;

/** Reads one line (the greeting) from 127.0.0.1:port, then QUITs. Resolves null on any failure. */
function readGreeting(port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (v: string | null): void => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      if (v !== null && !socket.destroyed) socket.end('QUIT\r\n');
      else socket.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\r\n');
      if (i >= 0) done(buf.slice(0, i));
    });
    socket.on('error', () => done(null));
    socket.on('close', () => done(null));
  });
}

/** Starts a private Postfix instance; resolves once its smtpd answers 220 on 127.0.0.1:port. */
export async function startPostfix(options: PostfixOptions): Promise<PostfixInstance> {
  if (process.getuid?.() !== 0) throw new Error('startPostfix needs root (Postfix master must start as root)');
  for (const b of [POSTFIX, POSTCONF]) if (!hasBinary(b)) throw new Error(`${b} not found: install the Debian postfix package`);
  const relayDomains = options.relayDomains ?? ['peers.test'];
  for (const d of relayDomains) if (!DOMAIN.test(d)) throw new Error(`bad relay domain ${JSON.stringify(d)}`);
  const relayTransport = options.mode === 'relay-to' ? `relay:${parseRelayHost(options.relayHost)}` : 'discard:';
  if (options.mode !== 'relay-to' && options.relayHost !== undefined) throw new Error('relayHost is only for mode relay-to');
  for (const [k, v] of Object.entries(options.extraMain ?? {})) {
    if (!/^[a-z0-9_]+$/.test(k) || /[\r\n]/.test(v)) throw new Error(`bad extraMain entry ${JSON.stringify(k)}`);
  }
  for (const a of [...(options.listenAddresses ?? []), ...(options.nameserver !== undefined ? [options.nameserver] : [])]) {
    if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a)) throw new Error(`listenAddresses and nameserver take loopback IPv4 addresses, got ${JSON.stringify(a)}`);
  }
  if (options.port !== undefined) return startOnce(options, options.port, relayDomains, relayTransport);
  // An ephemeral port can be taken between freePort() and master's bind(): retry with a new one.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      return await startOnce(options, port, relayDomains, relayTransport);
    } catch (err) {
      lastError = err;
      if (!(err instanceof PortInUseError)) throw err;
    }
  }
  throw lastError;
}

class PortInUseError extends Error {}

/** True if something already listens on 127.0.0.1:port (we cannot bind it). */
function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE'));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(false)));
  });
}

async function startOnce(options: PostfixOptions, port: number, relayDomains: string[], relayTransport: string): Promise<PostfixInstance> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port ${port}`);
  const baseDir = await mkdtemp(join(tmpdir(), 'relayguard-postfix-'));
  await chmod(baseDir, 0o755); // the postfix user must traverse it to reach the queue
  const configDir = join(baseDir, 'etc');
  const queueDir = join(baseDir, 'queue');
  const dataDir = join(baseDir, 'data');
  const logFile = join(baseDir, 'maillog');
  const bannerToken = `rg-${randomBytes(6).toString('hex')}`;
  let stopped = false;
  const exitHook = (): void => {
    // Last resort when the test process exits without stop(): don't leave a master behind.
    spawnSync(POSTFIX, ['-c', configDir, 'abort'], { stdio: 'ignore', timeout: 5000 });
    for (const pid of postfixProcesses(configDir)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    rmSync(baseDir, { recursive: true, force: true });
  };
  process.on('exit', exitHook);

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.off('exit', exitHook);
    try {
      await stopMaster(configDir, queueDir);
    } finally {
      await rm(baseDir, { recursive: true, force: true });
    }
  };

  try {
    await mkdir(configDir, { mode: 0o755 });
    await mkdir(queueDir, { mode: 0o755 });
    await copyFile(join(SYSTEM_CONFIG_DIR, 'main.cf'), join(configDir, 'main.cf'));
    await copyFile(join(SYSTEM_CONFIG_DIR, 'master.cf'), join(configDir, 'master.cf'));
    const settings: Record<string, string> = {
      queue_directory: queueDir,
      data_directory: dataDir,
      syslog_name: `postfix-${bannerToken}`,
      maillog_file: logFile,
      maillog_file_prefixes: baseDir,
      inet_interfaces: '127.0.0.1',
      inet_protocols: 'ipv4',
      mydestination: '',
      mynetworks: '127.0.0.0/8',
      relay_domains: relayDomains.join(', '),
      relay_transport: relayTransport,
      default_transport: 'error:outbound mail disabled on this test box',
      relayhost: '',
      smtpd_relay_restrictions: 'reject_unauth_destination',
      smtpd_recipient_restrictions: '',
      smtpd_peername_lookup: 'no',
      smtp_dns_support_level: 'disabled',
      smtp_host_lookup: 'native',
      smtpd_banner: `$myhostname ESMTP Postfix-peer ${bannerToken}`,
      alias_maps: '',
      alias_database: '',
      smtpd_tls_security_level: 'none',
      smtp_tls_security_level: 'none',
      ...options.extraMain,
    };
    // Postfix refuses to trust a main.cf modified less than ~2 s ago: every command re-reads it in 300 ms steps
    // until it is older (dict_load_file). Backdating both files after each edit saves ~2.4 s per start.
    const postconf = async (...args: string[]): Promise<string> => {
      const { stdout } = await run(POSTCONF, ['-c', configDir, ...args]);
      const past = new Date(Date.now() - 60_000);
      await utimes(join(configDir, 'main.cf'), past, past);
      await utimes(join(configDir, 'master.cf'), past, past);
      return stdout;
    };
    await postconf('-e', ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`));
    // Drop every inet service of the copied master.cf (smtp on :25, any submission ...), add ours.
    for (const line of (await postconf('-M')).split('\n')) {
      const [name, type] = line.trim().split(/\s+/);
      if (name && type === 'inet') await postconf('-MX', `${name}/inet`);
    }
    await postconf('-F', '*/*/chroot = n');
    const chroot = options.nameserver !== undefined ? 'y' : 'n';
    for (const address of ['127.0.0.1', ...(options.listenAddresses ?? [])]) {
      await postconf('-M', `${address}:${port}/inet = ${address}:${port} inet n - ${chroot} - - smtpd`);
    }
    if (options.nameserver !== undefined) {
      // The chrooted smtpd's libc reads <queue_directory>/etc/resolv.conf: only the test's DNS server.
      await mkdir(join(queueDir, 'etc'), { mode: 0o755 });
      await writeFile(join(queueDir, 'etc', 'resolv.conf'), `nameserver ${options.nameserver}\noptions timeout:2 attempts:2\n`, { mode: 0o644 });
    }
    // `postfix start` runs post-install create-missing: it creates the queue subdirectories and data_directory.
    await run(POSTFIX, ['-c', configDir, 'start']);
    await waitForBanner(port, bannerToken, logFile, 20_000);
  } catch (err) {
    const log = await readFile(logFile, 'utf8').catch(() => '');
    await stop().catch(() => {});
    // master's own "fatal: bind ... Address already in use" is lost (postlogd is not up yet), so probe the port.
    const inUse = /Address already in use/i.test(log) || (await portInUse(port));
    const tail = log.split('\n').slice(-15).join('\n');
    const message = `private Postfix failed to start on 127.0.0.1:${port}${inUse ? ' (port already in use)' : ''}: ${(err as Error).message}\n${tail}`;
    throw inUse ? new PortInUseError(message, { cause: err }) : new Error(message, { cause: err });
  }

  return {
    port,
    configDir,
    queueDir,
    dataDir,
    logFile,
    baseDir,
    bannerToken,
    readLog: () => readFile(logFile, 'utf8').catch(() => ''),
    stop,
  };
}

async function waitForBanner(port: number, token: string, logFile: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string | null = null;
  while (Date.now() < deadline) {
    last = await readGreeting(port, 2000);
    if (last !== null) {
      if (/^220 /.test(last) && last.endsWith(` ${token}`)) return;
      throw new Error(`port ${port} answered with someone else's greeting: ${JSON.stringify(last)}`);
    }
    const log = await readFile(logFile, 'utf8').catch(() => '');
    if (/fatal: bind .*Address already in use/i.test(log)) throw new Error('Address already in use');
    await sleep(100);
  }
  throw new Error(`no 220 greeting within ${timeoutMs} ms`);
}

async function readMasterPid(queueDir: string): Promise<number | null> {
  try {
    const pid = Number((await readFile(join(queueDir, 'pid', 'master.pid'), 'latin1')).trim());
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

async function waitUntil(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (predicate()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

async function stopMaster(configDir: string, queueDir: string): Promise<void> {
  const masterPid = await readMasterPid(queueDir);
  await run(POSTFIX, ['-c', configDir, 'stop']).catch(() => {}); // "not running" is fine
  // `postfix stop` returns at once; master then stops its children and exits. The exited master can linger as a
  // zombie until init reaps it, so "gone" means absent or a zombie.
  const masterGone = (): boolean => masterPid === null || isZombieOrGone(masterPid);
  if (!(await waitUntil(masterGone, 10_000)) && masterPid !== null) {
    try { process.kill(masterPid, 'SIGKILL'); } catch { /* gone */ }
  }
  if (!(await waitUntil(() => postfixProcesses(configDir).length === 0, 5_000))) {
    for (const pid of postfixProcesses(configDir)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    await waitUntil(() => postfixProcesses(configDir).length === 0, 2_000);
  }
}

export interface SmtpSourceOptions {
  /** Port on 127.0.0.1: smtp-source is only ever pointed at the loopback interface. */
  port: number;
  /** Parallel sessions (-s). */
  sessions: number;
  /** Total messages (-m). */
  messages: number;
  /** Body bytes per message (-l), headers not included. */
  size: number;
  /** Send every message of a session over one connection (-d). */
  reuse: boolean;
  from: string;
  to: string;
  /** Kill smtp-source after this long. Default 10 minutes. */
  timeoutMs?: number;
}

const ADDRESS = /^[A-Za-z0-9._+=-]+@[A-Za-z0-9.-]+$/;

/**
 * Runs /usr/sbin/smtp-source against 127.0.0.1:port and times the whole run. Rejects when smtp-source fails
 * (it aborts on the first unexpected reply). msgs/s = messages / (wallMs / 1000).
 */
export async function smtpSource(options: SmtpSourceOptions & { host?: string }): Promise<{ wallMs: number; stdout: string; stderr: string }> {
  if (options.host !== undefined && options.host !== '127.0.0.1') {
    throw new Error(`smtpSource only targets 127.0.0.1, refusing ${JSON.stringify(options.host)}`);
  }
  const positive = (n: number): boolean => Number.isInteger(n) && n >= 1;
  if (!positive(options.port) || options.port > 65535) throw new Error(`bad port ${options.port}`);
  if (!positive(options.sessions) || !positive(options.messages)) throw new Error('sessions and messages must be positive integers');
  if (!Number.isInteger(options.size) || options.size < 0) throw new Error('size must be a non-negative integer');
  if (!ADDRESS.test(options.from) || !ADDRESS.test(options.to)) throw new Error('from and to must be plain addresses');
  if (!hasBinary(SMTP_SOURCE)) throw new Error(`${SMTP_SOURCE} not found: install the Debian postfix package`);
  const args = ['-4', '-s', String(options.sessions), '-m', String(options.messages), '-l', String(options.size)];
  if (options.reuse) args.push('-d');
  args.push('-f', options.from, '-t', options.to, `inet:127.0.0.1:${options.port}`);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(SMTP_SOURCE, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { if (stdout.length < 65536) stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 65536) stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const wallMs = performance.now() - started;
      if (code === 0) resolve({ wallMs, stdout, stderr });
      else reject(new Error(`smtp-source ${args.join(' ')} exited with ${code ?? signal}: ${stderr.trim()}`));
    });
  });
}
