/**
 * nmap's open-proxy scripts (http-open-proxy, socks-open-proxy) run side by side with relayguard's battery, on
 * loopback only: the scripts' default targets (www.google.com, wikipedia, computerhistory.org) are replaced by
 * `proxy.url=http://nmap-target.test/`, a name a loopback fake DNS server (127.0.0.153:53, nmap --dns-servers and
 * squid's dns_nameservers) resolves to a loopback HTTP server (127.0.0.154:80) whose page carries the pattern.
 * (The socks script resolves the name itself with nmap's DNS library, which ignores /etc/hosts and would otherwise
 * ask the system resolver, off the machine.) Ports 53 and 80 on those two addresses must be free; this process
 * needs root to bind them.
 */
import * as http from 'node:http';
import { spawn } from 'node:child_process';
import { startFakeDns, type FakeDns } from './fake-dns.ts';

export const NMAP = '/usr/bin/nmap';
export const NMAP_DNS = '127.0.0.153';
export const NMAP_WEB = '127.0.0.154';
export const NMAP_TARGET_NAME = 'nmap-target.test';
/** Lua patterns treat "-" as a quantifier: the page's marker has none. */
export const NMAP_PATTERN = 'rgnmaptarget';

export interface NmapRig {
  readonly dns: FakeDns;
  close(): Promise<void>;
}

export async function startNmapRig(): Promise<NmapRig> {
  const dns = await startFakeDns({ host: NMAP_DNS, port: 53, zone: { [NMAP_TARGET_NAME]: { A: [NMAP_WEB] } } });
  const web = http.createServer((_q, r) => { r.writeHead(200, { 'Content-Type': 'text/plain' }); r.end(`${NMAP_PATTERN}\n`); });
  try {
    await new Promise<void>((resolve, reject) => { web.once('error', reject); web.listen(80, NMAP_WEB, () => resolve()); });
  } catch (err) {
    await dns.close();
    throw err;
  }
  return { dns, close: async () => { await new Promise<void>((r) => web.close(() => r())); await dns.close(); } };
}

export interface NmapProxyResult {
  /** The script's output block (without the "| " prefixes), or null when the script printed nothing. */
  readonly http: string | null;
  readonly socks: string | null;
  readonly ms: number;
  readonly stdout: string;
}

function block(stdout: string, script: string): string | null {
  const lines = stdout.split('\n');
  const i = lines.findIndex((l) => l.startsWith(`| ${script}:`) || l.startsWith(`|_${script}:`));
  if (i < 0) return null;
  const out = [lines[i]!.replace(/^\|_?\s?/, '')];
  if (lines[i]!.startsWith('|_')) return out.join('\n');
  for (let j = i + 1; j < lines.length && lines[j]!.startsWith('|'); j++) {
    out.push(lines[j]!.replace(/^\|_?\s?/, ''));
    if (lines[j]!.startsWith('|_')) break;
  }
  return out.join('\n');
}

/**
 * Runs both scripts (forced onto the port with "+") against address:port, from sourceAddress when given. url
 * 'ip' gives the target page as http://127.0.0.154/ for proxies that would resolve a name with the system
 * resolver (tinyproxy has no DNS setting): then the socks script cannot resolve it and tests nothing.
 */
export function runNmapProxyScripts(address: string, port: number, options: { sourceAddress?: string; timeoutMs?: number; url?: 'name' | 'ip' } = {}): Promise<NmapProxyResult> {
  const args = [
    '-n', '-Pn', '-sT', '-p', String(port), '--dns-servers', NMAP_DNS,
    '--script', '+http-open-proxy,+socks-open-proxy',
    '--script-args', `proxy.url=http://${options.url === 'ip' ? NMAP_WEB : NMAP_TARGET_NAME}/,proxy.pattern=${NMAP_PATTERN}`,
    ...(options.sourceAddress ? ['-S', options.sourceAddress, '-e', 'lo'] : []),
    address,
  ];
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(NMAP, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.resume();
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', () => {
      clearTimeout(timer);
      resolve({ http: block(stdout, 'http-open-proxy'), socks: block(stdout, 'socks-open-proxy'), ms: Date.now() - t0, stdout });
    });
  });
}

/** nmap's verdict in one word: "open" when either script says so. */
export function nmapSays(r: NmapProxyResult): string {
  const parts: string[] = [];
  if (r.http && /Potentially OPEN/.test(r.http)) parts.push(`http: ${r.http.split('\n').slice(1).join(' ').trim() || 'open'}`);
  if (r.socks && /status: open/.test(r.socks)) parts.push(`socks: open (${[...r.socks.matchAll(/socks\d/g)].map((m) => m[0]).join(', ')})`);
  if (r.socks && /pattern not matched/.test(r.socks)) parts.push('socks: handshake ok, pattern not matched');
  return parts.length > 0 ? parts.join('; ') : 'nothing (not open)';
}
