/**
 * Issue 12, the required blocklist test: the audit's blocklist check against relayguard's own ORDB (a `serve` with
 * dnsbl enabled, an address listed with `relayguard dnsbl add`) and a second DNS server on loopback (the scripted
 * one of src/testing): a listed address is reported with the zone's TXT reason and its delisting link; a zone that
 * lists 127.0.0.1 is reported broken and its answers are ignored; a zone that times out is reported unreachable
 * (never clean, never listed), and the rest of the audit still runs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { freePort } from '../../src/testing/ports.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import { CLI, NODE, startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import type { AuditReport } from '../../src/audit/index.ts';

const LISTED = '198.51.100.7';
const CLEAN = '198.51.100.8';
const rev = (ip: string): string => ip.split('.').reverse().join('.');
let serve: ServeProcess;
let dns: FakeDns;
let ordbPort = 0;

function run(args: readonly string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(NODE, [CLI, ...args, '-q', '--config', serve.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('close', (code) => resolve({ code, out, err }));
  });
}

before(async () => {
  dns = await startFakeDns({
    zone: {
      // a healthy second list that lists LISTED with a reason naming its removal page
      [`2.0.0.127.second.test`]: { A: ['127.0.0.2'], TXT: ['test point'] },
      [`${rev(LISTED)}.second.test`]: { A: ['127.0.0.3'], TXT: [['Listed for spam traps hits, ', 'see https://second.test/remove?ip=198.51.100.7']] },
      // a list that lists the world: 127.0.0.1 and everything else
      [`2.0.0.127.world.test`]: { A: ['127.0.0.2'] },
      [`1.0.0.127.world.test`]: { A: ['127.0.0.2'] },
      [`${rev(LISTED)}.world.test`]: { A: ['127.0.0.2'], TXT: ['listed'] },
      [`${rev(CLEAN)}.world.test`]: { A: ['127.0.0.2'], TXT: ['listed'] },
      // a list whose server never answers
      [`2.0.0.127.dead.test`]: { mode: 'TIMEOUT' },
      [`1.0.0.127.dead.test`]: { mode: 'TIMEOUT' },
    },
  });
  ordbPort = await freePort();
  const fake = [`127.0.0.1:${dns.port}`];
  serve = await startServe({
    config: {
      dnsbl: { zone: 'relays.test', listen: { address: '127.0.0.1', port: ordbPort }, evidenceUrl: 'http://127.0.0.1:8025/dnsbl/lookup?ip=$', schedulerInterval: 0 },
      audit: {
        addresses: [LISTED, CLEAN],
        dnsTimeout: '1s',
        blocklists: [
          { zone: 'relays.test', servers: [`127.0.0.1:${ordbPort}`] },
          { zone: 'second.test', servers: fake },
          { zone: 'world.test', servers: fake },
          { zone: 'dead.test', servers: fake },
        ],
      },
    },
  });
  const add = await run(['dnsbl', 'add', LISTED, '--reason', 'Open relay confirmed by the audit test', '--no-retest']);
  assert.equal(add.code, 0, add.err);
  // serve's ORDB picks the CLI's change up within its zone poll (2 s)
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = new (await import('node:dns')).promises.Resolver({ timeout: 500, tries: 1 });
    r.setServers([`127.0.0.1:${ordbPort}`]);
    if (await r.resolve4(`${rev(LISTED)}.relays.test`).then(() => true, () => false)) break;
    assert.ok(Date.now() < deadline, 'the ORDB serves the listing');
    await new Promise((res) => setTimeout(res, 200));
  }
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
  await dns?.close();
});

test('blocklists: listed with TXT reason and delisting link (ORDB and a second server), a list-the-world zone broken and ignored, a dead zone unreachable', async () => {
  const started = Date.now();
  const r = await run(['audit', '--json', '--only', 'blocklist']);
  assert.equal(r.code, 1, r.out + r.err);
  const report = JSON.parse(r.out) as AuditReport;
  const findings = report.checks.find((c) => c.check === 'blocklist')!.findings;
  const by = (subject: string) => findings.filter((f) => f.subject === subject);

  const ordb = by(`${LISTED} in relays.test`);
  assert.equal(ordb.length, 1, JSON.stringify(findings, null, 1));
  assert.equal(ordb[0]!.check, 'blocklist.listed');
  assert.equal(ordb[0]!.severity, 'critical');
  assert.match(String(ordb[0]!.detail!['reason']), /Open relay confirmed by the audit test/);
  assert.equal(ordb[0]!.detail!['delistUrl'], `http://127.0.0.1:8025/dnsbl/lookup?ip=${LISTED}`);
  assert.match(ordb[0]!.summary, /delisting: http:\/\/127\.0\.0\.1:8025\/dnsbl\/lookup\?ip=198\.51\.100\.7/);
  assert.equal(by(`${CLEAN} in relays.test`)[0]?.check, 'blocklist.clean');

  const second = by(`${LISTED} in second.test`)[0]!;
  assert.equal(second.check, 'blocklist.listed');
  assert.deepEqual(second.detail!['codes'], ['127.0.0.3']);
  assert.equal(second.detail!['reason'], 'Listed for spam traps hits, see https://second.test/remove?ip=198.51.100.7');
  assert.equal(second.detail!['delistUrl'], 'https://second.test/remove?ip=198.51.100.7');
  assert.equal(by(`${CLEAN} in second.test`)[0]?.check, 'blocklist.clean');

  // the zone that lists the world: one 'broken' finding, and nothing of it read as a listing
  const world = findings.filter((f) => f.subject.endsWith('world.test'));
  assert.deepEqual(world.map((f) => [f.check, f.severity, f.subject]), [['blocklist.zone-broken', 'broken', 'world.test']]);
  assert.equal(world[0]!.detail!['health'], 'lists-the-world');
  assert.ok(!dns.queries.some((q) => q.name === `${rev(CLEAN)}.world.test`), 'our addresses were never looked up in the broken zone');

  // the zone that times out: unreachable, never clean or listed
  const dead = findings.filter((f) => f.subject.endsWith('dead.test'));
  assert.deepEqual(dead.map((f) => [f.check, f.severity]), [['blocklist.zone-unreachable', 'unreachable']]);
  assert.ok(Date.now() - started < 15_000, 'a dead zone costs its DNS timeout, not more');

  // the text report names the listing, its reason and link
  const text = await run(['audit', '--only', 'blocklist', '--no-store', '--no-color']);
  assert.equal(text.code, 1);
  assert.match(text.out, /CRITICAL\s+198\.51\.100\.7 in second\.test: 198\.51\.100\.7 is listed in second\.test \(127\.0\.0\.3\): Listed for spam traps hits, see https:\/\/second\.test\/remove\?ip=198\.51\.100\.7; delisting: https:\/\/second\.test\/remove\?ip=198\.51\.100\.7/);
  assert.match(text.out, /BROKEN\s+world\.test: world\.test fails the RFC 5782 test points/);
  assert.match(text.out, /UNREACHABLE\s+dead\.test: dead\.test did not answer its test points/);
  assert.match(text.out, /No change since the audit of/);
});
