/**
 * `relayguard dnsbl add|remove|exclude|lookup|list|submit|retest|export|worker`: the ORDB from the command line.
 * Works on the listing store in dataDir (relayguard.db), next to a running `relayguard serve`: its DNS server picks
 * the changes up within seconds (it watches the zone serial), and the tester workers (the one inside serve, and any
 * `dnsbl worker` processes) test what `submit` and `retest` queue, taking the jobs with leases.
 * `--now` runs the test right here instead (proof mode when a probe domain is given or configured).
 * `export --watch` writes the export again whenever the serial moves (rbldnsd and rsync mirrors follow the files).
 * `add -i FILE` imports many networks in one transaction (all or nothing, unless --keep-going).
 *
 * Exit codes: 0 done (lookup: listed); 1 refused, unknown or not listed, or an import with bad lines; 2 usage (bad
 * address, bad option); 3 a DNS lookup (`lookup --server`) failed or got a broken answer.
 * Text from the store (reasons, submitters, tester details) passes through printable().
 * The listing store, the tester and the ORDB service are loaded by the actions that use them: a command that only
 * reads the list starts without the tester.
 */
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { promises as dnsPromises } from 'node:dns';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';
import type { Listing, ListingCategory, ListingState, ListingStore, Refused, TestOutcome } from '../dnsbl/index.ts';
import type { OrdbSettings, TestHost } from './ordb-service.ts';
import { databasePath } from './paths.ts';
import { printable } from './queue-commands.ts';

type DnsblModule = typeof import('../dnsbl/index.ts');
type TesterModule = typeof import('../tester/index.ts');
const loadDnsbl = (): Promise<DnsblModule> => import('../dnsbl/index.ts');
const loadTester = (): Promise<TesterModule> => import('../tester/index.ts');

/**
 * Categories and states as the help text names them (dnsbl/index.ts CATEGORIES and LISTING_STATES, kept equal by
 * dnsbl-commands.test.ts, so the help does not need the dnsbl module loaded).
 */
export const DNSBL_HELP = {
  categories: ['open-relay', 'open-proxy', 'honeypot', 'open-nntp'],
  states: ['pending', 'listed', 'delisted', 'excluded'],
} as const;

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
function listingJson(d: DnsblModule, l: Listing, withEvidence = false): Record<string, unknown> {
  const ev = d.ordbEvidence(l);
  const { evidence, ...rest } = l;
  return {
    ...rest,
    flagged: ev?.flagged ?? null,
    lastVerdict: ev?.verdict ?? null,
    ...(withEvidence ? { evidence } : {}),
  };
}

