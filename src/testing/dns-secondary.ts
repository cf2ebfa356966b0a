/**
 * Real DNS secondaries for tests: BIND 9 (`named`), NSD and Knot from Debian, each started in its own temp
 * directory with its own configuration, on 127.0.0.1 and an ephemeral port, as a secondary of one zone served by
 * a primary on loopback (the ORDB). Never the system services: the daemon runs in the foreground as a child of
 * the test and is stopped (SIGTERM, then SIGKILL) by stop(), which also removes the directory.
 *
 * What a test reads: the serial the secondary serves (SOA over UDP), answers (dig), and the daemon's log, where
 * each one says whether a transfer was incremental (IXFR) or whole (AXFR).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.ts';

const run = promisify(execFile);

export type SecondaryKind = 'bind' | 'nsd' | 'knot';

export interface TsigKey {
  readonly name: string;
  /** hmac-sha256 */
  readonly algorithm: 'hmac-sha256';
  readonly secret: string;
}

export interface SecondaryOptions {
  readonly kind: SecondaryKind;
  readonly zone: string;
  readonly primary: { readonly address: string; readonly port: number };
  /** Sign transfer requests (and accept NOTIFY) with this key. */
  readonly tsig?: TsigKey | undefined;
  /** Port on 127.0.0.1 (UDP and TCP); default a free one. */
  readonly port?: number | undefined;
}

export interface Secondary {
  readonly kind: SecondaryKind;
  readonly port: number;
  readonly dir: string;
  /** The serial it serves, or null while it has no zone. */
  serial(): Promise<number | null>;
  /** `dig +short` against it. */
  dig(name: string, type: string): Promise<string[]>;
  /** The daemon's log so far. */
  log(): string;
  stop(): Promise<void>;
}

const BINARIES: Record<SecondaryKind, string> = { bind: '/usr/sbin/named', nsd: '/usr/sbin/nsd', knot: '/usr/sbin/knotd' };
const PACKAGES: Record<SecondaryKind, string> = { bind: 'bind9', nsd: 'nsd', knot: 'knot' };

export function requireSecondary(kind: SecondaryKind): void {
  try {
    accessSync(BINARIES[kind], fsConstants.X_OK);
  } catch {
    throw new Error(`${BINARIES[kind]} is needed by this test: apt-get install ${PACKAGES[kind]} (scripts/peers.sh lists it)`);
  }
}

