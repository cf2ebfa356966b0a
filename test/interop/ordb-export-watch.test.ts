/**
 * `relayguard dnsbl export --watch` feeding rbldnsd (Debian package rbldnsd), as an rsync-style mirror would be fed:
 * the exporter runs as a child process (`relayguard dnsbl export --format rbldnsd --watch`), rbldnsd serves its
 * files and checks them every second (-c 1). A listing added to the store after both started is exported again
 * (atomic replace) and rbldnsd answers for it on its own, without a signal; a delisting disappears the same way.
 * (That two exports within one second both reach rbldnsd, which compares whole-second modification times, is
 * checked deterministically in src/cli/export-watch.test.ts.) rbldnsd missing: the test fails (never skips).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { promises as dnsPromises } from 'node:dns';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListingStore } from '../../src/dnsbl/index.ts';
import { CLI, NODE } from '../../src/testing/serve-process.ts';

let dir = '';
let out = '';
let store: ListingStore;
let exporter: ChildProcess | null = null;
let exporterExit: Promise<number | null> = Promise.resolve(null);
const exports: { serial: number; files: string[]; args: string[] }[] = [];
let exporterErr = '';
let rbl: ChildProcess | null = null;
let rblOutput = '';
let rblPort = 0;

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}\nexporter: ${exporterErr}\nrbldnsd: ${rblOutput}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

/** What rbldnsd answers for an IPv4 address: its A records, or the DNS error code. */
async function ask(ip: string): Promise<string> {
  const r = new dnsPromises.Resolver({ timeout: 1000, tries: 1 });
  r.setServers([`127.0.0.1:${rblPort}`]);
  try {
    return (await r.resolve4(`${ip.split('.').reverse().join('.')}.relays.test`)).join(',');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

before(async () => {
  try {
    execFileSync('rbldnsd', ['-h'], { stdio: 'ignore' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('rbldnsd is not installed: apt-get install -y rbldnsd (CI installs it)');
  }
  dir = mkdtempSync(join(tmpdir(), 'relayguard-export-watch-'));
  chmodSync(dir, 0o755);
  const config = join(dir, 'relayguard.yaml');
  writeFileSync(config, 'dataDir: ./data\ndnsbl:\n  zone: relays.test\n');
  mkdirSync(join(dir, 'data'), { mode: 0o700 });
  store = ListingStore.open(join(dir, 'data', 'relayguard.db'));
  store.add({ network: '127.0.0.5', reason: 'Listed before the export started' });
  out = join(dir, 'zone');
  mkdirSync(out, { mode: 0o755 });
  exporter = spawn(NODE, [CLI, 'dnsbl', 'export', '-c', config, '--format', 'rbldnsd', '--out', out, '--watch', '--interval', '0.2', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  exporterExit = new Promise((r) => exporter!.once('exit', (code) => r(code)));
  let buf = '';
  exporter.stdout!.setEncoding('utf8');
  exporter.stdout!.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      exports.push(JSON.parse(buf.slice(0, i)) as (typeof exports)[number]);
      buf = buf.slice(i + 1);
    }
  });
  exporter.stderr!.on('data', (d: Buffer) => { exporterErr += d.toString(); });
  await until('the first export', () => exports.length >= 1);
  const args = exports[0]!.args;
  for (let attempt = 0; attempt < 5 && rbl === null; attempt++) {
    rblPort = await freeUdpPort();
    rblOutput = '';
    const child = spawn('rbldnsd', ['-n', '-c', '1', '-b', `127.0.0.1/${rblPort}`, '-w', out, '-u', 'rbldns', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const started = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 10_000);
      const onData = (d: Buffer): void => { rblOutput += d.toString(); if (/started/.test(rblOutput)) { clearTimeout(t); resolve(true); } };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('exit', () => { clearTimeout(t); resolve(false); });
    });
    if (started) rbl = child; else child.kill('SIGTERM');
  }
  assert.ok(rbl, `rbldnsd did not start:\n${rblOutput}`);
});

after(async () => {
  for (const c of [rbl, exporter]) {
    if (c && c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
  }
  store?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('export --watch feeding rbldnsd', () => {
  it('rbldnsd serves the first export', async () => {
    assert.equal(await ask('127.0.0.5'), '127.0.0.2');
    assert.equal(await ask('127.0.0.6'), 'ENOTFOUND');
    assert.equal(exports[0]!.serial, store.serial());
  });

  it('a listing added after the export started is exported again and served by rbldnsd without a reload signal', async (t) => {
    const before = exports.length;
    const inode = statSync(join(out, 'relays.test.ip4set')).ino;
    store.add({ network: '127.0.0.6', reason: 'Listed while the exporter watched' });
    await until('a new export', () => exports.length > before);
    assert.equal(exports.at(-1)!.serial, store.serial());
    assert.notEqual(statSync(join(out, 'relays.test.ip4set')).ino, inode, 'replaced by rename, not rewritten in place');
    const ms = await until('rbldnsd to answer for 127.0.0.6', async () => (await ask('127.0.0.6')) === '127.0.0.2');
    t.diagnostic(`rbldnsd answered for the new listing ${ms} ms after the change (check interval 1 s)`);
    assert.equal(await ask('127.0.0.5'), '127.0.0.2');
  });

  it('a second change right after the first is served too; a delisting disappears', async () => {
    const before = exports.length;
    store.add({ network: '127.0.0.7' });
    await until('an export of 127.0.0.7', () => exports.length > before);
    store.delist('127.0.0.5');
    await until('an export of the delisting', () => exports.at(-1)!.serial === store.serial());
    await until('rbldnsd to forget 127.0.0.5', async () => (await ask('127.0.0.5')) === 'ENOTFOUND');
    assert.equal(await ask('127.0.0.7'), '127.0.0.2');
    assert.equal(await ask('127.0.0.6'), '127.0.0.2');
  });

  it('exports only when the serial moves, and stops cleanly on SIGTERM', async () => {
    const n = exports.length;
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(exports.length, n, 'no change, no export');
    exporter!.kill('SIGTERM');
    assert.equal(await exporterExit, 0, exporterErr);
  });
});
