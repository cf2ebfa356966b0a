/**
 * Conformance with rbldnsd (Debian package rbldnsd): a zone of a few thousand random listings (IPv4 singles and
 * CIDRs, exclusions inside and around them, IPv6 networks and hosts, several codes and TXT templates) is exported
 * with writeRbldnsdFiles and loaded into rbldnsd; for thousands of addresses, listed and not, both servers must
 * give the same rcode, A records and TXT strings. The BIND export of the same zone must pass named-checkzone
 * (bind9-utils). Both tools are required: CI installs them.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import dnsPacket from 'dns-packet';
import { DnsblServer, buildZone, dnsblName, writeBindZone, writeRbldnsdFiles, type Zone, type ZoneEntry } from '../../src/dnsbl/index.ts';
import { bigintToIpv6, numberToIpv4 } from '../../src/dnsbl/network.ts';

const runFile = promisify(execFile);
const APEX = 'relays.test';

/** Deterministic PRNG (mulberry32), so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.DNSBL_INTEROP_SEED ?? 20260101);
const rnd = prng(SEED);
const int = (n: number): number => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

// Addresses cluster in a few /16s so that random queries hit listings, CIDRs and exclusions alike.
const V4_BASES = [0x0a140000, 0xc0000200 & 0xffff0000, 0xc6336400 & 0xffff0000, 0xcb007100 & 0xffff0000, 0x59a30000];
const V6_BASES = [0x2a010db8_00000000_00000000_00000000n, 0x2a02_0c7f_1234_0000_0000_0000_0000_0000n];
const CODES = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.10'];
const TEMPLATES: Array<string | null> = [
  'Open relay, see http://relays.test/lookup?ip=$',
  'Open proxy $ (code 3)',
  'Costs $$5; see #faq: "quotes" and \\backslash ($)',
  '=Starts with equals $',
  'no address here',
  null,
];

function randomV4(): number {
  return (pick(V4_BASES) + int(65536)) >>> 0;
}

function randomV6(): bigint {
  return pick(V6_BASES) + (BigInt(int(4)) << 64n) + BigInt(int(1 << 16));
}

function makeEntries(): ZoneEntry[] {
  const byNet = new Map<string, ZoneEntry>();
  const add = (e: ZoneEntry): void => { byNet.set(e.network, e); };
  const value = (): { code: string; txt: string | null } => ({ code: pick(CODES), txt: pick(TEMPLATES) });
  for (let i = 0; i < 2200; i++) add({ network: numberToIpv4(randomV4()), ...value() });
  for (let i = 0; i < 250; i++) {
    const p = 20 + int(12);
    const size = 2 ** (32 - p);
    const first = randomV4() - (randomV4() % size);
    add({ network: `${numberToIpv4(first - (first % size))}/${p}`, ...value() });
  }
  for (let i = 0; i < 150; i++) {
    const p = 24 + int(9);
    const size = 2 ** (32 - p);
    const a = randomV4();
    add({ network: p === 32 ? numberToIpv4(a) : `${numberToIpv4(a - (a % size))}/${p}`, excluded: true });
  }
  for (let i = 0; i < 250; i++) {
    const a = randomV6();
    add({ network: bigintToIpv6(a), ...value() });
  }
  for (let i = 0; i < 60; i++) {
    const p = [48, 56, 60, 64, 100, 112, 120][int(7)]!;
    const host = (1n << BigInt(128 - p)) - 1n;
    add({ network: `${bigintToIpv6(randomV6() & ~host)}/${p}`, ...value() });
  }
  for (let i = 0; i < 40; i++) {
    const p = 112 + int(17);
    const host = (1n << BigInt(128 - p)) - 1n;
    const a = randomV6() & ~host;
    add({ network: p === 128 ? bigintToIpv6(a) : `${bigintToIpv6(a)}/${p}`, excluded: true });
  }
  return [...byNet.values()];
}

/** A UDP client that keeps many queries in flight and matches answers by id. */
class Client {
  readonly #sock: UdpSocket = createSocket('udp4');
  readonly #port: number;
  readonly #waiting = new Map<number, (b: Buffer) => void>();
  #id = 0;
  constructor(port: number) {
    this.#port = port;
    this.#sock.on('message', (m) => {
      const id = m.readUInt16BE(0);
      const w = this.#waiting.get(id);
      if (w) { this.#waiting.delete(id); w(m); }
    });
  }
  query(name: string, type: 'A' | 'TXT' | 'SOA'): Promise<dnsPacket.Packet & { rcode?: string }> {
    const id = this.#id = (this.#id + 1) & 0xffff;
    const msg = dnsPacket.encode({ type: 'query', id, questions: [{ type, name, class: 'IN' }] });
    return new Promise((resolve, reject) => {
      const send = (tries: number): void => {
        const t = setTimeout(() => (tries > 0 ? send(tries - 1) : (this.#waiting.delete(id), reject(new Error(`timeout ${name} ${type}`)))), 1000);
        this.#waiting.set(id, (b) => { clearTimeout(t); resolve(dnsPacket.decode(b) as dnsPacket.Packet & { rcode?: string }); });
        this.#sock.send(msg, this.#port, '127.0.0.1');
      };
      send(2);
    });
  }
  close(): void { this.#sock.close(); }
}

function summary(p: dnsPacket.Packet & { rcode?: string }): string {
  const ans = (p.answers ?? []).map((a) => {
    const d = (a as { data: unknown }).data;
    return `${a.type} ${Array.isArray(d) ? d.map(String).join('') : String(d)}`;
  }).sort();
  return `${p.rcode} [${ans.join(' | ')}]`;
}

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

let zone: Zone;
let ours: DnsblServer;
let rbl: ChildProcess | null = null;
let rblPort = 0;
let dir = '';
let rblOutput = '';

async function startRbldnsd(): Promise<void> {
  const files = await writeRbldnsdFiles(zone, dir);
  execFileSync('chown', ['-R', 'rbldns:rbldns', dir]);
  for (let attempt = 0; attempt < 5; attempt++) {
    rblPort = await freeUdpPort();
    rblOutput = '';
    const child = spawn('rbldnsd', ['-n', '-b', `127.0.0.1/${rblPort}`, '-w', dir, '-u', 'rbldns', ...files.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d: Buffer) => { rblOutput += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { rblOutput += d.toString(); });
    const started = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 10_000);
      const check = (): void => { if (/started/.test(rblOutput)) { clearTimeout(t); resolve(true); } };
      child.stdout.on('data', check);
      child.stderr.on('data', check);
      child.on('exit', () => { clearTimeout(t); resolve(false); });
    });
    if (started) { rbl = child; return; }
    child.kill('SIGTERM');
  }
  throw new Error(`rbldnsd did not start:\n${rblOutput}`);
}

before(async () => {
  try {
    execFileSync('rbldnsd', ['-h'], { stdio: 'ignore' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('rbldnsd is not installed: apt-get install -y rbldnsd (CI installs it)');
    }
  }
  zone = buildZone(makeEntries(), { apex: APEX, ns: ['ns.example.net'], soa: { serial: 2026010101, rname: 'hostmaster.example.net' }, ttl: 2100 });
  dir = mkdtempSync(join(tmpdir(), 'dnsbl-rbldnsd-'));
  chmodSync(dir, 0o755);
  await startRbldnsd();
  ours = new DnsblServer({ zone, port: 0 });
  await ours.start();
});

after(async () => {
  if (rbl && rbl.exitCode === null) {
    const exited = new Promise((r) => rbl!.once('exit', r));
    rbl.kill('SIGTERM');
    await exited;
  }
  await ours?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('rbldnsd conformance', () => {
  it('loads our export without warnings', () => {
    assert.doesNotMatch(rblOutput, /warn|error|invalid|ignor/i, rblOutput);
    assert.match(rblOutput, /ip4set:relays\.test\.ip4set/);
    assert.match(rblOutput, /ip6trie:relays\.test\.ip6trie/);
  });

  it('gives the same answers as rbldnsd for thousands of addresses (A and TXT)', async () => {
    const addresses = new Set<string>(['127.0.0.2', '127.0.0.1', '127.0.0.3']);
    // Inside every entry (first, last, one random address) and around it, plus random addresses of the space.
    for (const iv of zone.intervals()) {
      if (iv.family === 4) {
        const f = iv.first as number;
        const l = iv.last as number;
        for (const a of [f - 1, f, l, l + 1, f + int(l - f + 1)]) if (a >= 0 && a <= 0xffffffff) addresses.add(numberToIpv4(a));
      } else {
        const f = iv.first as bigint;
        const l = iv.last as bigint;
        if ((f >> 32n) === 0xffffn) continue; // IPv4-mapped: rbldnsd never answers for these (see export.ts)
        for (const a of [f - 1n, f, l, l + 1n]) addresses.add(bigintToIpv6(a));
      }
      if (addresses.size > 2400) break;
    }
    while (addresses.size < 3200) addresses.add(rnd() < 0.8 ? numberToIpv4(randomV4()) : bigintToIpv6(randomV6()));

    const a = new Client(ours.port);
    const b = new Client(rblPort);
    const mismatches: string[] = [];
    let listed = 0;
    try {
      const list = [...addresses];
      const batch = 64;
      for (let i = 0; i < list.length; i += batch) {
        await Promise.all(list.slice(i, i + batch).flatMap((addr) => (['A', 'TXT'] as const).map(async (type) => {
          const name = dnsblName(addr, APEX)!;
          const [x, y] = await Promise.all([a.query(name, type), b.query(name, type)]);
          const sx = summary(x);
          const sy = summary(y);
          if (type === 'A' && x.answers?.length) listed++;
          if (sx !== sy && mismatches.length < 20) mismatches.push(`${addr} ${type}: ours ${sx} rbldnsd ${sy}`);
        })));
      }
    } finally {
      a.close();
      b.close();
    }
    assert.deepEqual(mismatches, []);
    assert.ok(listed > 800, `only ${listed} listed addresses compared`);
    assert.ok(listed < addresses.size - 800, 'too few unlisted addresses compared');
  });

  it('serves the same SOA', async () => {
    const a = new Client(ours.port);
    const b = new Client(rblPort);
    try {
      const [x, y] = await Promise.all([a.query(APEX, 'SOA'), b.query(APEX, 'SOA')]);
      assert.equal(summary(x), summary(y));
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('BIND export', () => {
  it('passes named-checkzone', async () => {
    const path = join(dir, 'relays.test.zone');
    await writeBindZone(zone, path);
    let out: { stdout: string; stderr: string };
    try {
      out = await runFile('named-checkzone', ['-i', 'local', APEX, path], { timeout: 20_000 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new Error('named-checkzone is not installed: apt-get install -y bind9-utils (CI installs it)');
      }
      throw err;
    }
    assert.match(out.stdout, /loaded serial 2026010101/);
    assert.match(out.stdout, /^OK$/m);
  });
});
