/**
 * A private INN 2 instance (Debian inn2, scripts/peers.sh) for the open-NNTP tests: its own inn.conf (INNCONF) and
 * every path in a temp dir, innd on 127.0.0.1 and an ephemeral port, run as user news, stopped (its whole process
 * group: innd and the nnrpd readers it forks) by stop(). The system instance is never touched.
 *
 * Modes (readers.conf / incoming.conf):
 * - 'open':    any client reads and posts (access RP): an open Usenet server.
 * - 'closed':  any client reads, nobody posts (access R): greeting 201, POST 440.
 * - 'auth':    nobody has access until AUTHINFO (no default identity): 480 to POST and LIST.
 * - 'transit': 127.0.0.1 is a feeding peer (incoming.conf): innd answers IHAVE itself (335); readers may not post.
 *
 * Pitfalls handled: the host name has no domain here (inn.conf sets domain); nnrpd refuses readers with
 * "400 load at N, try later" when the load average passes nnrpdloadlimit (16): 0 turns that off, a loaded CI box
 * would otherwise look like a refusing server; no IPv6 bind; the mta and mailcmd are /bin/true (no mail leaves).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.ts';

export type InnMode = 'open' | 'closed' | 'auth' | 'transit';

export interface InnOptions {
  /** Also run a standalone nnrpd with implicit TLS (nnrpd -D -S, NNTPS) on tlsPort, with this certificate. */
  readonly tls?: { readonly cert: string; readonly key: string };
}

export interface InnInstance {
  readonly port: number;
  /** The NNTPS port (options.tls), else null. */
  readonly tlsPort: number | null;
  readonly dir: string;
  readonly mode: InnMode;
  /** Groups in its active file: local.test (y), local.moderated (m), local.readonly (n), control.*, junk. */
  readonly groups: readonly string[];
  stop(): Promise<void>;
}

const INND = '/usr/lib/news/bin/innd';
const MAKEDBZ = '/usr/lib/news/bin/makedbz';
const NEWS_UID = 9;
const NEWS_GID = 9;

/** True when the Debian inn2 binaries are installed (scripts/peers.sh). */
export function innAvailable(): boolean {
  return existsSync(INND) && existsSync(MAKEDBZ);
}

function readersConf(mode: InnMode): string {
  if (mode === 'auth') return 'auth "all" {\n  hosts: "*"\n}\naccess "all" {\n  users: "nobody-has-this-identity"\n  newsgroups: "*"\n  access: RP\n}\n';
  const access = mode === 'open' ? 'RP' : 'R';
  return `auth "all" {\n  hosts: "*"\n  default: "<stranger>"\n}\naccess "all" {\n  users: "*"\n  newsgroups: "*"\n  access: ${access}\n}\n`;
}

function innConf(dir: string, port: number, tls: boolean): string {
  return [
    ...(tls ? [`tlscertfile: ${dir}/etc/cert.pem`, `tlskeyfile: ${dir}/etc/key.pem`] : []),
    'domain: peers.test', 'pathhost: nntp.peers.test', 'fromhost: peers.test', 'server: 127.0.0.1', 'organization: "relayguard test peer"',
    'mta: "/bin/true %s"', 'mailcmd: /bin/true', 'ovmethod: tradindexed', 'hismethod: hisv6', 'enableoverview: true',
    `port: ${port}`, 'bindaddress: 127.0.0.1', 'docancels: "require-auth"', 'nnrpdloadlimit: 0', 'pgpverify: false', 'artcutoff: 0',
    'readertrack: false', 'nicekids: 0', 'wipcheck: 5', 'checkincludedtext: false', 'logsitename: false',
    'pathnews: /usr/lib/news', 'pathbin: /usr/lib/news/bin', 'pathcontrol: /usr/lib/news/bin/control',
    `pathfilter: ${dir}/etc/filter`, `pathetc: ${dir}/etc`, `pathrun: ${dir}/run`, `pathspool: ${dir}/spool`,
    `patharticles: ${dir}/spool/articles`, `pathoverview: ${dir}/spool/overview`, `pathincoming: ${dir}/spool/incoming`,
    `pathoutgoing: ${dir}/spool/outgoing`, `patharchive: ${dir}/spool/archive`, `pathtmp: ${dir}/spool/incoming/tmp`,
    `pathdb: ${dir}/db`, `pathlog: ${dir}/log`, `pathhttp: ${dir}/http`, '',
  ].join('\n');
}

const ACTIVE = [
  'control 0000000000 0000000001 n', 'control.cancel 0000000000 0000000001 n', 'junk 0000000000 0000000001 n',
  'local.test 0000000000 0000000001 y', 'local.moderated 0000000000 0000000001 m', 'local.readonly 0000000000 0000000001 n', '',
].join('\n');

