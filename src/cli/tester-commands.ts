/**
 * `relayguard test` and `relayguard scan`: the open-relay tester's command line. Exit codes (both commands):
 * 0 closed, 1 open, 2 inconclusive, 3 usage or network error. Usage errors found by the actions exit 3 through
 * setExit; commander's own parse errors (unknown option) are rethrown as a CommanderError with exitCode 3, which
 * the caller must pass through (testerMain() does; main.ts maps every other non-zero CommanderError to 2).
 */
import { appendFileSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { RelayguardError } from '../core/errors.ts';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import {
  DEFAULT_PORTS, ProbeSink, TRICKS, doneFromOutput, isRangeEntry, parseList, parsePortSpec, parseRange, renderJUnit,
  renderJson, renderProgress, renderText, runScan, runTester, selectTricks, type IpRange, type PortSpec, type RunOptions,
  type ScanLine, isHostName, parseIpTarget,
} from '../tester/index.ts';
import { DEFAULT_NNTP_PORTS, combineRun, isGroupName, parseNntpPortSpec, runNntp, type NntpPortSpec } from '../tester/nntp/index.ts';
import type { RunResult } from '../tester/result.ts';
import {
  MAX_SCAN_TARGETS, checkTargets, parseRanges, previousFromOutput, renderProgressLine, scanExitCode, type PreviousStatus, type ScanProgress,
} from '../tester/index.ts';
import {
  DEFAULT_PROXY_PORTS, DEFAULT_PROXY_TIMEOUTS, ProxySink, validateChecks, type Check, type ProbeAddresses, type ProxySinkListen,
} from '../tester/index.ts';

export interface TesterIo {
  out(s: string): void;
  err(s: string): void;
}

/** Thrown by option checks: message to stderr, exit 3. */
class UsageError extends Error {}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

function seconds(v: string | undefined, name: string, fallback: number, options: { min?: number } = {}): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !Number.isFinite(n) || n < (options.min ?? 0)) throw new UsageError(`--${name} takes a number of seconds, got "${v}"`);
  return n * 1000;
}

function count(v: string | undefined, name: string, fallback: number, min = 0): number {
  if (v === undefined) return fallback;
  if (!/^\d{1,9}$/.test(v) || Number(v) < min) throw new UsageError(`--${name} takes a whole number${min > 0 ? ` >= ${min}` : ''}, got "${v}"`);
  return Number(v);
}

function domainOption(v: string | undefined, name: string): string | undefined {
  if (v === undefined) return undefined;
  const d = v.replace(/\.$/, '').toLowerCase();
  if (!isHostName(d)) throw new UsageError(`--${name} takes a domain name, got "${v}"`);
  return d;
}

interface CommonOpts {
  port?: string[];
  sourceAddress?: string;
  testerDomain?: string;
  domain?: string;
  hostName?: string;
  helo?: string;
  tricks?: string;
  tlsOnly?: boolean;
  starttls?: boolean;
  pace?: string;
  budget?: string;
  timeout?: string;
  errorsPerSession?: string;
  transcript?: boolean;
  ipv4?: boolean;
  ipv6?: boolean;
  check?: string;
  proxyPort?: string[];
  proxySink?: string[];
  proxyControlPort?: string;
  probeAddress?: string[];
  probeHost?: string;
  proxyBudget?: string;
  proxyTimeout?: string;
}

