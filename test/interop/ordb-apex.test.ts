/**
 * The ORDB zone's apex from the configuration (field report L10, D2): the NS set, glue for name servers inside
 * the zone and the SOA contact and timers, as Debian's dig sees them from a running ORDB, and the BIND export of
 * the same zone accepted by named-checkzone (which refuses an in-zone NS without an address).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../src/config/load.ts';
import { MemoryLogger } from '../../src/core/log.ts';
import { main } from '../../src/cli/main.ts';
import { startOrdb } from '../../src/cli/ordb-service.ts';

const run = promisify(execFile);
const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

async function withOrdb(yaml: string, fn: (port: number, configFile: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-ordb-apex-'));
  dirs.push(dir);
  const configFile = join(dir, 'relayguard.yaml');
  writeFileSync(configFile, `dataDir: ./data\n${yaml}`);
  const config = await loadConfig({ file: configFile });
  const ordb = await startOrdb(config, new MemoryLogger(), { prove: false, testHost: async () => { throw new Error('not used'); } });
  try {
    await fn(ordb.server.port, configFile);
  } finally {
    await ordb.stop();
  }
}

async function dig(port: number, name: string, type: string): Promise<string[]> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), '+time=2', '+tries=1', '+nocookie', '+short', name, type], { timeout: 10_000 });
  return stdout.split('\n').filter((l) => l.trim() !== '');
}

async function exportAndCheck(configFile: string, zone: string): Promise<string> {
  const out = mkdtempSync(join(tmpdir(), 'relayguard-ordb-apex-export-'));
  dirs.push(out);
  const lines: string[] = [];
  const code = await main(['dnsbl', 'export', '--format', 'bind', '--out', out, '-c', configFile], { out: (s) => lines.push(s), err: (s) => lines.push(s) });
  assert.equal(code, 0, lines.join('\n'));
  const { stdout } = await run('named-checkzone', ['-i', 'local', zone, join(out, `${zone}.zone`)], { timeout: 20_000 });
  return stdout;
}

describe('ORDB apex records from the configuration', () => {
  it('default: hostname inside the zone is the NS, with dnsbl.listen.address as its glue; named-checkzone accepts the export', async () => {
    await withOrdb('hostname: ns.ordb.test\ndnsbl:\n  zone: ordb.test\n  listen: { address: 127.0.0.1, port: 0 }\n  schedulerInterval: 0\n', async (port, configFile) => {
      assert.deepEqual(await dig(port, 'ordb.test', 'NS'), ['ns.ordb.test.']);
      assert.deepEqual(await dig(port, 'ns.ordb.test', 'A'), ['127.0.0.1']);
      const soa = (await dig(port, 'ordb.test', 'SOA'))[0]!.split(' ');
      assert.deepEqual([soa[0], soa[1], ...soa.slice(3)], ['ns.ordb.test.', 'hostmaster.ordb.test.', '3600', '600', '259200', '300']);
      assert.match(await exportAndCheck(configFile, 'ordb.test'), /OK/);
    });
  });

  it('configured: secondaries in the NS set with glue for in-zone names, SOA contact and timers', async () => {
    const yaml = [
      'hostname: mx.example.net',
      'dnsbl:',
      '  zone: ordb.test',
      '  listen: { address: 127.0.0.1, port: 0 }',
      '  schedulerInterval: 0',
      '  nameservers:',
      '    - { name: ns1.ordb.test, addresses: [192.0.2.53, "2001:db8::53"] }',
      '    - { name: ns2.example.org }',
      '  soa: { contact: abuse@example.org, refresh: 2h, retry: 15m, expire: 14d, minimum: 10m }',
      '',
    ].join('\n');
    await withOrdb(yaml, async (port, configFile) => {
      assert.deepEqual((await dig(port, 'ordb.test', 'NS')).sort(), ['ns1.ordb.test.', 'ns2.example.org.']);
      assert.deepEqual(await dig(port, 'ns1.ordb.test', 'A'), ['192.0.2.53']);
      assert.deepEqual(await dig(port, 'ns1.ordb.test', 'AAAA'), ['2001:db8::53']);
      const soa = (await dig(port, 'ordb.test', 'SOA'))[0]!.split(' ');
      assert.deepEqual([soa[0], soa[1], ...soa.slice(3)], ['ns1.ordb.test.', 'abuse.example.org.', '7200', '900', '1209600', '600']);
      assert.match(await exportAndCheck(configFile, 'ordb.test'), /OK/);
    });
  });

  it('refuses a contact whose local part has a dot (it cannot be written as an SOA RNAME without escapes)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-ordb-apex-'));
    dirs.push(dir);
    const f = join(dir, 'relayguard.yaml');
    writeFileSync(f, 'dnsbl:\n  soa: { contact: dns.admin@example.org }\n');
    await assert.rejects(async () => loadConfig({ file: f }), /dnsbl\.soa\.contact: "dns\.admin@example\.org" an e-mail address whose local part has no dot/);
  });
});
