import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config/load.ts';
import { RelayguardError } from '../core/errors.ts';
import { CATEGORIES, DnsblServer, LISTING_STATES, ListingStore, buildZone, type HostTestResult } from '../dnsbl/index.ts';
import { DNSBL_HELP, parseImportLines, registerDnsblCommands } from './dnsbl-commands.ts';
import type { OrdbSettings, TestHost } from './ordb-service.ts';

const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function workDir(extra = ''): { dataDir: string; config: string } {
  const d = mkdtempSync(join(tmpdir(), 'relayguard-dnsbl-cli-'));
  dirs.push(d);
  const config = join(d, 'relayguard.yaml');
  writeFileSync(config, `dataDir: ./data\ndnsbl:\n  zone: relays.test\n${extra}`);
  return { dataDir: join(d, 'data'), config };
}

interface Run {
  code: number;
  out: string;
  err: string;
}

interface FakeTester {
  results: HostTestResult[];
  calls: { ip: string; prove: boolean; settings: OrdbSettings }[];
}

/** Runs `relayguard dnsbl ...` the way main() does: usage errors and RelayguardErrors exit 2. */
async function cli(config: string, args: string[], tester: FakeTester = { results: [], calls: [] }, now = T0): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s) };
  let code = 0;
  const program = new Command('relayguard').exitOverride().configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });
  registerDnsblCommands(program, io, (c) => { code = c; }, (opts) => loadConfig({ file: opts.config ?? config }), {
    now: () => now,
    testHost: async (settings): Promise<TestHost> => ({
      prove: settings.probeDomain !== null,
      sink: null,
      close: async () => {},
      test: async (ip, { prove }) => {
        tester.calls.push({ ip, prove, settings });
        const r = tester.results.shift();
        if (!r) throw new Error('no scripted result');
        return r;
      },
    }),
  });
  try {
    await program.parseAsync(['dnsbl', ...args], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) code = e.exitCode === 0 ? 0 : 2;
    else if (e instanceof RelayguardError) {
      io.err(`relayguard: ${e.message} [${e.code}]`);
      code = 2;
    } else throw e;
  }
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const OPEN: HostTestResult = { verdict: 'OPEN', proved: true, reason: 'proved', detail: 'probe arrived', mode: 'prove', report: { schema: 'relayguard-tester/1' } };
const CLOSED: HostTestResult = { verdict: 'CLOSED', proved: false, reason: 'refused', detail: 'RCPT 554 5.7.1 Relay access denied', mode: 'prove', report: {} };

