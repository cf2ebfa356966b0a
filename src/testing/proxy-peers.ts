/**
 * Real proxies from Debian for the open-proxy tests and benchmark: squid (open: `http_access allow all`; default:
 * the Debian squid.conf access rules), tinyproxy (open to loopback, or allowing only 127.0.0.1) and dante's danted
 * (SOCKS4/5 without authentication, or SOCKS5 with username/password only). Each runs in the foreground in its own
 * process group with its own config in a temp dir, on a free loopback port; stop() ends that group (SIGTERM, then
 * SIGKILL) and removes the dir. Never the system services, never a pattern kill.
 * DNS: a peer that must resolve a name is pointed at `dnsServer` (a loopback fake), never at the system resolver.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import { freePort } from './ports.ts';

export interface ProxyPeer {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly dir: string;
  readonly pid: number;
  /** The peer's log so far (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

export const SQUID = '/usr/sbin/squid';
export const TINYPROXY = '/usr/bin/tinyproxy';
export const DANTED = '/usr/sbin/danted';

function waitListening(address: string, port: number, child: ChildProcess, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) { reject(new Error(`peer exited (${child.exitCode ?? child.signalCode}) before listening on ${address}:${port}\n${log()}`)); return; }
      const s = net.connect({ host: address, port });
      s.once('connect', () => { s.destroy(); resolve(); });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline) { reject(new Error(`peer not listening on ${address}:${port} after ${timeoutMs} ms\n${log()}`)); return; }
        setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

async function stopGroup(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try { process.kill(-child.pid, 'SIGTERM'); } catch { /* gone */ }
  const t = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, 3000);
  await exited;
  clearTimeout(t);
  // children left in the group (dante's helpers) go too
  try { process.kill(-child.pid, 'SIGKILL'); } catch { /* none left */ }
}

async function launch(name: string, file: string, args: string[], dir: string, address: string, port: number, logFiles: string[]): Promise<ProxyPeer> {
  let out = '';
  const child = spawn(file, args, { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { if (out.length < 65536) out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { if (out.length < 65536) out += d; });
  const log = (): string => `--- ${name} output\n${out}${logFiles.filter((f) => existsSync(f)).map((f) => `--- ${f}\n${readFileSync(f, 'utf8').slice(-4000)}`).join('\n')}`;
  try {
    await waitListening(address, port, child, 15_000, log);
  } catch (err) {
    await stopGroup(child);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    name, address, port, dir, pid: child.pid!, log,
    stop: async () => { await stopGroup(child); rmSync(dir, { recursive: true, force: true }); },
  };
}

function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `rg-${name}-`));
  chmodSync(dir, 0o777); // the peers drop privileges (proxy, nobody) and write logs here
  return dir;
}

export interface SquidOptions {
  /** 'open': http_access allow all. 'default': Debian's squid.conf access rules (localhost allowed, the rest denied). */
  readonly mode: 'open' | 'default';
  readonly address?: string;
  /** A loopback DNS server for names (squid never uses the system resolver here). */
  readonly dnsServer?: string;
}

export async function startSquid(o: SquidOptions): Promise<ProxyPeer> {
  const address = o.address ?? '127.0.0.1';
  const port = await freePort();
  const dir = tempDir('squid');
  const access = o.mode === 'open'
    ? ['http_access allow all']
    : [
      'acl SSL_ports port 443',
      'acl Safe_ports port 80', 'acl Safe_ports port 21', 'acl Safe_ports port 443', 'acl Safe_ports port 70', 'acl Safe_ports port 210',
      'acl Safe_ports port 1025-65535', 'acl Safe_ports port 280', 'acl Safe_ports port 488', 'acl Safe_ports port 591', 'acl Safe_ports port 777',
      'http_access deny !Safe_ports', 'http_access deny CONNECT !SSL_ports', 'http_access allow localhost manager', 'http_access deny manager',
      'http_access allow localhost', 'http_access deny all',
    ];
  const conf = [
    `http_port ${address}:${port}`,
    ...access,
    `pid_filename ${dir}/squid.pid`,
    `cache_log ${dir}/cache.log`,
    `access_log ${dir}/access.log`,
    'cache_store_log none',
    'cache deny all',
    `coredump_dir ${dir}`,
    'netdb_filename none',
    'pinger_enable off',
    'shutdown_lifetime 0 seconds',
    'cache_effective_user proxy',
    `dns_nameservers ${o.dnsServer ?? '127.0.0.1'}`,
    'dns_timeout 2 seconds',
    'forward_timeout 10 seconds',
    'connect_timeout 5 seconds',
    'icp_port 0',
    'htcp_port 0',
    'via on',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'squid.conf'), conf);
  return launch(`squid (${o.mode})`, SQUID, ['-N', '-f', join(dir, 'squid.conf')], dir, address, port, [join(dir, 'cache.log')]);
}

export interface TinyproxyOptions {
  /** 'open': Allow 127.0.0.0/8. 'closed': Allow 127.0.0.1 only (a tester from 127.0.0.2 is refused). */
  readonly mode: 'open' | 'closed';
  readonly address?: string;
}

export async function startTinyproxy(o: TinyproxyOptions): Promise<ProxyPeer> {
  const address = o.address ?? '127.0.0.1';
  const port = await freePort();
  const dir = tempDir('tinyproxy');
  const conf = [
    'User nobody',
    'Group nogroup',
    `Port ${port}`,
    `Listen ${address}`,
    'Timeout 30',
    `LogFile "${dir}/tinyproxy.log"`,
    'LogLevel Info',
    'MaxClients 100',
    o.mode === 'open' ? 'Allow 127.0.0.0/8' : 'Allow 127.0.0.1',
    'Allow ::1',
    'DisableViaHeader No',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'tinyproxy.conf'), conf);
  return launch(`tinyproxy (${o.mode})`, TINYPROXY, ['-d', '-c', join(dir, 'tinyproxy.conf')], dir, address, port, [join(dir, 'tinyproxy.log')]);
}

export interface DanteOptions {
  /** 'open': SOCKS4/5 without authentication. 'username': SOCKS5 with username/password only. */
  readonly mode: 'open' | 'username';
  readonly address?: string;
  /** The address it connects out from (its egress). Default the listen address. */
  readonly external?: string;
  /** Also connect out over IPv6 from ::1. Default true. */
  readonly ipv6?: boolean;
}

export async function startDante(o: DanteOptions): Promise<ProxyPeer> {
  const address = o.address ?? '127.0.0.1';
  const port = await freePort();
  const dir = tempDir('danted');
  const method = o.mode === 'open' ? 'none' : 'username';
  const conf = [
    `logoutput: ${dir}/danted.log`,
    `internal: ${address} port = ${port}`,
    `external: ${o.external ?? address}`,
    ...(o.ipv6 === false ? [] : ['external: ::1']),
    'clientmethod: none',
    `socksmethod: ${method}`,
    'user.privileged: root',
    'user.unprivileged: nobody',
    'timeout.negotiate: 10',
    'client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }',
    'client pass { from: ::1/128 to: ::/0 }',
    `socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }`,
    `socks pass { from: 0.0.0.0/0 to: ::/0 command: connect }`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'danted.conf'), conf);
  return launch(`danted (${o.mode})`, DANTED, ['-f', join(dir, 'danted.conf'), '-p', join(dir, 'danted.pid'), '-N', '1'], dir, address, port, [join(dir, 'danted.log')]);
}
