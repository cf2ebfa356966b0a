/**
 * Field report H1 as a regression, with a real Postfix consulting relayguard's own ORDB zone (issue 8):
 *
 *   a private Postfix on 127.0.0.7 is an open relay for all of 127.0.0.0/8 (mynetworks) but checks every client
 *   with `smtpd_client_restrictions = reject_rbl_client relays.test`, a zone served by relayguard's ORDB
 *   (startOrdb, the production wiring). The ORDB lists 127.0.0.5 (another open relay, listed by hand).
 *
 *   1. Postfix refuses 127.0.0.5 at RCPT with relayguard's text ("554 5.7.1 Service unavailable; Client host
 *      [127.0.0.5] blocked using relays.test") and relays for 127.0.0.9;
 *   2. the ORDB workflow's tester proves Postfix open from 127.0.0.9: listed;
 *   3. `relayguard dnsbl retest 127.0.0.7 --now --source-address 127.0.0.5` (the field report's command): the
 *      retest from the blocklisted address reads INCONCLUSIVE client-blocked (it read CLOSED and delisted before),
 *      the listing stays, the reason is in its history, and the zone still lists 127.0.0.7;
 *   4. Postfix still relays for 127.0.0.9: the listing was right.
 *
 * DNS: Postfix's resolver only talks to port 53, so relayguard's ORDB listens on <a random 127.53.x.y>:53 and
 * Postfix's smtpd runs chrooted in its private queue directory, whose etc/resolv.conf names that address
 * (src/testing/postfix.ts `nameserver`). The system /etc/resolv.conf and the system Postfix are not touched.
 * Needs root and the Debian postfix package (.ci/run installs it): missing, the test fails (never skips).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promises as dnsPromises } from 'node:dns';
import { Command } from 'commander';
import { loadConfig, parseConfig } from '../../src/config/load.ts';
import { MemoryLogger } from '../../src/core/log.ts';
import { DnsblClient, ordbEvidence } from '../../src/dnsbl/index.ts';
import { startOrdb, type RunningOrdb } from '../../src/cli/ordb-service.ts';
import { registerDnsblCommands } from '../../src/cli/dnsbl-commands.ts';
import { hasBinary, startPostfix, type PostfixInstance } from '../../src/testing/postfix.ts';
import { freePort } from '../../src/testing/ports.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import type { RunResult } from '../../src/tester/index.ts';

const ZONE = 'relays.test';
const RELAY_HOST = '127.0.0.7'; // Postfix, the open relay under test
const PROVER = '127.0.0.9'; // the tester's address for the proof (not listed)
const BLOCKED = '127.0.0.5'; // the retest's source address, listed in the zone Postfix consults
const PROBE_DOMAIN = 'probes.test';

let dataDir: string;
let configFile: string;
let dnsAddress: string;
let ordb: RunningOrdb;
let postfix: PostfixInstance;
const logger = new MemoryLogger();

async function zoneLookup(ip: string): Promise<string> {
  const r = new dnsPromises.Resolver({ timeout: 1000, tries: 1 });
  r.setServers([dnsAddress]);
  return (await new DnsblClient({ resolver: r, minTtlMs: 0, maxTtlMs: 0, negativeTtlMs: 0 }).lookup(ip, ZONE)).kind;
}

/** MAIL + RCPT to a probe-domain address from `from`; the RCPT reply. */
async function tryRelay(from: string): Promise<{ code: number; text: string }> {
  const c = await p1(postfix.port, { host: RELAY_HOST, localAddress: from });
  try {
    assert.equal((await c.cmd('EHLO tester.example.net')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<someone@example.net>')).code, 250);
    const r = await c.cmd(`RCPT TO:<nobody@${PROBE_DOMAIN}>`);
    return { code: r.code, text: r.lines.join(' ') };
  } finally {
    await c.cmd('QUIT').catch(() => {});
    c.close();
  }
}

/** `relayguard dnsbl ...` in process, with the real tester (createTestHost). */
async function dnsbl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s) };
  let code = 0;
  const program = new Command('relayguard').exitOverride().configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });
  registerDnsblCommands(program, io, (c) => { code = c; }, () => loadConfig({ file: configFile }));
  await program.parseAsync(['dnsbl', ...args], { from: 'user' });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** The ORDB on <127.53.x.y>:53 (a random loopback address, so parallel runs do not meet). */
