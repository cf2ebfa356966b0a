/**
 * `relayguard dnsbl add|remove|exclude|lookup|list|submit|retest|export`: the ORDB from the command line. Works on
 * the listing store in dataDir (relayguard.db), next to a running `relayguard serve`: its DNS server picks the
 * changes up within seconds (it watches the zone serial), and its scheduler tests what `submit` and `retest` queue.
 * `--now` runs the test right here instead (proof mode when a probe domain is given or configured).
 *
 * Exit codes: 0 done (lookup: listed); 1 refused, unknown or not listed; 2 usage (bad address, bad option);
 * 3 a DNS lookup (`lookup --server`) failed or got a broken answer.
 * Text from the store (reasons, submitters, tester details) passes through printable().
 */
import { mkdirSync } from 'node:fs';
import { promises as dnsPromises } from 'node:dns';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';
import { NULL_LOGGER } from '../core/log.ts';
import {
  CATEGORIES, DnsblClient, LISTING_STATES, ListingStore, OrdbWorkflow, isCategory, ordbEvidence, writeBindZone,
  writeRbldnsdFiles, zoneFromStore, type Listing, type ListingCategory, type ListingState, type Refused, type TestOutcome,
} from '../dnsbl/index.ts';
import { isHostName, parsePortSpec } from '../tester/index.ts';
import { createTestHost, ordbSettings, type OrdbSettings, type TestHost } from './ordb-service.ts';
import { printable } from './queue-commands.ts';

export interface DnsblCommandIo {
  out(s: string): void;
  err(s: string): void;
}

export interface DnsblCommandOptions {
  /** The time used for new entries and schedules. Default Date.now. */
  readonly now?: () => number;
  /** Builds the tester for --now (tests inject a fake). Default createTestHost. */
  readonly testHost?: (settings: OrdbSettings) => Promise<TestHost>;
}

interface CommonOpts {
  config?: string;
  json?: boolean;
}

interface TesterOpts {
  prove?: boolean;
  probeDomain?: string;
  sink?: string;
  wait?: string;
  port?: string[];
  sourceAddress?: string;
  budget?: string;
  allowPrivate?: boolean;
}

const usage = (message: string): RelayguardError => new RelayguardError('ERR_USAGE', message);
const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

function iso(t: number | null): string {
  return t === null ? '-' : new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A listing for JSON output (evidence only on request: it holds the whole tester report). */
function listingJson(l: Listing, withEvidence = false): Record<string, unknown> {
  const ev = ordbEvidence(l);
  const { evidence, ...rest } = l;
  return {
    ...rest,
    flagged: ev?.flagged ?? null,
    lastVerdict: ev?.verdict ?? null,
    ...(withEvidence ? { evidence } : {}),
  };
}

function listingLine(l: Listing): string {
  const ev = ordbEvidence(l);
  const bits = [
    l.network.padEnd(18), l.state.padEnd(8), l.category.padEnd(10),
    `tested ${iso(l.lastTested)}`, `next ${iso(l.nextRetest)}`,
  ];
  if (ev?.verdict) bits.push(`last ${ev.verdict}${ev.reason ? ` (${printable(ev.reason)})` : ''}`);
  if (ev?.flagged) bits.push(`FLAGGED: ${printable(ev.flagged)}`);
  if (l.reason) bits.push(`reason: ${printable(l.reason)}`);
  return bits.join('  ');
}

function seconds(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(v)) throw usage(`--${name} takes a number of seconds, got "${v}"`);
  return Number(v) * 1000;
}

function hostPort(v: string, name: string, defaultPort: number): { address: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\]]+))(?::(\d{1,5}))?$/.exec(v.trim());
  const address = m?.[1] ?? m?.[2];
  const port = m?.[3] !== undefined ? Number(m[3]) : defaultPort;
  if (!m || address === undefined || !/^[0-9a-fA-F.:]+$/.test(address) || port < 1 || port > 65535) {
    throw usage(`--${name} takes ADDRESS[:PORT] with an IP address, got "${v}"`);
  }
  return { address, port };
}