function addCommonOptions(cmd: Command, defaultPorts: string): Command {
  return cmd
    .option('-p, --port <port>', `port to test, PORT or PORT:ROLE (ROLE mx, submission, submissions = implicit TLS); repeatable (default ${defaultPorts})`, collect)
    .option('--source-address <ip>', 'connect from this local address')
    .option('--tester-domain <domain>', 'domain of the probe recipients in safe mode (default example.net)')
    .option('--domain <domain>', "the target's mail domain (for the tricks that spoof it, and the local-delivery check)")
    .option('--host-name <name>', "the target's host name (default: from its banner)")
    .option('--helo <name>', 'EHLO name (default: the tester or probe domain)')
    .option('--tricks <ids>', 'comma-separated subset of the battery (see test --list-tricks)')
    .option('--tls-only', 'on mx and submission ports run the battery only after STARTTLS')
    .option('--no-starttls', 'do not run the battery after STARTTLS')
    .option('--pace <ms>', 'pause between tries, milliseconds (default 0)')
    .option('--budget <seconds>', 'time budget per target address (default 300)')
    .option('--timeout <seconds>', 'reply timeout per command (default 30; connect: at most 10)')
    .option('--errors-per-session <n>', 'open a fresh connection after this many error replies (default 8)')
    .option('--transcript', 'keep full transcripts with timings (printed with the text report, included in JSON)')
    .option('-4, --ipv4', 'only IPv4 addresses')
    .option('-6, --ipv6', 'only IPv6 addresses')
    .option('--check <checks>', 'what to test, comma-separated: smtp (open relay), proxy (open proxy), nntp (open Usenet server; test only); default smtp')
    .option('--proxy-port <port>', `proxy check: port to test (repeatable, comma-separated; "default" = ${DEFAULT_PROXY_PORTS.join(', ')}); default the common proxy ports`, collect)
    .option('--proxy-sink <address:port>', 'proxy check: where the sink the proxies are asked to reach listens (repeatable, one per address family; default 0.0.0.0:25)', collect)
    .option('--proxy-control-port <port>', 'proxy check: the sink\'s non-mail control port (default: any free port)')
    .option('--probe-address <ip>', 'proxy check: the sink\'s address as the proxies should reach it (one IPv4, one IPv6; default the --proxy-sink address)', collect)
    .option('--probe-host <name>', 'proxy check: a host name of the sink, for SOCKS4a and SOCKS5 by name (default the IPv4 probe address)')
    .option('--proxy-budget <seconds>', 'proxy check: time budget per address (default 60)')
    .option('--proxy-timeout <seconds>', 'proxy check: deadline for each whole reply from a proxy (default 8)');
}

/** --check → the checks (a usage error names the known ones: exit 3). */
function checksOption(v: string | undefined): Check[] {
  try {
    return validateChecks((v ?? 'smtp').split(','));
  } catch (err) {
    if (err instanceof RelayguardError) throw new UsageError(`${err.message} [${err.code}]`);
    throw err;
  }
}

function loopbackAddress(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}

interface ProxySetup {
  readonly sink: ProxySink;
  readonly options: {
    readonly ports: readonly number[]; readonly sink: ProxySink; readonly probeAddresses: ProbeAddresses; readonly budgetMs: number;
    readonly timeouts: { readonly step: number };
  };
}