describe('relayguard dnsbl', () => {
  it('add, lookup, list, remove, exclude: a manual listing with its history', async () => {
    const w = workDir();
    let r = await cli(w.config, ['add', '192.0.2.1', '--reason', 'caught relaying']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^listed 192\.0\.2\.1 \(open-relay, 127\.0\.0\.2\), retest /);
    r = await cli(w.config, ['add', '198.51.100.0/24', '--category', 'honeypot']);
    assert.match(r.out, /listed 198\.51\.100\.0\/24 \(honeypot, 127\.0\.0\.4\)$/);

    r = await cli(w.config, ['lookup', '192.0.2.1', '--history']);
    assert.equal(r.code, 0);
    assert.match(r.out, /LISTED in the store as 192\.0\.2\.1/);
    assert.match(r.out, /listed +listed +listed by hand/);
    r = await cli(w.config, ['lookup', '198.51.100.9', '--json']);
    assert.equal(r.code, 0);
    const j = JSON.parse(r.out) as { listed: boolean; effective: { network: string; category: string } };
    assert.equal(j.listed, true);
    assert.equal(j.effective.network, '198.51.100.0/24');
    r = await cli(w.config, ['lookup', '203.0.113.1']);
    assert.equal(r.code, 1);
    assert.match(r.out, /not listed/);

    r = await cli(w.config, ['list', '--state', 'listed', '--json']);
    assert.deepEqual(r.out.split('\n').map((l) => (JSON.parse(l) as { network: string }).network), ['192.0.2.1', '198.51.100.0/24']);

    r = await cli(w.config, ['remove', '192.0.2.1']);
    assert.equal(r.code, 0);
    assert.equal(r.out, 'delisted 192.0.2.1');
    assert.equal((await cli(w.config, ['lookup', '192.0.2.1'])).code, 1);
    r = await cli(w.config, ['remove', '203.0.113.1']);
    assert.equal(r.code, 1);
    assert.match(r.err, /not in the list/);
    r = await cli(w.config, ['remove', '198.51.100.9']);
    assert.match(r.err, /covered by 198\.51\.100\.0\/24/);

    r = await cli(w.config, ['exclude', '198.51.100.128/25', '--reason', 'customer']);
    assert.equal(r.out, 'excluded 198.51.100.128/25: never tested, never listed');
    assert.equal((await cli(w.config, ['lookup', '198.51.100.200'])).code, 1, 'the exclusion wins over the /24');
    r = await cli(w.config, ['add', '198.51.100.128/25']);
    assert.equal(r.code, 1);
    assert.match(r.err, /is excluded: not listed/);
    r = await cli(w.config, ['remove', '198.51.100.128/25']);
    assert.equal(r.out, 'exclusion of 198.51.100.128/25 lifted');
  });

  it('usage errors exit 2 with a clear message', async () => {
    const w = workDir();
    for (const [args, pattern] of [
      [['add', '192.0.2.1/24'], /host bits set/],
      [['add', '192.0.2.1', '--category', 'spam'], /--category takes open-relay, open-proxy, honeypot/],
      [['lookup', 'not-an-ip'], /not an address/],
      [['list', '--state', 'gone'], /--state takes pending, listed, delisted, excluded/],
      [['export', '--format', 'djbdns', '--out', w.dataDir], /--format takes rbldnsd or bind/],
      [['lookup', '192.0.2.1', '--zone', 'x.test'], /--zone needs --server/],
      [['submit', '192.0.2.1', '--now', '--prove'], /--prove needs --probe-domain/],
    ] as const) {
      const r = await cli(w.config, [...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.out} ${r.err}`);
      assert.match(r.err, pattern);
    }
  });

  it('submit queues for the scheduler; refusals exit 1 with their code', async () => {
    const w = workDir();
    await cli(w.config, ['exclude', '203.0.113.0/24']);
    let r = await cli(w.config, ['submit', '8.8.4.4']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /submitted 8\.8\.4\.4: the relay's scheduler will test it/);
    r = await cli(w.config, ['submit', '8.8.4.4', '--json']);
    assert.equal((JSON.parse(r.out) as { status: string }).status, 'already-pending');
    r = await cli(w.config, ['submit', '203.0.113.7']);
    assert.equal(r.code, 1);
    assert.match(r.err, /203\.0\.113\.7 is excluded \(203\.0\.113\.0\/24\).*\[ERR_DNSBL_EXCLUDED\]/);
    r = await cli(w.config, ['submit', '10.0.0.1']);
    assert.equal(r.code, 1);
    assert.match(r.err, /not a global address \(private\).*\[ERR_DNSBL_NOT_GLOBAL\]/);
    r = await cli(w.config, ['submit', '10.0.0.1', '--allow-private']);
    assert.equal(r.code, 0);
    r = await cli(w.config, ['list', '--state', 'pending']);
    assert.match(r.out, /8\.8\.4\.4 +pending/);
    const store = ListingStore.open(join(w.dataDir, 'relayguard.db'));
    try {
      assert.equal(store.history('8.8.4.4')[0]!.detail, 'submitted by cli');
    } finally { store.close(); }
  });

  it('submit --now --prove lists a proved relay; retest --now delists it when closed; safe mode never lists', async () => {
    const w = workDir();
    const tester: FakeTester = { results: [OPEN], calls: [] };
    let r = await cli(w.config, ['submit', '8.8.4.4', '--now', '--prove', '--probe-domain', 'probes.test', '-p', '2525', '--wait', '5'], tester);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /testing 8\.8\.4\.4 \(proof mode, probes to probes\.test\)/);
    assert.match(r.out, /8\.8\.4\.4: OPEN -> list \(pending -> listed\)/);
    assert.equal(tester.calls[0]!.prove, true);
    assert.deepEqual(tester.calls[0]!.settings.testPorts, [{ port: 2525, role: 'mx' }]);
    assert.equal(tester.calls[0]!.settings.probeWaitMs, 5000);
    assert.equal((await cli(w.config, ['lookup', '8.8.4.4'])).code, 0);

    r = await cli(w.config, ['retest', '8.8.4.4']);
    assert.match(r.out, /retest of 8\.8\.4\.4 scheduled/);
    tester.results.push(CLOSED);
    r = await cli(w.config, ['retest', '8.8.4.4', '--now', '--probe-domain', 'probes.test', '--json'], tester, T0 + 1000);
    const o = JSON.parse(r.out) as { outcome: { action: string; after: string } };
    assert.equal(o.outcome.action, 'delist');
    assert.equal((await cli(w.config, ['lookup', '8.8.4.4'])).code, 1);

    tester.results.push({ verdict: 'INCONCLUSIVE', proved: false, reason: 'accepted-not-proved', detail: 'RCPT 250', mode: 'safe', report: {} });
    r = await cli(w.config, ['submit', '8.8.8.8', '--now'], tester);
    assert.match(r.out, /safe mode: a relay is never listed without proof/);
    assert.match(r.out, /-> park \(pending -> pending\)/);
    assert.match(r.out, /FLAGGED for a human: accepted relaying in safe mode/);
    r = await cli(w.config, ['list', '--flagged']);
    assert.match(r.out, /^8\.8\.8\.8 +pending .*FLAGGED/);
    r = await cli(w.config, ['retest', '192.0.2.99']);
    assert.equal(r.code, 1);
    assert.match(r.err, /ERR_DNSBL_NOT_LISTED/);
  });

  it('export writes rbldnsd files and a BIND zone', async () => {
    const w = workDir();
    await cli(w.config, ['add', '192.0.2.1']);
    await cli(w.config, ['add', '2001:db8::/64', '--reason', 'v6 relays']);
    const out = join(w.dataDir, 'export');
    let r = await cli(w.config, ['export', '--format', 'rbldnsd', '--out', out]);
    assert.equal(r.code, 0, r.err);
    assert.match(readFileSync(join(out, 'relays.test.ip4set'), 'utf8'), /^192\.0\.2\.1 :127\.0\.0\.2:Open relay, see /m);
    assert.match(readFileSync(join(out, 'relays.test.ip6trie'), 'utf8'), /^2001:db8::\/64 :127\.0\.0\.2:v6 relays/m);
    assert.match(r.out, /rbldnsd -b ADDRESS\/PORT -w .* relays\.test:ip4set:relays\.test\.ip4set relays\.test:ip6trie:relays\.test\.ip6trie/);
    r = await cli(w.config, ['export', '--format', 'bind', '--out', out, '--json']);
    const j = JSON.parse(r.out) as { files: string[] };
    assert.match(readFileSync(j.files[0]!, 'utf8'), /^1\.2\.0\.192\t2100\tIN\tA\t127\.0\.0\.2$/m);
  });

  it('lookup --server asks a DNS server: listed 0, not listed 1, failure 3', async () => {
    const w = workDir();
    const server = new DnsblServer({ zone: buildZone([{ network: '192.0.2.5', txt: 'relay $' }], { apex: 'relays.test' }), port: 0 });
    await server.start();
    try {
      let r = await cli(w.config, ['lookup', '192.0.2.5', '--server', `127.0.0.1:${server.port}`]);
      assert.equal(r.code, 0, r.out + r.err);
      assert.match(r.out, /DNS 5\.2\.0\.192\.relays\.test @127\.0\.0\.1:\d+: LISTED 127\.0\.0\.2 "relay 192\.0\.2\.5"/);
      r = await cli(w.config, ['lookup', '192.0.2.6', '--server', `127.0.0.1:${server.port}`, '--json']);
      assert.equal(r.code, 1);
      assert.equal((JSON.parse(r.out) as { dns: { kind: string } }).dns.kind, 'not-listed');
      r = await cli(w.config, ['lookup', '192.0.2.6', '--server', `127.0.0.1:${server.port}`, '--zone', 'other.test']);
      assert.equal(r.code, 3, 'REFUSED for a zone it does not serve');
      assert.match(r.out, /lookup failed: refused/);
    } finally {
      await server.stop();
    }
  });

  it('add -i imports a file in one transaction: every line checked first, all or nothing, a report by line number', async () => {
    const w = workDir();
    await cli(w.config, ['exclude', '198.51.100.128/25', '--reason', 'customer']);
    await cli(w.config, ['add', '192.0.2.9', '--reason', 'already here']);
    const file = join(w.dataDir, '..', 'import.txt');
    writeFileSync(file, [
      '# open relays reported this week',
      '192.0.2.1',
      '192.0.2.2   seen relaying for us',
      '',
      '2001:db8::25\tv6 relay # trailing comment',
      '192.0.2.300',
      '192.0.2.9   already here',
      '198.51.100.200',
      '192.0.2.1   once more',
      '203.0.113.0/24',
      '198.51.100.128/25',
    ].join('\n'));
    const serial = (): number => { const s = ListingStore.open(join(w.dataDir, 'relayguard.db')); try { return s.serial(); } finally { s.close(); } };
    const before = serial();
    let r = await cli(w.config, ['add', '-i', file]);
    assert.equal(r.code, 1);
    assert.equal(r.err.split('\n').length, 4, r.err);
    assert.match(r.err, /import\.txt: line 6: bad IPv4 address "192\.0\.2\.300"/);
    assert.match(r.err, /line 8: 198\.51\.100\.200 is inside the exclusion 198\.51\.100\.128\/25: not listed/);
    assert.match(r.err, /line 9: duplicate of line 2/);
    assert.match(r.err, /line 11: 198\.51\.100\.128\/25 is excluded: not listed/);
    assert.match(r.out, /^nothing imported from .*import\.txt: 4 listed, 0 updated, 1 unchanged, 2 invalid, 2 excluded; fix the lines above, or add --keep-going/);
    assert.equal(serial(), before, 'nothing was written');
    assert.equal((await cli(w.config, ['lookup', '192.0.2.1'])).code, 1);

    r = await cli(w.config, ['add', '-i', file, '--keep-going', '--category', 'open-relay']);
    assert.equal(r.code, 1, 'bad lines still make the exit code 1');
    assert.match(r.out, /^imported .*: 4 listed, 0 updated, 1 unchanged, 2 invalid, 2 excluded \(the bad lines were skipped: --keep-going\); zone serial \d+$/);
    assert.equal(serial(), before + 1, 'one transaction: the serial steps once');
    r = await cli(w.config, ['lookup', '2001:db8::25', '--json']);
    assert.equal((JSON.parse(r.out) as { effective: { reason: string } }).effective.reason, 'v6 relay');
    r = await cli(w.config, ['lookup', '192.0.2.2', '--history']);
    assert.match(r.out, /listed by hand \(relayguard dnsbl add -i, line 3\)/);
    assert.match(r.out, /reason: seen relaying for us/);
    r = await cli(w.config, ['lookup', '203.0.113.77', '--json']);
    assert.equal((JSON.parse(r.out) as { effective: { network: string; nextRetest: number | null } }).effective.nextRetest, null, 'networks are not retested');

    // The same file again: nothing changes; from standard input with --json, the report line by line.
    writeFileSync(file, '192.0.2.1\n192.0.2.2 seen relaying for us\n192.0.2.3 new one\n');
    r = await cli(w.config, ['add', '-i', file, '--json']);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as { applied: boolean; counts: Record<string, number>; lines: { line: number; network: string; outcome: string }[] };
    assert.equal(j.applied, true);
    assert.deepEqual(j.counts, { listed: 1, updated: 0, unchanged: 2, invalid: 0, excluded: 0 });
    assert.deepEqual(j.lines.map((l) => `${l.line} ${l.network} ${l.outcome}`), ['1 192.0.2.1 unchanged', '2 192.0.2.2 unchanged', '3 192.0.2.3 listed']);
    r = await cli(w.config, ['add', '-i', file]);
    assert.equal(r.code, 0);
    assert.match(r.out, /^nothing to change from .*: 0 listed, 0 updated, 3 unchanged/);

    for (const [args, pattern] of [
      [['add'], /give a network \(IP address or CIDR\), or --input FILE/],
      [['add', '192.0.2.1', '-i', file], /not both/],
      [['add', '192.0.2.1', '--keep-going'], /--keep-going goes with --input/],
      [['add', '-i', join(w.dataDir, 'missing.txt')], /--input: cannot read .*missing\.txt: ENOENT/],
      [['add', '-i', file, '--category', 'spam'], /--category takes/],
    ] as const) {
      r = await cli(w.config, [...args]);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.err, pattern);
    }
  });

  it('add -i: 1,000 networks in one call, in well under a second', async () => {
    const w = workDir();
    const file = join(w.dataDir, '..', 'many.txt');
    writeFileSync(file, Array.from({ length: 1000 }, (_, i) => `198.18.${i >> 8}.${i & 255} bulk ${i}`).join('\n'));
    const t0 = performance.now();
    const r = await cli(w.config, ['add', '-i', file]);
    const ms = performance.now() - t0;
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /1000 listed/);
    assert.ok(ms < 5000, `${ms} ms`);
    const store = ListingStore.open(join(w.dataDir, 'relayguard.db'));
    try { assert.equal(store.count('listed'), 1000); } finally { store.close(); }
  });

  it('parseImportLines: comments, blank lines, reasons, CRLF', () => {
    assert.deepEqual(parseImportLines('# head\r\n192.0.2.1\r\n  \r\n192.0.2.0/24  two words  # note\r\n::1\treason\n'), [
      { line: 2, network: '192.0.2.1', reason: null },
      { line: 4, network: '192.0.2.0/24', reason: 'two words' },
      { line: 5, network: '::1', reason: 'reason' },
    ]);
  });

  it('the help names the categories and states of the dnsbl module (kept apart so that the help loads none of it)', () => {
    assert.deepEqual(DNSBL_HELP.categories, Object.keys(CATEGORIES));
    assert.deepEqual(DNSBL_HELP.states, LISTING_STATES);
  });
});