export async function startSecondary(o: SecondaryOptions): Promise<Secondary> {
  requireSecondary(o.kind);
  const dir = mkdtempSync(join(tmpdir(), `relayguard-${o.kind}-`));
  chmodSync(dir, 0o777); // the daemons may drop privileges
  const port = o.port ?? await freePort();
  const logFile = join(dir, `${o.kind}.log`);
  let args: string[];
  const p = o.primary;
  if (o.kind === 'bind') {
    const key = o.tsig ? `key "${o.tsig.name}" { algorithm ${o.tsig.algorithm}; secret "${o.tsig.secret}"; };\n` : '';
    const withKey = o.tsig ? ` key "${o.tsig.name}"` : '';
    writeFileSync(join(dir, 'named.conf'), `${key}options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  session-keyfile "${dir}/session.key";
  managed-keys-directory "${dir}";
  listen-on port ${port} { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  notify no;
  allow-query { 127.0.0.1; };
};
controls { };
logging {
  channel main { file "${logFile}"; severity info; print-time yes; print-category yes; };
  category default { main; };
  category xfer-in { main; };
  category notify { main; };
  category general { main; };
};
zone "${o.zone}" {
  type secondary;
  file "${dir}/${o.zone}.db";
  primaries port ${p.port} { ${p.address}${withKey}; };
  request-ixfr yes;
  allow-notify { ${p.address}; };
};
`);
    args = ['-f', '-c', join(dir, 'named.conf'), '-n', '1'];
  } else if (o.kind === 'nsd') {
    const key = o.tsig ? `key:\n  name: "${o.tsig.name}"\n  algorithm: ${o.tsig.algorithm}\n  secret: "${o.tsig.secret}"\n` : '';
    const k = o.tsig ? o.tsig.name : 'NOKEY';
    writeFileSync(join(dir, 'nsd.conf'), `server:
  ip-address: 127.0.0.1@${port}
  do-ip6: no
  port: ${port}
  zonesdir: "${dir}"
  database: ""
  zonelistfile: "${dir}/zone.list"
  xfrdfile: "${dir}/xfrd.state"
  xfrdir: "${dir}"
  pidfile: "${dir}/nsd.pid"
  logfile: "${logFile}"
  username: ""
  chroot: ""
  server-count: 1
  verbosity: 2
  hide-version: yes
remote-control:
  control-enable: no
${key}zone:
  name: "${o.zone}"
  zonefile: "${o.zone}.zone"
  allow-notify: ${p.address} ${k}
  request-xfr: ${p.address}@${p.port} ${k}
  allow-axfr-fallback: yes
`);
    args = ['-d', '-c', join(dir, 'nsd.conf')];
  } else {
    const key = o.tsig ? `key:\n  - id: ${o.tsig.name}\n    algorithm: ${o.tsig.algorithm}\n    secret: ${o.tsig.secret}\n` : '';
    writeFileSync(join(dir, 'knot.conf'), `server:
  rundir: "${dir}"
  listen: 127.0.0.1@${port}
  user: root:root
log:
  - target: "${logFile}"
    any: info
${key}database:
  storage: "${dir}/db"
remote:
  - id: primary
    address: ${p.address}@${p.port}
${o.tsig ? `    key: ${o.tsig.name}\n` : ''}acl:
  - id: notify_from_primary
    address: ${p.address}
    action: notify
${o.tsig ? `    key: ${o.tsig.name}\n` : ''}template:
  - id: default
    storage: "${dir}"
zone:
  - domain: ${o.zone}
    master: primary
    acl: notify_from_primary
    file: "${dir}/${o.zone}.zone"
    zonefile-load: none
    journal-content: changes
`);
    mkdirSync(join(dir, 'db'), { recursive: true }); // Knot's journal: without it an IXFR cannot be stored
    args = ['-c', join(dir, 'knot.conf')];
  }
  writeFileSync(logFile, '');
  const child: ChildProcess = spawn(BINARIES[o.kind], args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  const logText = (): string => {
    let f = '';
    try { f = readFileSync(logFile, 'utf8'); } catch { /* not yet */ }
    return `${f}${output}`;
  };
  const dig = async (name: string, type: string): Promise<string[]> => {
    const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), '+time=1', '+tries=1', '+short', '+nocookie', name, type], { timeout: 5000 }).catch(() => ({ stdout: '' }));
    return stdout.split('\n').filter((l) => l.trim() !== '' && !l.startsWith(';'));
  };
  const stop = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // Up when it answers anything on its port (REFUSED/SERVFAIL included).
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited) {
      const text = logText();
      await stop();
      throw new Error(`${o.kind} exited at start:\n${text.slice(-3000)}`);
    }
    const r = await run('dig', ['@127.0.0.1', '-p', String(port), '+time=1', '+tries=1', '+nocookie', o.zone, 'SOA'], { timeout: 5000 }).catch(() => null);
    if (r && /status: /.test(r.stdout)) break;
    if (Date.now() > deadline) {
      const text = logText();
      await stop();
      throw new Error(`${o.kind} did not answer within 15 s:\n${text.slice(-3000)}`);
    }
    await new Promise((res) => setTimeout(res, 200));
  }
  return {
    kind: o.kind,
    port,
    dir,
    async serial() {
      const soa = (await dig(o.zone, 'SOA'))[0];
      return soa ? Number(soa.split(' ')[2]) : null;
    },
    dig,
    log: logText,
    stop,
  };
}
