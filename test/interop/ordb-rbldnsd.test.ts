/**
 * The ORDB's export and the relay's DNSBL consumer against a third-party DNSBL server: listings made with
 * `relayguard dnsbl add|exclude` are exported with `relayguard dnsbl export --format rbldnsd`, served by rbldnsd
 * (Debian package rbldnsd), and consumed by the relay's DNSBL gate: the zone passes the RFC 5782 health check, a
 * listed client is refused at RCPT with rbldnsd's TXT as the reason, an excluded one is accepted. rbldnsd missing:
 * the test fails (never skips).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { loadConfig } from '../../src/config/load.ts';
import { registerDnsblCommands } from '../../src/cli/dnsbl-commands.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import { startGatedRelay, type GatedRelay } from '../e2e/ordb-helpers.ts';

let dir = '';
let rbl: ChildProcess | null = null;
let rblOutput = '';
let relay: GatedRelay;

async function cli(config: string, args: string[]): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  let code = 0;
  const program = new Command('relayguard').exitOverride();
  registerDnsblCommands(program, { out: (s) => out.push(s), err: (s) => out.push(s) }, (c) => { code = c; }, () => loadConfig({ file: config }));
  await program.parseAsync(['dnsbl', ...args], { from: 'user' });
  return { code, out: out.join('\n') };
}

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function rcptFrom(localAddress: string): Promise<string> {
  const c = await p1(relay.ports.mx, { localAddress });
  try {
    await c.cmd('MAIL FROM:<sender@example.org>');
    return (await c.cmd('RCPT TO:<user@local.test>')).lines.join(' ');
  } finally {
    c.close();
  }
}

before(async () => {
  try {
    execFileSync('rbldnsd', ['-h'], { stdio: 'ignore' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('rbldnsd is not installed: apt-get install -y rbldnsd (CI installs it)');
  }
  dir = mkdtempSync(join(tmpdir(), 'relayguard-ordb-rbldnsd-'));
  chmodSync(dir, 0o755);
  const config = join(dir, 'relayguard.yaml');
  writeFileSync(config, 'dataDir: ./data\ndnsbl:\n  zone: relays.test\n');
  assert.equal((await cli(config, ['add', '127.0.0.0/24', '--reason', 'Loopback relays'])).code, 0);
  assert.equal((await cli(config, ['exclude', '127.0.0.7'])).code, 0);
  const out = join(dir, 'zone');
  const exp = await cli(config, ['export', '--format', 'rbldnsd', '--out', out, '--json']);
  assert.equal(exp.code, 0, exp.out);
  const args = (JSON.parse(exp.out) as { args: string[] }).args;
  chmodSync(out, 0o755);
  execFileSync('chown', ['-R', 'rbldns:rbldns', out]);
  for (let attempt = 0; attempt < 5 && rbl === null; attempt++) {
    const port = await freeUdpPort();
    rblOutput = '';
    const child = spawn('rbldnsd', ['-n', '-b', `127.0.0.1/${port}`, '-w', out, '-u', 'rbldns', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const started = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 10_000);
      const onData = (d: Buffer): void => { rblOutput += d.toString(); if (/started/.test(rblOutput)) { clearTimeout(t); resolve(true); } };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('exit', () => { clearTimeout(t); resolve(false); });
    });
    if (started) {
      rbl = child;
      relay = await startGatedRelay({ dnsPort: port, zones: [{ zone: 'relays.test', weight: 1 }] });
    } else {
      child.kill('SIGTERM');
    }
  }
  assert.ok(rbl, `rbldnsd did not start:\n${rblOutput}`);
});

after(async () => {
  await relay?.close();
  if (rbl && rbl.exitCode === null) {
    const exited = new Promise((r) => rbl!.once('exit', r));
    rbl.kill('SIGTERM');
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('relay DNSBL gate against rbldnsd serving the ORDB export', () => {
  it('the zone passes the RFC 5782 health check', () => {
    const [z] = relay.gate.client.zones;
    assert.equal(z!.status, 'healthy', z!.detail ?? '');
    assert.equal(z!.enabled, true);
  });

  it('a listed client is refused at RCPT with rbldnsd\'s TXT; the excluded address is accepted', async () => {
    assert.equal(await rcptFrom('127.0.0.5'), '554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using relays.test; Loopback relays, see http://127.0.0.1:8025/dnsbl/lookup?ip=127.0.0.5');
    assert.match(await rcptFrom('127.0.0.7'), /^250 /);
    assert.match(await rcptFrom('127.0.0.1'), /^250 /, 'trusted');
  });
});