function chownTree(path: string): void {
  // -R by hand: mkdtemp gives root:root 0700
  chownSync(path, NEWS_UID, NEWS_GID);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { uid: NEWS_UID, gid: NEWS_GID, env, cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${err.trim()}`))));
  });
}

/** Resolves when the port greets (any status line), or rejects after timeoutMs. */
async function waitForGreeting(port: number, timeoutMs: number, child: ChildProcess): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`innd exited with ${child.exitCode} before it listened`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      const done = (v: boolean): void => { s.destroy(); resolve(v); };
      s.setTimeout(2000, () => done(false));
      s.once('data', (d) => done(/^\d{3}/.test(d.toString('latin1'))));
      s.once('error', () => done(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`innd did not greet on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Resolves when the port accepts a TCP connection (a TLS listener says nothing first). */
async function waitForListen(port: number, timeoutMs: number, child: ChildProcess): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nnrpd exited with ${child.exitCode} before it listened`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => { s.destroy(); resolve(false); });
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nnrpd did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts a private innd in a temp dir (and with options.tls a standalone NNTPS nnrpd beside it). */
export async function startInn(mode: InnMode, options: InnOptions = {}): Promise<InnInstance> {
  if (!innAvailable()) throw new Error('INN 2 is not installed: run scripts/peers.sh (Debian package inn2)');
  const dir = mkdtempSync(join(tmpdir(), 'rg-inn-'));
  let child: ChildProcess | null = null;
  let tlsChild: ChildProcess | null = null;
  try {
    for (const d of ['etc', 'etc/filter', 'run', 'spool', 'spool/articles', 'spool/overview', 'spool/incoming', 'spool/incoming/tmp', 'spool/incoming/bad',
      'spool/outgoing', 'spool/archive', 'db', 'log', 'http']) {
      mkdirSync(join(dir, d), { recursive: true });
    }
    const port = await freePort();
    const tlsPort = options.tls ? await freePort() : null;
    const files: Record<string, string> = {
      'etc/inn.conf': innConf(dir, port, options.tls !== undefined),
      ...(options.tls ? { 'etc/cert.pem': options.tls.cert, 'etc/key.pem': options.tls.key } : {}),
      'etc/storage.conf': 'method tradspool {\n  newsgroups: *\n  class: 0\n}\n',
      'etc/newsfeeds': 'ME:*::\n',
      'etc/expire.ctl': '/remember/:11\n*:A:1:10:never\n',
      'etc/incoming.conf': mode === 'transit' ? 'peer strangers {\n  hostname: "127.0.0.1"\n}\n' : '',
      'etc/readers.conf': readersConf(mode),
      'etc/control.ctl': 'all:*:*:drop\n',
      'etc/moderators': '*:%s@moderators.peers.test\n', 'etc/distrib.pats': '', 'etc/passwd.nntp': '', 'etc/nnrpd.track': '',
      'db/active': ACTIVE, 'db/active.times': '', 'db/newsgroups': 'local.test\tTest group\n', 'db/history': '',
    };
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    const all = ['', 'etc', 'etc/filter', 'run', 'spool', 'spool/articles', 'spool/overview', 'spool/incoming', 'spool/incoming/tmp', 'spool/incoming/bad',
      'spool/outgoing', 'spool/archive', 'db', 'log', 'http', ...Object.keys(files)];
    for (const p of all) chownTree(join(dir, p));
    const env = { PATH: '/usr/lib/news/bin:/usr/bin:/bin', INNCONF: join(dir, 'etc/inn.conf'), HOME: dir };
    await run(MAKEDBZ, ['-i', '-o'], env, join(dir, 'db'));
    child = spawn(INND, ['-f'], { uid: NEWS_UID, gid: NEWS_GID, env, cwd: dir, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString(); });
    try {
      await waitForGreeting(port, 15_000, child);
    } catch (err) {
      throw new Error(`${(err as Error).message}; innd stderr: ${stderr.trim()}`);
    }
    if (tlsPort !== null) {
      chmodSync(join(dir, 'etc/key.pem'), 0o600);
      tlsChild = spawn('/usr/lib/news/bin/nnrpd', ['-D', '-f', '-S', '-4', '127.0.0.1', '-p', String(tlsPort)], { uid: NEWS_UID, gid: NEWS_GID, env, cwd: dir, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
      let tlsErr = '';
      tlsChild.stderr!.on('data', (d: Buffer) => { if (tlsErr.length < 4096) tlsErr += d.toString(); });
      try {
        await waitForListen(tlsPort, 15_000, tlsChild);
      } catch (err) {
        throw new Error(`${(err as Error).message}; nnrpd stderr: ${tlsErr.trim()}`);
      }
    }
    const started = child;
    const startedTls = tlsChild;
    return {
      port, tlsPort, dir, mode, groups: ['local.test', 'local.moderated', 'local.readonly'],
      stop: async () => {
        if (startedTls) await stopGroup(startedTls);
        await stopGroup(started);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (tlsChild) await stopGroup(tlsChild);
    if (child) await stopGroup(child);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** SIGTERM to innd's process group (innd and its nnrpd children, all started here), SIGKILL after 5 s. */
async function stopGroup(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try { process.kill(-child.pid, 'SIGTERM'); } catch { /* already gone */ }
  const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, 5000);
  await exited;
  clearTimeout(timer);
  // nnrpd readers of closed connections exit by themselves; any left get the group's SIGKILL
  try { process.kill(-child.pid, 'SIGKILL'); } catch { /* none left */ }
}