/** The tester settings for --now: the configuration, overridden by the command line. */
function testerSettings(base: OrdbSettings, o: TesterOpts): OrdbSettings {
  let probeDomain = base.probeDomain;
  if (o.probeDomain !== undefined) {
    const d = o.probeDomain.replace(/\.$/, '').toLowerCase();
    if (!isHostName(d)) throw usage(`--probe-domain takes a domain name, got "${o.probeDomain}"`);
    probeDomain = d;
  }
  if (o.prove === true && probeDomain === null) throw usage('--prove needs --probe-domain (or dnsbl.probeDomain in the configuration): a domain you control whose mail reaches the sink');
  if (o.prove === false) probeDomain = null;
  let testPorts = base.testPorts;
  try {
    if (o.port && o.port.length > 0) testPorts = o.port.flatMap((p) => p.split(',')).filter((p) => p !== '').map(parsePortSpec);
  } catch (err) {
    throw usage((err as Error).message);
  }
  return {
    ...base,
    probeDomain,
    testPorts,
    ...(o.sink !== undefined ? { sink: hostPort(o.sink, 'sink', 25) } : {}),
    ...(o.wait !== undefined ? { probeWaitMs: seconds(o.wait, 'wait')! } : {}),
    ...(o.budget !== undefined ? { testBudgetMs: seconds(o.budget, 'budget')! } : {}),
    ...(o.sourceAddress !== undefined ? { sourceAddress: hostPort(o.sourceAddress, 'source-address', 1).address } : {}),
    ...(o.allowPrivate ? { allowPrivateTargets: true } : {}),
  };
}