function listingLine(d: DnsblModule, l: Listing): string {
  const ev = d.ordbEvidence(l);
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
function testerSettings(t: TesterModule, base: OrdbSettings, o: TesterOpts): OrdbSettings {
  let probeDomain = base.probeDomain;
  if (o.probeDomain !== undefined) {
    const d = o.probeDomain.replace(/\.$/, '').toLowerCase();
    if (!t.isHostName(d)) throw usage(`--probe-domain takes a domain name, got "${o.probeDomain}"`);
    probeDomain = d;
  }
  if (o.prove === true && probeDomain === null) throw usage('--prove needs --probe-domain (or dnsbl.probeDomain in the configuration): a domain you control whose mail reaches the sink');
  if (o.prove === false) probeDomain = null;
  let testPorts = base.testPorts;
  try {
    if (o.port && o.port.length > 0) testPorts = o.port.flatMap((p) => p.split(',')).filter((p) => p !== '').map(t.parsePortSpec);
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

/** One line of an import file: `NETWORK [REASON...]`; `#` starts a comment. */
export interface ImportLine {
  readonly line: number;
  readonly network: string;
  readonly reason: string | null;
}

/** The non-empty lines of an import file, without comments, with their 1-based line numbers. */
export function parseImportLines(text: string): ImportLine[] {
  const out: ImportLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.replace(/\r$/, '').replace(/#.*$/, '').trim();
    if (l === '') continue;
    const m = /^(\S+)(?:\s+(.*))?$/.exec(l)!;
    out.push({ line: i + 1, network: m[1]!, reason: m[2] !== undefined && m[2].trim() !== '' ? m[2].trim() : null });
  }
  return out;
}

/** Reads an input file, or standard input for "-". */
export async function readInput(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw usage(`--input: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

type ImportOutcome = 'listed' | 'updated' | 'unchanged' | 'invalid' | 'excluded';

interface ImportResult {
  readonly line: number;
  readonly network: string;
  readonly outcome: ImportOutcome;
  readonly error?: string;
}

/**
 * Resolves at the first SIGTERM or SIGINT (and stops listening for them); keeps the process alive until then, or
 * until cancel() (which leaves the promise pending and the signals to their default action).
 */
function stopSignal(): Promise<NodeJS.Signals> & { cancel(): void } {
  let cancel = (): void => {};
  const p = new Promise<NodeJS.Signals>((resolve) => {
    const alive = setInterval(() => {}, 1 << 30);
    const off = (): void => {
      clearInterval(alive);
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
    };
    const on = (sig: NodeJS.Signals): void => { off(); resolve(sig); };
    cancel = off;
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
  return Object.assign(p, { cancel });
}

export interface WatchExportOptions {
  /** The store's serial now. */
  serial(): number;
  /** Writes the files; their paths. */
  write(): Promise<{ serial: number; files: string[] }>;
  report(w: { serial: number; files: string[] }): void;
  error(err: unknown): void;
  readonly intervalMs: number;
  readonly until: Promise<unknown>;
}

/**
 * `export --watch`: writes the files at once and again whenever the serial moves, until `until` settles. At most one
 * export per wall-clock second: rbldnsd notices a change by the file's modification time in whole seconds, so a
 * second export within the same second could go unseen; a change that comes sooner waits for the next second. A
 * failed export is retried at the next check.
 */
export async function watchExport(o: WatchExportOptions): Promise<void> {
  let done = false;
  let wake: (() => void) | null = null;
  void o.until.then(() => { done = true; wake?.(); });
  const pause = (ms: number): Promise<void> => new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    wake = () => { clearTimeout(t); resolve(); };
  });
  let last: number | null = null;
  /** The whole-second modification time of the last export's files. */
  let stamp = -1;
  while (!done) {
    const serial = o.serial();
    if (serial !== last) {
      // Into the next second (with a margin: file times come from the kernel's coarse clock, a tick behind).
      const wait = (stamp + 1) * 1000 + 30 - Date.now();
      if (wait > 0) { await pause(wait); if (done) break; }
      try {
        const w = await o.write();
        const s = Math.max(...w.files.map((f) => Math.floor(statSync(f).mtimeMs / 1000)));
        if (s > stamp) {
          last = serial; // a change made while writing moves the serial again: exported at the next check
          o.report(w);
        } // else: the clock had not moved on after all; written again in the next second
        stamp = Math.max(stamp, s);
      } catch (err) {
        o.error(err);
      }
    }
    if (done) break;
    await pause(o.intervalMs);
  }
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
  const makeTester = options.testHost ?? (async (s: OrdbSettings): Promise<TestHost> => {
    const [{ createTestHost }, { NULL_LOGGER }] = await Promise.all([import('./ordb-service.ts'), import('../core/log.ts')]);
    return createTestHost(s, NULL_LOGGER);
  });
  const settingsOf = async (config: Config): Promise<OrdbSettings> => (await import('./ordb-service.ts')).ordbSettings(config);
  const dnsbl = program.command('dnsbl').description('the open-relay DNS blocklist (ORDB): listings, submissions, retests, export');

  const open = async (opts: CommonOpts): Promise<{ d: DnsblModule; config: Config; store: ListingStore }> => {
    const config = configFrom(opts);
    const d = await loadDnsbl();
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    return { d, config, store: d.ListingStore.open(databasePath(config), { clock: { now } }) };
  };

  const refused = (r: Refused): void => {
    io.err(`relayguard: ${r.message} [${r.code}]`);
    setExit(1);
  };

  const checkCategory = (d: DnsblModule, category: string, name = '--category'): ListingCategory => {
    if (!d.isCategory(category)) throw usage(`${name} takes ${Object.keys(d.CATEGORIES).join(', ')}; got "${category}"`);
    return category;
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
  const runNow = async (d: DnsblModule, store: ListingStore, settings: OrdbSettings, ip: string, opts: TesterOpts & CommonOpts): Promise<TestOutcome | Refused> => {
    const s = testerSettings(await loadTester(), settings, opts);
    const tester = await makeTester(s);
    // The test runs as the address's job (jobs.ts): a worker elsewhere does not test it at the same time.
    let worker: InstanceType<DnsblModule['OrdbWorker']> | null = null;
    try {
      const wf = new d.OrdbWorkflow({
        store, test: tester.test, prove: tester.prove, clock: { now }, rateLimit: { perSubmitterPerHour: 0 },
        retestIntervalMs: s.retestIntervalMs, retryIntervalMs: s.retryIntervalMs, excluded: s.excluded, allowNonGlobal: s.allowPrivateTargets,
        testNowVia: (address, kind) => worker!.runNow(address, kind),
      });
      worker = new d.OrdbWorker({ jobs: new d.JobQueue(store, { clock: { now } }), workflow: wf, clock: { now }, leaseMs: s.jobLeaseMs });
      if (!opts.json) io.out(`testing ${ip} (${tester.prove ? `proof mode, probes to ${s.probeDomain}` : 'safe mode: a relay is never listed without proof'})...`);
      return await wf.testNow(ip);
    } finally {
      await worker?.stop();
      await tester.close();
    }
  };

  const printOutcome = (d: DnsblModule, o: TestOutcome | Refused, store: ListingStore, json: boolean | undefined): void => {
    if ('ok' in o) return refused(o);
    const l = store.get(o.network);
    if (json) { io.out(JSON.stringify({ outcome: o, listing: l ? listingJson(d, l) : null })); return; }
    io.out(`${o.network}: ${o.verdict ?? '-'} -> ${o.action} (${o.before} -> ${o.after})`);
    io.out(`  ${printable(o.detail)}`);
    const flag = l ? d.ordbEvidence(l)?.flagged : null;
    if (flag) io.out(`  FLAGGED for a human: ${printable(flag)}`);
  };

  type AddOpts = CommonOpts & { category?: string; reason?: string; retest: boolean; input?: string; keepGoing?: boolean };

  /** `dnsbl add -i FILE`: every line checked first, then one transaction (one zone serial step). */
  const importFile = async (opts: AddOpts & { input: string }, category: ListingCategory, d: DnsblModule, store: ListingStore, config: Config): Promise<void> => {
    const lines = parseImportLines(await readInput(opts.input));
    const results: ImportResult[] = [];
    const inputs: Parameters<ListingStore['addMany']>[0] extends Iterable<infer T> ? T[] : never = [];
    const seen = new Map<string, number>();
    const t = now();
    for (const l of lines) {
      const n = d.parseNetwork(l.network);
      if ('error' in n) { results.push({ line: l.line, network: l.network, outcome: 'invalid', error: n.error }); continue; }
      const reason = l.reason ?? opts.reason ?? null;
      if (reason !== null && reason.length > d.MAX_REASON) { results.push({ line: l.line, network: n.text, outcome: 'invalid', error: `reason longer than ${d.MAX_REASON} characters` }); continue; }
      if (reason !== null && /[\x00-\x08\x0a-\x1f\x7f]/.test(reason)) { results.push({ line: l.line, network: n.text, outcome: 'invalid', error: 'reason contains a control character' }); continue; }
      const first = seen.get(n.text);
      if (first !== undefined) { results.push({ line: l.line, network: n.text, outcome: 'invalid', error: `duplicate of line ${first}` }); continue; }
      seen.set(n.text, l.line);
      const before = store.get(n.text);
      // An exclusion wins over any listing inside it: such a line would be stored but never served.
      const exclusion = store.lookup(n.text.split('/')[0]!).matches.find((m) => m.state === 'excluded' && m.prefix <= n.prefix);
      if (exclusion !== undefined) {
        const error = exclusion.network === n.text ? `${n.text} is excluded: not listed` : `${n.text} is inside the exclusion ${exclusion.network}: not listed`;
        results.push({ line: l.line, network: n.text, outcome: 'excluded', error });
        continue;
      }
      // A tab inside the reason column is a control character for the store; between the columns it is a separator.
      const cleanReason = reason?.replace(/\t/g, ' ') ?? null;
      if (before?.state === 'listed' && before.category === category && (cleanReason === null || cleanReason === before.reason)) {
        results.push({ line: l.line, network: n.text, outcome: 'unchanged' });
        continue;
      }
      const host = n.prefix === (n.family === 4 ? 32 : 128);
      const retest = opts.retest && host && category === 'open-relay';
      inputs.push({
        network: n.text, category, reason: cleanReason, nextRetest: retest ? t + config.dnsbl.retestInterval : null,
        detail: `listed by hand (relayguard dnsbl add -i, line ${l.line})`,
      });
      results.push({ line: l.line, network: n.text, outcome: before?.state === 'listed' ? 'updated' : 'listed' });
    }
    const bad = results.filter((r) => r.outcome === 'invalid' || r.outcome === 'excluded');
    const apply = inputs.length > 0 && (bad.length === 0 || opts.keepGoing === true);
    if (apply) store.addMany(inputs);
    const count = (o: ImportOutcome): number => results.filter((r) => r.outcome === o).length;
    const source = opts.input === '-' ? 'standard input' : opts.input;
    if (opts.json) {
      io.out(JSON.stringify({
        input: source, applied: apply, serial: store.serial(),
        counts: { listed: count('listed'), updated: count('updated'), unchanged: count('unchanged'), invalid: count('invalid'), excluded: count('excluded') },
        lines: results,
      }));
    } else {
      for (const r of bad) io.err(`relayguard: ${printable(source)}: line ${r.line}: ${printable(r.error ?? r.outcome)}`);
      const summary = `${count('listed')} listed, ${count('updated')} updated, ${count('unchanged')} unchanged, ${count('invalid')} invalid, ${count('excluded')} excluded`;
      if (apply) io.out(`imported ${source}: ${summary}${bad.length > 0 ? ' (the bad lines were skipped: --keep-going)' : ''}; zone serial ${store.serial()}`);
      else if (bad.length > 0) io.out(`nothing imported from ${source}: ${summary}; fix the lines above, or add --keep-going to import the good ones`);
      else io.out(`nothing to change from ${source}: ${summary}`);
    }
    if (bad.length > 0) setExit(1);
  };

  dnsbl
    .command('add')
    .description('list an address or network by hand (history kept); single open-relay addresses are retested on schedule; -i imports a file of them in one transaction')
    .argument('[network]', 'IP address or CIDR network (or give -i FILE)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('-i, --input <file>', 'import networks from a file ("-" = standard input): one per line, NETWORK [REASON], # comments; all lines or none (see --keep-going)')
    .option('--keep-going', 'with -i: import the good lines even when some are invalid or excluded (the exit code is still 1)')
    .option('--category <category>', `${DNSBL_HELP.categories.join(', ')} (default open-relay)`)
    .option('--reason <text>', 'reason shown in the TXT record (default: the category\'s; with -i, for lines without their own)')
    .option('--no-retest', 'do not retest this listing automatically')
    .option('--json', 'print the listing as JSON (with -i: the import report)')
    .addHelpText('after', '\nImport file example (-i):\n  # network        reason (optional; default --reason, else the category\'s)\n  192.0.2.25       open relay, reported by abuse@example.net\n  198.51.100.0/24\n  2001:db8::25\n\nEvery line is checked before anything is written: an invalid, duplicate or excluded line makes the command\nexit 1 with nothing imported, unless --keep-going. Lines already listed with the same category and reason\nare left unchanged (no new history event). One transaction, so the zone serial steps once.')
    .action(async (network: string | undefined, opts: AddOpts) => {
      if (network !== undefined && opts.input !== undefined) throw usage('give a network or --input FILE, not both');
      if (network === undefined && opts.input === undefined) throw usage('give a network (IP address or CIDR), or --input FILE to import many');
      if (opts.keepGoing && opts.input === undefined) throw usage('--keep-going goes with --input');
      const { d, store, config } = await open(opts);
      try {
        const category = checkCategory(d, opts.category ?? 'open-relay');
        if (opts.input !== undefined) return await importFile({ ...opts, input: opts.input }, category, d, store, config);
        const net = network!;
        const before = store.get(net);
        const host = !net.includes('/');
        const retest = opts.retest && host && category === 'open-relay';
        const l = store.add({
          network: net, category, reason: opts.reason ?? null,
          nextRetest: retest ? now() + config.dnsbl.retestInterval : null, detail: 'listed by hand (relayguard dnsbl add)',
        });
        if (opts.json) io.out(JSON.stringify(listingJson(d, l)));
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
    .action(async (network: string, opts: CommonOpts) => {
      const { d, store } = await open(opts);
      try {
        const before = store.get(network);
        if (before === null) {
          const covering = network.includes('/') ? null : store.lookup(network).effective;
          io.err(`relayguard: ${network} is not in the list${covering ? ` (it is covered by ${covering.network}, ${covering.state})` : ''}`);
          setExit(1);
          return;
        }
        const l = store.delist(network, { detail: 'removed by hand (relayguard dnsbl remove)' });
        if (opts.json) io.out(JSON.stringify(listingJson(d, l)));
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
    .action(async (network: string, opts: CommonOpts & { reason?: string }) => {
      const { d, store } = await open(opts);
      try {
        const l = store.exclude(network, { reason: opts.reason ?? null, detail: 'excluded by hand (relayguard dnsbl exclude)' });
        if (opts.json) io.out(JSON.stringify(listingJson(d, l)));
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
      const { d, store, config } = await open(opts);
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
          dns = await new d.DnsblClient({ resolver, timeoutMs: 8000 }).lookup(ip, opts.zone ?? config.dnsbl.zone);
        } else if (opts.zone !== undefined) {
          throw usage('--zone needs --server (which DNS server to ask)');
        }
        const histories = opts.history ? answer.matches.map((m) => ({ network: m.network, history: store.history(m.network) })) : [];
        if (opts.json) {
          io.out(JSON.stringify({
            address: ip, listed: answer.listed,
            effective: answer.effective ? listingJson(d, answer.effective, opts.evidence) : null,
            matches: answer.matches.map((m) => listingJson(d, m, opts.evidence)),
            ...(opts.history ? { history: histories } : {}),
            ...(dns ? { dns } : {}),
          }));
        } else {
          io.out(`${ip}: ${answer.listed ? `LISTED in the store as ${answer.effective!.network} (${answer.effective!.category}, ${answer.effective!.code})` : answer.effective?.state === 'excluded' ? `excluded (${answer.effective.network})` : 'not listed in the store'}`);
          for (const m of answer.matches) io.out(`  ${listingLine(d, m)}`);
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
    .option('--state <state>', `only this state: ${DNSBL_HELP.states.join(', ')}`)
    .option('--category <category>', `only this category: ${DNSBL_HELP.categories.join(', ')}`)
    .option('--flagged', 'only entries flagged for a human (relaying accepted without proof, or untestable)')
    .option('--limit <n>', 'at most n entries (default 1000)')
    .option('--json', 'one JSON object per entry, one per line')
    .action(async (opts: CommonOpts & { state?: string; category?: string; flagged?: boolean; limit?: string }) => {
      const d = await loadDnsbl();
      if (opts.state !== undefined && !d.LISTING_STATES.includes(opts.state as ListingState)) throw usage(`--state takes ${d.LISTING_STATES.join(', ')}; got "${opts.state}"`);
      if (opts.category !== undefined) checkCategory(d, opts.category);
      if (opts.limit !== undefined && !/^\d{1,6}$/.test(opts.limit)) throw usage(`--limit takes a whole number, got "${opts.limit}"`);
      const { store } = await open(opts);
      try {
        let rows = store.list({
          ...(opts.state ? { state: opts.state as ListingState } : {}),
          ...(opts.category ? { category: opts.category as ListingCategory } : {}),
          limit: opts.limit !== undefined ? Number(opts.limit) : 1000,
        });
        if (opts.flagged) rows = rows.filter((l) => d.ordbEvidence(l)?.flagged);
        if (opts.json) { for (const l of rows) io.out(JSON.stringify(listingJson(d, l))); return; }
        if (rows.length === 0) { io.out('no entries'); return; }
        for (const l of rows) io.out(listingLine(d, l));
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
      .option('--check <checks>', 'what to test, comma-separated: smtp (open relay, listed under open-relay), proxy (open proxy on dnsbl.proxyPorts, listed under open-proxy when proved by arrival at the proxy sink), nntp (open Usenet server on dnsbl.nntpPorts, listed under open-nntp only when a test article posted to dnsbl.nntpGroup reads back); default smtp')
      .option('--allow-private', 'accept a loopback, private or reserved address (labs)')
      .option('--json', 'JSON output'),
  ).action(async (ip: string, opts: CommonOpts & TesterOpts & { submitter?: string; now?: boolean; check?: string }) => {
    const checks = opts.check?.split(',').map((c) => c.trim()).filter((c) => c !== '');
    if (checks !== undefined && (checks.length === 0 || checks.some((c) => c !== 'smtp' && c !== 'proxy' && c !== 'nntp'))) throw usage(`--check takes smtp, proxy, nntp (comma-separated); got "${opts.check}"`);
    const { d, store, config } = await open(opts);
    try {
      const settings = await settingsOf(config);
      if (opts.now) testerSettings(await loadTester(), settings, opts); // option errors before anything is stored
      const wf = new d.OrdbWorkflow({
        store, test: async () => { throw new Error('not here'); }, clock: { now }, rateLimit: { perSubmitterPerHour: 0 },
        excluded: settings.excluded, allowNonGlobal: settings.allowPrivateTargets || opts.allowPrivate === true,
      });
      const r = wf.submit(ip, opts.submitter ?? 'cli', checks ? { checks } : {});
      if (!r.ok) return refused(r);
      if (!opts.now || r.status === 'already-listed') {
        if (opts.json) io.out(JSON.stringify({ status: r.status, listing: r.listing ? listingJson(d, r.listing) : null }));
        else io.out(r.status === 'queued' ? `submitted ${r.listing!.network}: the relay's scheduler will test it (or use --now)`
          : r.status === 'already-pending' ? `${r.listing!.network} is already waiting for a test` : `${ip} is already listed (${r.listing!.network})`);
        return;
      }
      printOutcome(d, await runNow(d, store, settings, r.listing!.network, opts), store, opts.json);
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
    const { d, store, config } = await open(opts);
    try {
      if (opts.now) { printOutcome(d, await runNow(d, store, await settingsOf(config), ip, opts), store, opts.json); return; }
      const wf = new d.OrdbWorkflow({ store, test: async () => { throw new Error('not here'); }, clock: { now } });
      const r = wf.scheduleRetest(ip, 'cli');
      if (!r.ok) return refused(r);
      if (opts.json) io.out(JSON.stringify({ status: r.status, listing: listingJson(d, r.listing) }));
      else io.out(`retest of ${r.listing.network} scheduled: the relay's scheduler will run it (or use --now)`);
    } finally { store.close(); }
  });

  /** Writes the zone once; what was written. */
  const exportZone = async (d: DnsblModule, store: ListingStore, config: Config, format: 'rbldnsd' | 'bind', out: string): Promise<{ serial: number; files: string[]; args?: readonly string[] }> => {
    const settings = await settingsOf(config);
    const zone = d.zoneFromStore(store, { apex: settings.zone, ttl: settings.ttlSeconds, evidenceUrl: settings.evidenceUrl, ...(await import('./ordb-service.ts')).zoneApexOptions(config) });
    mkdirSync(out, { recursive: true });
    if (format === 'rbldnsd') {
      const f = await d.writeRbldnsdFiles(zone, out);
      return { serial: zone.serial, files: [f.ip4set, f.ip6trie], args: f.args };
    }
    const path = join(out, `${zone.apex}.zone`);
    await d.writeBindZone(zone, path);
    return { serial: zone.serial, files: [path] };
  };

  dnsbl
    .command('export')
    .description('write the zone as rbldnsd data files (ip4set + ip6trie) or a BIND master file; --watch keeps them current')
    .requiredOption('--format <format>', 'rbldnsd or bind')
    .requiredOption('--out <dir>', 'directory to write into (files are replaced atomically)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--watch', 'keep running: write the files again whenever the zone serial changes (rbldnsd reloads changed files on its own; rsync mirrors pick them up); SIGTERM/SIGINT stop')
    .option('--interval <seconds>', 'with --watch: how often to check the serial (default 5); implies --watch')
    .option('--json', 'print what was written as JSON (with --watch: one line per export)')
    .addHelpText('after', '\nWith --watch, each export writes temporary files and renames them over the old ones (never a half-written\nfile), at most once per second, so a reader that compares whole-second modification times (rbldnsd -c)\nsees every change. Start rbldnsd on the files after the first export: rbldnsd -c 10 ... reloads within 10 s.')
    .action(async (opts: CommonOpts & { format: string; out: string; watch?: boolean; interval?: string }) => {
      if (opts.format !== 'rbldnsd' && opts.format !== 'bind') throw usage(`--format takes rbldnsd or bind, got "${opts.format}"`);
      const format = opts.format;
      const intervalMs = seconds(opts.interval, 'interval');
      if (intervalMs !== undefined && intervalMs < 100) throw usage('--interval takes at least 0.1 seconds');
      const watch = opts.watch === true || intervalMs !== undefined;
      const { d, store, config } = await open(opts);
      const report = (w: { serial: number; files: string[]; args?: readonly string[] }): void => {
        if (opts.json) { io.out(JSON.stringify({ format, serial: w.serial, files: w.files, ...(w.args ? { args: w.args } : {}), ...(watch ? { at: new Date(now()).toISOString() } : {}) })); return; }
        io.out(`wrote ${w.files.join(' and ')} (serial ${w.serial})`);
        if (w.args && !watch) io.out(`serve with: rbldnsd -b ADDRESS/PORT -w ${opts.out} ${w.args.join(' ')}`);
      };
      try {
        if (!watch) { report(await exportZone(d, store, config, format, opts.out)); return; }
        await watchExport({
          serial: () => store.serial(),
          write: () => exportZone(d, store, config, format, opts.out),
          report,
          error: (err) => io.err(`relayguard: export failed: ${printable((err as Error)?.message ?? String(err))} [ERR_DNSBL_EXPORT]`),
          intervalMs: intervalMs ?? 5000,
          until: stopSignal(),
        });
      } finally { store.close(); }
    });

  dnsbl
    .command('worker')
    .description('run ORDB tests from the job queue (submissions, retests) until SIGTERM/SIGINT; run as many as you like on the same store')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--prove', 'proof mode (needs --probe-domain or dnsbl.probeDomain)')
    .option('--no-prove', 'safe mode even if a probe domain is configured (never lists)')
    .option('--probe-domain <domain>', 'a domain you control whose mail reaches this worker\'s sink')
    .option('--sink <address:port>', 'where this worker\'s probe sink listens (default dnsbl.sink; give each proof-mode worker on one machine its own)')
    .option('--wait <seconds>', 'how long to wait for probes (default dnsbl.probeWait)')
    .option('-p, --port <port>', 'port to test, PORT or PORT:ROLE; repeatable (default dnsbl.testPorts)', collect)
    .option('--source-address <ip>', 'connect from this local address (default dnsbl.sourceAddress)')
    .option('--budget <seconds>', 'time budget of one test (default dnsbl.testBudget)')
    .option('--concurrency <n>', 'tests at once (default dnsbl.testConcurrency)')
    .option('--lease <seconds>', 'lease on a job, renewed every third of it while the test runs (default dnsbl.jobLease)')
    .option('--poll <seconds>', 'how often an idle worker looks for jobs (default 2)')
    .option('--once', 'run what is due now, then exit (cron, tests)')
    .option('--json', 'with --once: print the outcomes as JSON lines')
    .addHelpText('after', '\nDue submissions and retests become jobs in the listing store; each worker claims them with a lease and\nrenews it while it tests. SIGTERM/SIGINT stop a worker cleanly: running tests are aborted and their jobs\ngiven back. A worker killed outright (kill -9, a crash) leaves its leases to expire; then another worker\ntakes its jobs over, and a result the dead one might still send is not recorded (each job\'s result is\napplied once). Logs are JSON events on standard output (log.format).')
    .action(async (opts: CommonOpts & TesterOpts & { concurrency?: string; lease?: string; poll?: string; once?: boolean }) => {
      if (opts.concurrency !== undefined && !/^\d{1,2}$/.test(opts.concurrency)) throw usage(`--concurrency takes a whole number (1-64), got "${opts.concurrency}"`);
      const concurrencyOpt = opts.concurrency === undefined ? undefined : Number(opts.concurrency);
      if (concurrencyOpt !== undefined && (concurrencyOpt < 1 || concurrencyOpt > 64)) throw usage('--concurrency takes 1-64');
      const leaseOpt = seconds(opts.lease, 'lease');
      if (leaseOpt !== undefined && leaseOpt < 2000) throw usage('--lease takes at least 2 seconds');
      const pollOpt = seconds(opts.poll, 'poll');
      if (pollOpt !== undefined && pollOpt < 10) throw usage('--poll takes at least 0.01 seconds');
      const { d, store, config } = await open(opts);
      let tester: TestHost | null = null;
      try {
        const settings = testerSettings(await loadTester(), await settingsOf(config), opts);
        const { createLogger } = await import('./logger.ts');
        const logger = createLogger({ level: config.log.level, format: config.log.format }).child({ component: 'dnsbl-worker' });
        tester = await makeTester(settings);
        const workflow = new d.OrdbWorkflow({
          store, test: tester.test, prove: tester.prove, clock: { now }, logger, rateLimit: { perSubmitterPerHour: 0 },
          retestIntervalMs: settings.retestIntervalMs, retryIntervalMs: settings.retryIntervalMs, excluded: settings.excluded,
          allowNonGlobal: settings.allowPrivateTargets,
        });
        const worker = new d.OrdbWorker({
          jobs: new d.JobQueue(store, { clock: { now } }), workflow, clock: { now }, logger,
          concurrency: concurrencyOpt ?? settings.testConcurrency, leaseMs: leaseOpt ?? settings.jobLeaseMs, pollMs: pollOpt ?? 2000,
        });
        if (opts.once) {
          // SIGTERM/SIGINT during the run: the running tests are aborted and their jobs given back.
          const signal = stopSignal();
          void signal.then(() => worker.stop());
          const out = await worker.drain().finally(() => signal.cancel());
          if (opts.json) for (const o of out) io.out(JSON.stringify(o));
          else io.out(`${out.length} test${out.length === 1 ? '' : 's'} run (${tester.prove ? 'proof' : 'safe'} mode)`);
        } else {
          const until = stopSignal();
          worker.start();
          await until;
          await worker.stop();
        }
        await workflow.stop();
      } finally {
        await tester?.close();
        store.close();
      }
    });

  return dnsbl;
}