/** The proxy check's options, checked before anything listens. */
function proxyPlan(opts: CommonOpts, targetsLoopback: boolean): { ports: number[]; listen: ProxySinkListen[]; probe: ProbeAddresses; budgetMs: number; stepMs: number } {
  const ports: number[] = [];
  for (const p of (opts.proxyPort ?? ['default']).flatMap((x) => x.split(',')).map((x) => x.trim()).filter((x) => x !== '')) {
    if (p === 'default') { for (const d of DEFAULT_PROXY_PORTS) if (!ports.includes(d)) ports.push(d); continue; }
    if (!/^\d{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) throw new UsageError(`--proxy-port takes a port number (or "default"), got "${p}"`);
    if (!ports.includes(Number(p))) ports.push(Number(p));
  }
  const sinks = (opts.proxySink ?? ['0.0.0.0:25']).map((v) => parseHostPort(v, 'proxy-sink'));
  const controlPort = count(opts.proxyControlPort, 'proxy-control-port', 0);
  if (controlPort > 65535) throw new UsageError(`--proxy-control-port takes a port number, got "${opts.proxyControlPort}"`);
  const listen: ProxySinkListen[] = [];
  for (const s of sinks) {
    listen.push({ address: s.address, port: s.port, kind: 'mail' });
    listen.push({ address: s.address, port: controlPort, kind: 'control' });
  }
  const probe: { v4?: string; v6?: string; name?: string } = {};
  for (const a of opts.probeAddress ?? []) {
    const ip = parseIpTarget(a);
    if (ip === null) throw new UsageError(`--probe-address takes an IP address, got "${a}"`);
    if (ip.includes(':')) probe.v6 = ip; else probe.v4 = ip;
  }
  const host = domainOption(opts.probeHost, 'probe-host');
  if (host) probe.name = host;
  const v4 = probe.v4 ?? sinks.map((s) => s.address).find((a) => !a.includes(':') && a !== '0.0.0.0');
  if (v4 === undefined) throw new UsageError('the proxy check needs the address proxies should connect to: give --probe-address (or --proxy-sink with a specific IPv4 address)');
  // A proxy asked for a loopback address would connect to itself: only loopback targets may be sent there.
  if (loopbackAddress(v4) && !targetsLoopback) throw new UsageError(`the probe address ${v4} is a loopback address: a remote proxy would connect to itself; give --probe-address with the sink's public address`);
  return {
    ports, listen, probe,
    budgetMs: seconds(opts.proxyBudget, 'proxy-budget', 60_000, { min: 0.1 }),
    stepMs: seconds(opts.proxyTimeout, 'proxy-timeout', DEFAULT_PROXY_TIMEOUTS.step, { min: 0.05 }),
  };
}

async function startProxy(plan: ReturnType<typeof proxyPlan>): Promise<ProxySetup> {
  const sink = await ProxySink.start({ listen: plan.listen });
  return { sink, options: { ports: plan.ports, sink, probeAddresses: plan.probe, budgetMs: plan.budgetMs, timeouts: { step: plan.stepMs } } };
}

function testerOptions(opts: CommonOpts, defaults: readonly PortSpec[]): Omit<RunOptions, 'proof'> {
  let ports: PortSpec[];
  try {
    ports = opts.port && opts.port.length > 0 ? opts.port.flatMap((p) => p.split(',')).filter((p) => p !== '').map(parsePortSpec) : [...defaults];
    const tricks = opts.tricks ? selectTricks(opts.tricks.split(',').map((s) => s.trim()).filter((s) => s !== '')) : TRICKS;
    if (opts.sourceAddress !== undefined && parseIpTarget(opts.sourceAddress) === null) throw new UsageError(`--source-address takes an IP address, got "${opts.sourceAddress}"`);
    if (opts.ipv4 && opts.ipv6) throw new UsageError('give -4 or -6, not both');
    const timeout = seconds(opts.timeout, 'timeout', 30_000, { min: 0.05 });
    const testerDomain = domainOption(opts.testerDomain, 'tester-domain') ?? 'example.net';
    const domain = domainOption(opts.domain, 'domain');
    const hostName = domainOption(opts.hostName, 'host-name');
    const helo = domainOption(opts.helo, 'helo');
    return {
      ports,
      tricks,
      testerDomain,
      ...(opts.sourceAddress !== undefined ? { sourceAddress: parseIpTarget(opts.sourceAddress)! } : {}),
      ...(domain ? { domain } : {}),
      ...(hostName ? { hostName } : {}),
      ...(helo ? { heloName: helo } : {}),
      ...(opts.tlsOnly ? { tlsOnly: true } : {}),
      ...(opts.starttls === false ? { noStartTls: true } : {}),
      paceMs: count(opts.pace, 'pace', 0),
      budgetMs: seconds(opts.budget, 'budget', 300_000, { min: 0.1 }),
      timeouts: { connect: Math.min(10_000, timeout), greeting: timeout, command: timeout },
      errorsPerSession: count(opts.errorsPerSession, 'errors-per-session', 8, 1),
      transcript: opts.transcript === true,
      resolve: { ...(opts.ipv4 ? { family: 4 as const } : {}), ...(opts.ipv6 ? { family: 6 as const } : {}) },
    };
  } catch (err) {
    if (err instanceof RangeError) throw new UsageError(err.message);
    throw err;
  }
}

/** The nntp check's own options; they need --check nntp, and --prove with nntp needs --nntp-group. */
function nntpOptions(opts: { nntpPort?: string[]; nntpGroup?: string; prove?: boolean }, checks: readonly Check[]): { ports: readonly NntpPortSpec[]; group: string | null } {
  if (!checks.includes('nntp')) {
    if (opts.nntpPort || opts.nntpGroup) throw new UsageError('--nntp-port and --nntp-group need --check nntp');
    return { ports: DEFAULT_NNTP_PORTS, group: null };
  }
  let ports: NntpPortSpec[] = [...DEFAULT_NNTP_PORTS];
  try {
    if (opts.nntpPort && opts.nntpPort.length > 0) ports = opts.nntpPort.flatMap((p) => p.split(',')).filter((p) => p !== '').map(parseNntpPortSpec);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (opts.nntpGroup !== undefined && !isGroupName(opts.nntpGroup)) throw new UsageError(`--nntp-group takes a newsgroup name (such as local.test), got "${opts.nntpGroup}"`);
  if (opts.prove && opts.nntpGroup === undefined) throw new UsageError('--prove with --check nntp needs --nntp-group: the group the server\'s admin named for the test article');
  if (!opts.prove && opts.nntpGroup !== undefined) throw new UsageError('--nntp-group needs --prove');
  return { ports, group: opts.nntpGroup ?? null };
}

function parseHostPort(v: string, name: string): { address: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v) ?? /^(\d{1,5})$/.exec(v);
  if (!m) throw new UsageError(`--${name} takes ADDRESS:PORT (or PORT), got "${v}"`);
  const port = Number(m[3] ?? m[1]);
  const address = m[3] !== undefined ? parseIpTarget(m[1] ?? m[2]!) : '0.0.0.0';
  if (address === null || port > 65535) throw new UsageError(`--${name} takes ADDRESS:PORT with an IP address, got "${v}"`);
  return { address, port };
}

function listTricks(io: TesterIo): void {
  io.out('id    kind   title / exercises / MAIL FROM -> RCPT TO');
  for (const t of TRICKS) {
    io.out(`${t.id.padEnd(5)} ${t.kind.padEnd(6)} ${t.title}${t.requires ? ` (needs ${t.requires.join(', ')})` : ''}`);
    io.out(`${' '.repeat(13)}${t.exercises}`);
    io.out(`${' '.repeat(13)}MAIL FROM:${t.mailFrom}${t.mailParams ? ` ${t.mailParams.join(' ')}` : ''} -> ${t.rcptTo.map((r) => `RCPT TO:${r.path}${r.params ? ` ${r.params.join(' ')}` : ''}`).join(', ')}`);
  }
}

/** Adds `test` and `scan` to a program. setExit receives the exit code (0-3). */
export function registerTesterCommands(program: Command, io: TesterIo, setExit: (code: number) => void): void {
  const guard = <A extends unknown[]>(fn: (...args: A) => Promise<void>) => async (...args: A): Promise<void> => {
    try {
      await fn(...args);
    } catch (err) {
      if (err instanceof UsageError || (err instanceof RelayguardError && err.code === 'ERR_USAGE')) {
        io.err(`relayguard: ${err.message}`);
        setExit(3);
        return;
      }
      const e = err as NodeJS.ErrnoException;
      if (e?.code === 'EADDRINUSE' || e?.code === 'EACCES' || e?.code === 'EADDRNOTAVAIL') {
        io.err(`relayguard: cannot listen: ${e.message} [${e.code}]`);
        setExit(3);
        return;
      }
      throw err;
    }
  };

  // Usage errors commander finds itself (unknown option, missing value) exit 3 like ours: they are rethrown as a
  // CommanderError with exitCode 3 (main.ts passes 3 through; help and --version keep 0).
  const usageExit = (err: CommanderError): never => {
    throw err.exitCode === 0 ? err : new CommanderError(3, err.code, err.message);
  };

  const test = addCommonOptions(program.command('test'), '25, 587, 465')
    .description('test hosts, IP addresses or mail domains (every MX, every A and AAAA) for open relaying; exit 0 closed, 1 open, 2 inconclusive, 3 error')
    .argument('[targets...]', 'IP address, host name or mail domain')
    .option('--no-mx', 'treat names as hosts (A/AAAA), not as mail domains (MX)')
    .option('--nntp-port <port>', 'nntp check: port to test, PORT or PORT:nntps (implicit TLS); repeatable (default 119, 563:nntps)', collect)
    .option('--nntp-group <group>', 'nntp check, proof mode: the group (named by the server\'s admin) to post the tagged test article to')
    .option('--prove', 'proof mode: send one tagged probe per accepted trick to --probe-domain; OPEN only when it arrives (nntp: post to --nntp-group, OPEN only when it reads back)')
    .option('--probe-domain <domain>', 'proof mode: a domain you control whose mail reaches the sink')
    .option('--sink <address:port>', 'proof mode: where the built-in sink listens (default 0.0.0.0:25)')
    .option('--wait <seconds>', 'proof mode: how long to wait for probes to arrive (default 30)')
    .option('--json', 'JSON report on stdout (schema relayguard-tester/2, docs/tester-json.md)')
    .option('--junit <file>', 'also write a JUnit XML report')
    .option('-v, --verbose', 'list every trick in the text report')
    .addOption(new Option('--color', 'colour the text report (default: when stdout is a terminal)'))
    .addOption(new Option('--no-color', 'no colour'))
    .option('--list-tricks', 'print the battery and exit')
    .action(guard(async (targets: string[], opts: CommonOpts & {
      mx?: boolean; prove?: boolean; probeDomain?: string; sink?: string; wait?: string; json?: boolean; junit?: string;
      verbose?: boolean; color?: boolean; listTricks?: boolean; check?: string; nntpPort?: string[]; nntpGroup?: string;
    }) => {
      if (opts.listTricks) { listTricks(io); setExit(0); return; }
      if (targets.length === 0) throw new UsageError('give at least one target (IP address, host name or mail domain)');
      const checks = checksOption(opts.check);
      const nntp = nntpOptions(opts, checks);
      const base = testerOptions(opts, DEFAULT_PORTS);
      const plan = checks.includes('proxy') ? proxyPlan(opts, targets.every((t) => { const ip = parseIpTarget(t); return ip !== null && loopbackAddress(ip); })) : null;
      let sink: ProbeSink | null = null;
      let proxy: ProxySetup | null = null;
      // runTester runs the smtp and proxy checks; nntp runs on its own (runNntp) and is folded in after.
      let options: RunOptions = { ...base, checks: checks.filter((c) => c !== 'nntp'), resolve: { ...base.resolve, ...(opts.mx === false ? { mx: false } : {}) } };
      if (opts.prove && !checks.includes('smtp')) {
        if (opts.probeDomain || opts.sink) throw new UsageError('--probe-domain and --sink are for the smtp check');
      } else if (opts.prove) {
        const probeDomain = domainOption(opts.probeDomain, 'probe-domain');
        if (!probeDomain) throw new UsageError('--prove needs --probe-domain: a domain you control whose mail reaches the sink');
        if (opts.testerDomain !== undefined && domainOption(opts.testerDomain, 'tester-domain') !== probeDomain) {
          throw new UsageError('in proof mode the probes go to --probe-domain; drop --tester-domain');
        }
        const where = parseHostPort(opts.sink ?? '0.0.0.0:25', 'sink');
        const cert = await generateSelfSigned(probeDomain);
        sink = await ProbeSink.start({ address: where.address, port: where.port, probeDomain, hostname: `sink.${probeDomain}`, tls: cert });
        options = { ...options, testerDomain: probeDomain, proof: { collector: sink, waitMs: seconds(opts.wait, 'wait', 30_000) } };
      } else if (opts.probeDomain || opts.sink || opts.wait) {
        throw new UsageError('--probe-domain, --sink and --wait need --prove');
      }
      try {
        if (plan) {
          proxy = await startProxy(plan);
          options = { ...options, proxy: proxy.options };
        }
        const started = Date.now();
        const startedAt = new Date().toISOString();
        const smtpRun = checks.some((c) => c !== 'nntp') ? await runTester(targets, options) : null;
        let run: RunResult = smtpRun!;
        if (checks.includes('nntp')) {
          const nntpRun = await runNntp(targets, {
            ports: nntp.ports, testerDomain: options.testerDomain, budgetMs: base.budgetMs ?? 300_000, transcript: base.transcript === true,
            ...(base.timeouts ? { timeouts: base.timeouts } : {}),
            ...(base.sourceAddress !== undefined ? { sourceAddress: base.sourceAddress } : {}),
            ...(base.resolve ? { resolve: base.resolve } : {}),
            ...(opts.prove && nntp.group ? { prove: { group: nntp.group, ...(opts.wait ? { waitMs: seconds(opts.wait, 'wait', 15_000) } : {}) } } : {}),
          });
          run = combineRun(smtpRun, nntpRun, { checks, testerDomain: options.testerDomain, startedAt, durationMs: Date.now() - started, mode: opts.prove ? 'prove' : 'safe' });
        }
        if (opts.json) io.out(renderJson(run));
        else io.out(renderText(run, { color: opts.color ?? (process.stdout.isTTY === true && !process.env['NO_COLOR']), verbose: opts.verbose === true, transcript: opts.transcript === true }));
        if (opts.junit) writeFileSync(opts.junit, renderJUnit(run));
        setExit(run.exitCode);
      } finally {
        await sink?.close();
        await proxy?.sink.close();
      }
    }));
  test.exitOverride(usageExit);
  test.addHelpText('after', '\nExamples:\n  relayguard test mx.example.org\n  relayguard test example.org --json > report.json\n  relayguard test 192.0.2.25 --port 2525:mx --source-address 192.0.2.99\n  relayguard test mx.example.org --prove --probe-domain probes.example.net --sink 0.0.0.0:25\n  relayguard test 192.0.2.8 --check proxy --proxy-sink 0.0.0.0:25 --probe-address 198.51.100.7\n  relayguard test 192.0.2.8 --check smtp,proxy --proxy-port 3128,1080 --proxy-sink 198.51.100.7:25\n  relayguard test news.example.org --check nntp\n  relayguard test news.example.org --check nntp --prove --nntp-group example.test');

  const scan = addCommonOptions(program.command('scan'), '25, 587, 465')
    .description('test many addresses (files, CIDR and a-b ranges, stdin) inside the ranges you name; JSON lines out; resumable')
    .argument('[targets...]', 'addresses, CIDR ranges (these two count as named ranges), a-b ranges (192.0.2.1-192.0.2.20, 192.0.2.1-20, 192.0.1-3.1-254, 2001:db8::1-2001:db8::ff) or names')
    .option('-i, --input <file>', 'read targets from a file ("-" = stdin), one per line, # comments')
    .option('--allow <range>', 'a range that may be scanned, CIDR or a-b (repeatable); a-b targets and targets from --input must fall inside one', collect)
    .option('--opt-out <file>', 'addresses and ranges never to test, one per line')
    .option('-o, --out <file>', 'write JSON lines here (default stdout)')
    .option('--resume', 'skip the addresses already in --out and append to it')
    .option('-c, --concurrency <n>', 'addresses tested at once (default 10)')
    .option('--rate <n>', 'new addresses per second (default 10, 0 = no limit)')
    .option('--max-targets <n>', `refuse to scan more addresses than this (default 65536, at most ${MAX_SCAN_TARGETS})`)
    .option('--progress', 'show progress even without a terminal (then as plain lines on stderr)')
    .option('--no-progress', 'no progress bar (default: shown when stderr is a terminal)')
    .option('--nntp-port <port>', 'nntp check: port to test, PORT or PORT:nntps (implicit TLS); repeatable (default 119, 563:nntps)', collect)
    .action(guard(async (targets: string[], opts: CommonOpts & {
      input?: string; allow?: string[]; optOut?: string; out?: string; resume?: boolean; concurrency?: string; rate?: string;
      maxTargets?: string; progress?: boolean; nntpPort?: string[];
    }) => {
      const inputs = [...targets];
      if (opts.input) {
        const text = opts.input === '-' ? await readStdin() : readText(opts.input, 'input');
        inputs.push(...parseList(text));
      }
      if (inputs.length === 0) throw new UsageError('give targets as arguments, with --input FILE, or --input - for stdin');
      const allow: IpRange[] = [];
      try {
        for (const a of opts.allow ?? []) allow.push(...parseRanges(a));
        for (const t of targets) if (isRangeEntry(t)) allow.push(parseRange(t));
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      if (allow.length === 0) throw new UsageError('name the ranges you may scan: give CIDR ranges as arguments or with --allow (scan refuses anything else; an a-b range needs --allow)');
      let optOut: IpRange[] = [];
      if (opts.optOut) {
        try { optOut = parseList(readText(opts.optOut, 'opt-out')).flatMap(parseRanges); } catch (err) { throw new UsageError(`--opt-out: ${(err as Error).message}`); }
      }
      if (opts.resume && !opts.out) throw new UsageError('--resume needs --out FILE (the previous output)');
      // every option and target is checked before the output file is touched
      const base = testerOptions(opts, DEFAULT_PORTS);
      const checks = checksOption(opts.check);
      if (checks.length !== 1) throw new UsageError('scan runs one check at a time: give --check smtp, --check proxy or --check nntp');
      // A scan never posts an article: the nntp check runs in safe mode (proof needs a group an admin names).
      const nntp = nntpOptions(opts, checks);
      const loopbackOnly = allow.every((r) => (r.family === 4 ? (r.first >> 24n) === 127n && (r.last >> 24n) === 127n : r.first === 1n && r.last === 1n));
      const plan = checks[0] === 'proxy' ? proxyPlan(opts, loopbackOnly) : null;
      const concurrency = count(opts.concurrency, 'concurrency', 10, 1);
      const ratePerSecond = count(opts.rate, 'rate', 10);
      const maxTargets = count(opts.maxTargets, 'max-targets', 65_536, 1);
      if (maxTargets > MAX_SCAN_TARGETS) throw new UsageError(`--max-targets takes at most ${MAX_SCAN_TARGETS}, got "${opts.maxTargets}"`);
      checkTargets(inputs, { maxTargets });
      let done = new Map<string, PreviousStatus>();
      if (opts.resume && opts.out && existsSync(opts.out)) {
        const previous = readFileSync(opts.out, 'utf8');
        done = previousFromOutput(previous);
        // a run cut short may have left half a line: start ours on a fresh one
        if (previous !== '' && !previous.endsWith('\n')) appendFileSync(opts.out, '\n');
      }
      if (opts.out && !opts.resume) writeFileSync(opts.out, '');
      // a terminal gets a bar redrawn in place (80 columns when its width is unknown, as under `script`);
      // --progress without a terminal gets a plain line every 5 s and at the end
      const tty = process.stderr.isTTY === true;
      const showProgress = opts.progress ?? tty;
      let lastDraw = 0;
      const emit = (line: ScanLine): void => {
        const text = JSON.stringify(line);
        if (opts.out) appendFileSync(opts.out, `${text}\n`);
        else io.out(text);
      };
      const proxy = plan ? await startProxy(plan) : null;
      const summary = await runScan(inputs, {
        tester: base,
        check: checks[0]!,
        ...(proxy ? { proxy: proxy.options } : {}),
        ...(checks[0] === 'nntp' ? { nntp: { ports: nntp.ports, ...(base.budgetMs !== undefined ? { budgetMs: base.budgetMs } : {}), ...(base.timeouts ? { timeouts: base.timeouts } : {}) } } : {}),
        allow,
        optOut,
        done,
        concurrency,
        ratePerSecond,
        maxTargets,
        ...(base.resolve ? { resolve: base.resolve } : {}),
        onLine: emit,
        onProgress: showProgress ? (p: ScanProgress) => {
          const now = Date.now();
          const last = p.done === p.total;
          if (!last && now - lastDraw < (tty ? 100 : 5000)) return;
          lastDraw = now;
          if (tty) process.stderr.write(`\r${renderProgress(p, now, process.stderr.columns)}${last ? '\n' : ''}`);
          else process.stderr.write(`${renderProgressLine(p, now)}\n`);
        } : undefined,
      }).finally(() => proxy?.sink.close());
      // the counts cover the whole scan, resumed addresses included, and so does the exit code
      io.err(`relayguard: scan of ${summary.addresses} address(es): ${summary.open} open, ${summary.inconclusive} inconclusive, ${summary.closed} closed, ${summary.noService} no service, ${summary.skipped} skipped (${summary.tested} tested now, ${summary.resumed} resumed)${opts.out ? ` -> ${opts.out}` : ''}`);
      setExit(scanExitCode(summary));
    }));
  scan.exitOverride(usageExit);
  scan.addHelpText('after', '\nExamples:\n  relayguard scan 192.0.2.0/24 --port 25 -o scan.jsonl\n  relayguard scan 192.0.2.10-192.0.2.40 --allow 192.0.2.0/24 -o scan.jsonl\n  relayguard scan --input hosts.txt --allow 192.0.2.0/24 --opt-out never.txt -o scan.jsonl --resume\n  relayguard scan 192.0.2.0/24 --check proxy --proxy-port 3128,1080,8080 --proxy-sink 198.51.100.7:25 -o proxies.jsonl\n  relayguard scan 192.0.2.0/24 --check nntp -o news.jsonl');
}

function readText(file: string, name: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--${name}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * A stand-alone entry point for the tester commands (tests, and until main.ts wires them): parses argv, runs,
 * and returns the exit code; commander usage errors are 3.
 */
export async function testerMain(argv: readonly string[], io: TesterIo): Promise<number> {
  let code = 0;
  const program = new Command('relayguard')
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .exitOverride();
  registerTesterCommands(program, io, (c) => { code = c; });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 3;
    io.err(`relayguard: ${(err as Error)?.stack ?? String(err)}`);
    return 3;
  }
}