/** Adds the `dnsbl` command and its subcommands to the program. */
export function registerDnsblCommands(
  program: Command,
  io: DnsblCommandIo,
  setExit: (code: number) => void,
  configFrom: (opts: { config?: string }) => Config,
  options: DnsblCommandOptions = {},
): Command {
  const now = options.now ?? Date.now;
  const makeTester = options.testHost ?? ((s: OrdbSettings) => createTestHost(s, NULL_LOGGER));
  const dnsbl = program.command('dnsbl').description('the open-relay DNS blocklist (ORDB): listings, submissions, retests, export');

  const open = (opts: CommonOpts): { config: Config; settings: OrdbSettings; store: ListingStore } => {
    const config = configFrom(opts);
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const settings = ordbSettings(config);
    return { config, settings, store: ListingStore.open(settings.databasePath, { clock: { now } }) };
  };

  const refused = (r: Refused): void => {
    io.err(`relayguard: ${r.message} [${r.code}]`);
    setExit(1);
  };

  const withTester = (cmd: Command): Command =>
    cmd
      .option('--now', 'run the test here and now instead of leaving it to the running relay\'s scheduler')
      .option('--prove', 'with --now: proof mode (needs --probe-domain or dnsbl.probeDomain)')
      .option('--no-prove', 'with --now: safe mode even if a probe domain is configured (never lists)')
      .option('--probe-domain <domain>', 'with --now: a domain you control whose mail reaches the sink')
      .option('--sink <address:port>', 'with --now: where the probe sink listens (default dnsbl.sink, 0.0.0.0:25)')
      .option('--wait <seconds>', 'with --now: how long to wait for probes')
      .option('-p, --port <port>', 'with --now: port to test, PORT or PORT:ROLE; repeatable (default 25, 587, 465)', collect)
      .option('--source-address <ip>', 'with --now: connect from this local address')
      .option('--budget <seconds>', 'with --now: time budget of the test');

  /** Runs one test now; prints the outcome. */
  const runNow = async (store: ListingStore, settings: OrdbSettings, ip: string, opts: TesterOpts & CommonOpts): Promise<TestOutcome | Refused> => {
    const s = testerSettings(settings, opts);
    const tester = await makeTester(s);
    try {
      const wf = new OrdbWorkflow({
        store, test: tester.test, prove: tester.prove, clock: { now }, rateLimit: { perSubmitterPerHour: 0 },
        retestIntervalMs: s.retestIntervalMs, retryIntervalMs: s.retryIntervalMs, excluded: s.excluded, allowNonGlobal: s.allowPrivateTargets,
      });
      if (!opts.json) io.out(`testing ${ip} (${tester.prove ? `proof mode, probes to ${s.probeDomain}` : 'safe mode: a relay is never listed without proof'})...`);
      return await wf.testNow(ip);
    } finally {
      await tester.close();
    }
  };

  const printOutcome = (o: TestOutcome | Refused, store: ListingStore, json: boolean | undefined): void => {
    if ('ok' in o) return refused(o);
    const l = store.get(o.network);
    if (json) { io.out(JSON.stringify({ outcome: o, listing: l ? listingJson(l) : null })); return; }
    io.out(`${o.network}: ${o.verdict ?? '-'} -> ${o.action} (${o.before} -> ${o.after})`);
    io.out(`  ${printable(o.detail)}`);
    const flag = l ? ordbEvidence(l)?.flagged : null;
    if (flag) io.out(`  FLAGGED for a human: ${printable(flag)}`);
  };

  dnsbl
    .command('add')
    .description('list an address or network by hand (history kept); single open-relay addresses are retested on schedule')
    .argument('<network>', 'IP address or CIDR network')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--category <category>', `${Object.keys(CATEGORIES).join(', ')} (default open-relay)`)
    .option('--reason <text>', 'reason shown in the TXT record (default: the category\'s)')
    .option('--no-retest', 'do not retest this listing automatically')
    .option('--json', 'print the listing as JSON')
    .action((network: string, opts: CommonOpts & { category?: string; reason?: string; retest: boolean }) => {
      const category = opts.category ?? 'open-relay';
      if (!isCategory(category)) throw usage(`--category takes ${Object.keys(CATEGORIES).join(', ')}; got "${category}"`);
      const { store, settings } = open(opts);
      try {
        const before = store.get(network);
        const host = !network.includes('/');
        const retest = opts.retest && host && category === 'open-relay';
        const l = store.add({
          network, category: category as ListingCategory, reason: opts.reason ?? null,
          nextRetest: retest ? now() + settings.retestIntervalMs : null, detail: 'listed by hand (relayguard dnsbl add)',
        });
        if (opts.json) io.out(JSON.stringify(listingJson(l)));
        if (l.state === 'excluded') {
          if (!opts.json) io.err(`relayguard: ${l.network} is excluded: not listed (remove the exclusion first with "dnsbl remove ${l.network}")`);
          setExit(1);
          return;
        }
        if (!opts.json) io.out(`${before?.state === 'listed' ? 'updated' : 'listed'} ${l.network} (${l.category}, ${l.code})${retest ? `, retest ${iso(l.nextRetest)}` : ''}`);
      } finally { store.close(); }
    });

  dnsbl
    .command('remove')
    .description('delist an address or network, or lift an exclusion (the entry and its history stay)')
    .argument('<network>', 'IP address or CIDR network as listed')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'print the entry as JSON')
    .action((network: string, opts: CommonOpts) => {
      const { store } = open(opts);
      try {
        const before = store.get(network);
        if (before === null) {
          const covering = network.includes('/') ? null : store.lookup(network).effective;
          io.err(`relayguard: ${network} is not in the list${covering ? ` (it is covered by ${covering.network}, ${covering.state})` : ''}`);
          setExit(1);
          return;
        }
        const l = store.delist(network, { detail: 'removed by hand (relayguard dnsbl remove)' });
        if (opts.json) io.out(JSON.stringify(listingJson(l)));
        else io.out(before.state === 'excluded' ? `exclusion of ${l.network} lifted` : `delisted ${l.network}${before.state === 'delisted' ? ' (it was not listed)' : ''}`);
      } finally { store.close(); }
    });

  dnsbl
    .command('exclude')
    .description('never test or list an address or network (wins over any listing inside it)')
    .argument('<network>', 'IP address or CIDR network')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--reason <text>', 'why (kept with the entry)')
    .option('--json', 'print the entry as JSON')
    .action((network: string, opts: CommonOpts & { reason?: string }) => {
      const { store } = open(opts);
      try {
        const l = store.exclude(network, { reason: opts.reason ?? null, detail: 'excluded by hand (relayguard dnsbl exclude)' });
        if (opts.json) io.out(JSON.stringify(listingJson(l)));
        else io.out(`excluded ${l.network}: never tested, never listed`);
      } finally { store.close(); }
    });

  dnsbl
    .command('lookup')
    .description('what the list says about an address (exit 0 listed, 1 not listed); --server also asks a DNS server')
    .argument('<ip>', 'IP address')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--zone <zone>', 'DNS zone to query (default dnsbl.zone)')
    .option('--server <address:port>', 'query this DNS server (e.g. 127.0.0.1:5353) instead of only the local store')
    .option('--history', 'print the history of the matching entries')
    .option('--evidence', 'with --json: include the evidence (the tester report)')
    .option('--json', 'JSON output')
    .action(async (ip: string, opts: CommonOpts & { zone?: string; server?: string; history?: boolean; evidence?: boolean }) => {
      const { store, settings } = open(opts);
      try {
        if (ip.includes('/')) throw usage('lookup takes one address, not a network');
        let answer;
        try {
          answer = store.lookup(ip);
        } catch (err) {
          throw usage((err as Error).message);
        }
        let dns = null;
        if (opts.server !== undefined) {
          const server = hostPort(opts.server, 'server', 53);
          const resolver = new dnsPromises.Resolver({ timeout: 3000, tries: 2 });
          resolver.setServers([server.address.includes(':') ? `[${server.address}]:${server.port}` : `${server.address}:${server.port}`]);
          dns = await new DnsblClient({ resolver, timeoutMs: 8000 }).lookup(ip, opts.zone ?? settings.zone);
        } else if (opts.zone !== undefined) {
          throw usage('--zone needs --server (which DNS server to ask)');
        }
        const histories = opts.history ? answer.matches.map((m) => ({ network: m.network, history: store.history(m.network) })) : [];
        if (opts.json) {
          io.out(JSON.stringify({
            address: ip, listed: answer.listed,
            effective: answer.effective ? listingJson(answer.effective, opts.evidence) : null,
            matches: answer.matches.map((m) => listingJson(m, opts.evidence)),
            ...(opts.history ? { history: histories } : {}),
            ...(dns ? { dns } : {}),
          }));
        } else {
          io.out(`${ip}: ${answer.listed ? `LISTED in the store as ${answer.effective!.network} (${answer.effective!.category}, ${answer.effective!.code})` : answer.effective?.state === 'excluded' ? `excluded (${answer.effective.network})` : 'not listed in the store'}`);
          for (const m of answer.matches) io.out(`  ${listingLine(m)}`);
          for (const h of histories) {
            io.out(`  history of ${h.network}:`);
            for (const e of h.history) io.out(`    ${iso(e.at)}  ${e.event.padEnd(10)} ${e.state.padEnd(8)} ${e.detail ? printable(e.detail) : ''}`);
          }
          if (dns) {
            const what = dns.kind === 'listed' ? `LISTED ${dns.codes.join(', ')}${dns.txt ? ` "${printable(dns.txt)}"` : ''}`
              : dns.kind === 'not-listed' ? 'not listed' : dns.kind === 'broken' ? `BROKEN answer: ${printable(dns.broken)}` : `lookup failed: ${dns.error} (${printable(dns.detail)})`;
            io.out(`  DNS ${dns.name} @${opts.server}: ${what}`);
          }
        }
        if (dns) setExit(dns.kind === 'listed' ? 0 : dns.kind === 'not-listed' ? 1 : 3);
        else setExit(answer.listed ? 0 : 1);
      } finally { store.close(); }
    });

  dnsbl
    .command('list')
    .description('list the entries (listings, pending submissions, delisted, exclusions)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--state <state>', `only this state: ${LISTING_STATES.join(', ')}`)
    .option('--category <category>', `only this category: ${Object.keys(CATEGORIES).join(', ')}`)
    .option('--flagged', 'only entries flagged for a human (relaying accepted without proof, or untestable)')
    .option('--limit <n>', 'at most n entries (default 1000)')
    .option('--json', 'one JSON object per entry, one per line')
    .action((opts: CommonOpts & { state?: string; category?: string; flagged?: boolean; limit?: string }) => {
      if (opts.state !== undefined && !LISTING_STATES.includes(opts.state as ListingState)) throw usage(`--state takes ${LISTING_STATES.join(', ')}; got "${opts.state}"`);
      if (opts.category !== undefined && !isCategory(opts.category)) throw usage(`--category takes ${Object.keys(CATEGORIES).join(', ')}; got "${opts.category}"`);
      if (opts.limit !== undefined && !/^\d{1,6}$/.test(opts.limit)) throw usage(`--limit takes a whole number, got "${opts.limit}"`);
      const { store } = open(opts);
      try {
        let rows = store.list({
          ...(opts.state ? { state: opts.state as ListingState } : {}),
          ...(opts.category ? { category: opts.category as ListingCategory } : {}),
          limit: opts.limit !== undefined ? Number(opts.limit) : 1000,
        });
        if (opts.flagged) rows = rows.filter((l) => ordbEvidence(l)?.flagged);
        if (opts.json) { for (const l of rows) io.out(JSON.stringify(listingJson(l))); return; }
        if (rows.length === 0) { io.out('no entries'); return; }
        for (const l of rows) io.out(listingLine(l));
        io.out(`-- ${rows.length} entr${rows.length === 1 ? 'y' : 'ies'}; zone serial ${store.serial()}`);
      } finally { store.close(); }
    });

  withTester(
    dnsbl
      .command('submit')
      .description('submit an address for testing; the running relay tests it (or --now here); only a proved relay is listed')
      .argument('<ip>', 'IP address')
      .option('-c, --config <file>', 'relayguard.yaml to use')
      .option('--submitter <name>', 'who submitted it (kept in the history; default cli)')
      .option('--allow-private', 'accept a loopback, private or reserved address (labs)')
      .option('--json', 'JSON output'),
  ).action(async (ip: string, opts: CommonOpts & TesterOpts & { submitter?: string; now?: boolean }) => {
    const { store, settings } = open(opts);
    try {
      if (opts.now) testerSettings(settings, opts); // option errors before anything is stored
      const wf = new OrdbWorkflow({
        store, test: async () => { throw new Error('not here'); }, clock: { now }, rateLimit: { perSubmitterPerHour: 0 },
        excluded: settings.excluded, allowNonGlobal: settings.allowPrivateTargets || opts.allowPrivate === true,
      });
      const r = wf.submit(ip, opts.submitter ?? 'cli');
      if (!r.ok) return refused(r);
      if (!opts.now || r.status === 'already-listed') {
        if (opts.json) io.out(JSON.stringify({ status: r.status, listing: r.listing ? listingJson(r.listing) : null }));
        else io.out(r.status === 'queued' ? `submitted ${r.listing!.network}: the relay's scheduler will test it (or use --now)`
          : r.status === 'already-pending' ? `${r.listing!.network} is already waiting for a test` : `${ip} is already listed (${r.listing!.network})`);
        return;
      }
      printOutcome(await runNow(store, settings, r.listing!.network, opts), store, opts.json);
    } finally { store.close(); }
  });

  withTester(
    dnsbl
      .command('retest')
      .description('retest a listed or pending address now (the relay\'s scheduler, or --now here); a closed relay is delisted')
      .argument('<ip>', 'IP address')
      .option('-c, --config <file>', 'relayguard.yaml to use')
      .option('--json', 'JSON output'),
  ).action(async (ip: string, opts: CommonOpts & TesterOpts & { now?: boolean }) => {
    const { store, settings } = open(opts);
    try {
      if (opts.now) { printOutcome(await runNow(store, settings, ip, opts), store, opts.json); return; }
      const wf = new OrdbWorkflow({ store, test: async () => { throw new Error('not here'); }, clock: { now } });
      const r = wf.scheduleRetest(ip, 'cli');
      if (!r.ok) return refused(r);
      if (opts.json) io.out(JSON.stringify({ status: r.status, listing: listingJson(r.listing) }));
      else io.out(`retest of ${r.listing.network} scheduled: the relay's scheduler will run it (or use --now)`);
    } finally { store.close(); }
  });

  dnsbl
    .command('export')
    .description('write the zone as rbldnsd data files (ip4set + ip6trie) or a BIND master file')
    .requiredOption('--format <format>', 'rbldnsd or bind')
    .requiredOption('--out <dir>', 'directory to write into (files are replaced atomically)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'print what was written as JSON')
    .action(async (opts: CommonOpts & { format: string; out: string }) => {
      if (opts.format !== 'rbldnsd' && opts.format !== 'bind') throw usage(`--format takes rbldnsd or bind, got "${opts.format}"`);
      const { store, settings, config } = open(opts);
      try {
        const zone = zoneFromStore(store, { apex: settings.zone, ttl: settings.ttlSeconds, evidenceUrl: settings.evidenceUrl, soa: { mname: config.hostname } });
        mkdirSync(opts.out, { recursive: true });
        if (opts.format === 'rbldnsd') {
          const f = await writeRbldnsdFiles(zone, opts.out);
          if (opts.json) io.out(JSON.stringify({ format: 'rbldnsd', serial: zone.serial, files: [f.ip4set, f.ip6trie], args: f.args }));
          else {
            io.out(`wrote ${f.ip4set} and ${f.ip6trie} (serial ${zone.serial})`);
            io.out(`serve with: rbldnsd -b ADDRESS/PORT -w ${opts.out} ${f.args.join(' ')}`);
          }
        } else {
          const path = join(opts.out, `${zone.apex}.zone`);
          await writeBindZone(zone, path);
          if (opts.json) io.out(JSON.stringify({ format: 'bind', serial: zone.serial, files: [path] }));
          else io.out(`wrote ${path} (serial ${zone.serial})`);
        }
      } finally { store.close(); }
    });

  return dnsbl;
}