async function startOrdbOnPort53(sinkPort: number, postfixPort: number): Promise<RunningOrdb> {
  let last: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    dnsAddress = `127.53.${randomInt(0, 256)}.${randomInt(1, 255)}`;
    const config = parseConfig({
      dataDir, hostname: 'ordb.local.test', trustedNetworks: ['127.0.0.1/32'],
      dnsbl: { zone: ZONE, listen: { address: dnsAddress, port: 53 } },
    });
    try {
      return await startOrdb(config, logger, {
        settings: {
          probeDomain: PROBE_DOMAIN, sink: { address: '127.0.0.1', port: sinkPort }, probeWaitMs: 3000,
          testPorts: [{ port: postfixPort, role: 'mx' }], sourceAddress: PROVER, allowPrivateTargets: true,
          ttlSeconds: 1, schedulerIntervalMs: 0, zonePollMs: 200,
        },
      });
    } catch (err) {
      last = err;
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw last;
}

before(async () => {
  assert.ok(process.getuid?.() === 0 && hasBinary('/usr/sbin/postfix'), 'this test needs root (port 53, Postfix) and the Debian postfix package (.ci/run installs it)');
  dataDir = mkdtempSync(join(tmpdir(), 'relayguard-h1-'));
  configFile = join(dataDir, 'relayguard.yaml');
  writeFileSync(configFile, `dataDir: ${JSON.stringify(join(dataDir))}\nhostname: ordb.local.test\ndnsbl:\n  zone: ${ZONE}\n`);
  const sinkPort = await freePort();
  const postfixPort = await freePort();
  ordb = await startOrdbOnPort53(sinkPort, postfixPort);
  ordb.store.add({ network: BLOCKED, detail: 'listed by hand: another open relay' });
  ordb.rebuild();
  postfix = await startPostfix({
    mode: 'relay-to',
    port: postfixPort,
    relayHost: `127.0.0.1:${sinkPort}`,
    listenAddresses: [RELAY_HOST],
    nameserver: dnsAddress,
    extraMain: {
      myhostname: 'mx.h1.test',
      mydestination: 'h1.test',
      local_recipient_maps: 'inline:{ postmaster=postmaster }',
      local_transport: 'discard:',
      proxy_interfaces: RELAY_HOST, // its literal [127.0.0.7] is local
      mynetworks: '127.0.0.0/8', // an open relay for every loopback client...
      smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
      smtpd_client_restrictions: `reject_rbl_client ${ZONE}`, // ...except those on relayguard's list (at RCPT: smtpd_delay_reject)
      default_transport: `smtp:[127.0.0.1]:${sinkPort}`,
    },
  });
});

after(async () => {
  await Promise.all([postfix?.stop(), ordb?.stop()]);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('H1: a retest from an address the relay blocklists (via relayguard\'s own zone) never delists', () => {
  it('Postfix refuses the listed address with relayguard\'s zone text and relays for the others', { timeout: 60_000 }, async () => {
    assert.equal(await zoneLookup(BLOCKED), 'listed');
    const blocked = await tryRelay(BLOCKED);
    assert.equal(blocked.code, 554, blocked.text);
    assert.match(blocked.text, new RegExp(`Client host \\[127\\.0\\.0\\.5\\] blocked using relays\\.test`));
    const open = await tryRelay(PROVER);
    assert.equal(open.code, 250, `Postfix relays for ${PROVER}: ${open.text}`);
  });

  it(`the ORDB tester proves Postfix open from ${PROVER}: listed`, { timeout: 180_000 }, async () => {
    const s = ordb.workflow.submit(RELAY_HOST, 'h1-test');
    assert.ok(s.ok && s.status === 'queued', JSON.stringify(s));
    const [o] = await ordb.runDue();
    assert.ok(o, 'one test ran');
    const l = ordb.store.get(RELAY_HOST)!;
    assert.equal(o.action, 'list', `${o.detail}\n${JSON.stringify(ordbEvidence(l)?.report).slice(0, 3000)}`);
    assert.equal(l.state, 'listed');
    const report = ordbEvidence(l)!.report as RunResult;
    assert.equal(report.verdict, 'OPEN');
    assert.equal(report.targets[0]!.sourceAddress, PROVER);
    await new Promise((r) => setTimeout(r, 400)); // the ORDB's zone poll
    assert.equal(await zoneLookup(RELAY_HOST), 'listed');
  });

  it(`dnsbl retest --now --source-address ${BLOCKED}: INCONCLUSIVE client-blocked, still listed, the reason in the history`, { timeout: 180_000 }, async () => {
    const sinkPort = await freePort();
    const r = await dnsbl([
      'retest', RELAY_HOST, '--now', '--source-address', BLOCKED, '--probe-domain', PROBE_DOMAIN, '--sink', `127.0.0.1:${sinkPort}`,
      '--wait', '2', '-p', `${postfix.port}:mx`, '--json',
    ]);
    assert.equal(r.code, 0, r.err + r.out);
    const { outcome, listing } = JSON.parse(r.out) as { outcome: { verdict: string; action: string; detail: string; after: string }; listing: { state: string } };
    assert.notEqual(outcome.verdict, 'CLOSED', `H1: the retest from a blocklisted address read CLOSED: ${outcome.detail}`);
    assert.equal(outcome.verdict, 'INCONCLUSIVE', outcome.detail);
    assert.equal(outcome.action, 'keep-listed', outcome.detail);
    assert.equal(outcome.after, 'listed');
    assert.equal(listing.state, 'listed');
    assert.match(outcome.detail, /client-blocked/);
    assert.match(outcome.detail, /Client host \[127\.0\.0\.5\] blocked using relays\.test/);

    const l = ordb.store.get(RELAY_HOST)!;
    assert.equal(l.state, 'listed');
    const ev = ordbEvidence(l)!;
    assert.match(ev.flagged ?? '', /client-blocked/);
    assert.equal(ev.proved, true, 'the proof that listed it stays on show');
    const history = ordb.store.history(RELAY_HOST);
    const last = history.at(-1)!;
    assert.equal(last.state, 'listed');
    assert.match(last.detail ?? '', /INCONCLUSIVE \(client-blocked\)/);
    assert.ok(!history.some((h) => h.event === 'delisted'), JSON.stringify(history));
    await new Promise((res) => setTimeout(res, 400));
    assert.equal(await zoneLookup(RELAY_HOST), 'listed');
    // Postfix logged the refusals of the blocklisted tester
    assert.match(await postfix.readLog(), /reject: RCPT from unknown\[127\.0\.0\.5\]: 554 5\.7\.1 Service unavailable; Client host \[127\.0\.0\.5\] blocked using relays\.test/);
  });

  it(`Postfix still relays for ${PROVER}: the listing was right`, { timeout: 60_000 }, async () => {
    const open = await tryRelay(PROVER);
    assert.equal(open.code, 250, open.text);
  });
});
