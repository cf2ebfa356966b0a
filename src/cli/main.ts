/**
 * The relayguard command line: argv -> config -> wiring -> run. Every command answers bad input with a
 * message on stderr and a non-zero exit code: 1 for a failed check, 2 for usage or configuration errors.
 *
 * Start-up time matters (scripts call `relayguard queue list` or `dnsbl add` in loops): this file loads commander
 * and the command definitions only. Each command loads what it uses when it runs: the configuration loader (zod,
 * yaml) for commands that read a configuration, the relay (TLS, delivery, DKIM, the DNS server) only for `serve`,
 * the tester only for `test`, `scan` and `dnsbl ... --now`.
 */
import { execFile } from 'node:child_process';
import cluster from 'node:cluster';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve as resolvePath } from 'node:path';
import { Command, CommanderError } from 'commander';
import type * as ConfigLoad from '../config/load.ts';
import type * as ConfigCheck from '../config/check.ts';
import type { Config } from '../config/schema.ts';
import { RelayguardError, errorCode } from '../core/errors.ts';
import type * as CliLogger from './logger.ts';
import { chownTree, dropPrivileges, isRoot, resolveIdentity, type Identity } from './privileges.ts';
import type * as Serve from './serve.ts';
import { announceReady, chownWorkerFiles, currentWorkerRole, ensureShardDir, workerAssembleOptions, workerConfig, workerCount } from './worker-role.ts';
import { registerQueueCommands } from './queue-commands.ts';
import { registerDnsblCommands } from './dnsbl-commands.ts';
import { registerAliasCommands } from './alias-commands.ts';
import { registerUserCommands } from './user-commands.ts';
import { registerAdminCommands } from './admin-commands.ts';
import { registerDbCommands } from './db-commands.ts';
import { registerAuditCommand } from './audit-commands.ts';

/**
 * Tells systemd (Type=notify, NotifyAccess=all) about readiness and stopping, through systemd-notify, when it
 * started us with a NOTIFY_SOCKET; nothing otherwise.
 */
function notifySystemd(state: string, logger: { warn(msg: string, fields?: Record<string, unknown>): void }): void {
  if (!process.env['NOTIFY_SOCKET']) return;
  execFile('systemd-notify', [`--pid=${process.pid}`, state], (err) => {
    if (err) logger.warn('systemd-notify failed', { state, err: String(err) });
  });
}

/** The package version (package.json next to src/ or dist/). */
export const VERSION: string = (() => {
  try {
    return String((JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
})();

interface Io {
  out(s: string): void;
  err(s: string): void;
}

const STDIO: Io = {
  out: (s) => process.stdout.write(s.endsWith('\n') ? s : s + '\n'),
  err: (s) => process.stderr.write(s.endsWith('\n') ? s : s + '\n'),
};

/**
 * Modules a command loads before its action runs (preloadFor): the configuration loader and checks for every
 * command with --config, the logger for `serve`. The functions below use them synchronously.
 */
const loaded: { config?: typeof ConfigLoad; check?: typeof ConfigCheck; logger?: typeof CliLogger } = {};

function need<T>(m: T | undefined, name: string): T {
  if (m === undefined) throw new Error(`internal error: ${name} used before it was loaded (preloadFor)`);
  return m;
}

async function preloadFor(command: Command): Promise<void> {
  if (command.options.some((o) => o.long === '--config')) {
    if (loaded.config === undefined) {
      // One parse per process: zod's compiled parsers cost more to build than they save here.
      const { z } = await import('zod');
      z.config({ jitless: true });
    }
    [loaded.config, loaded.check] = await Promise.all([import('../config/load.ts'), import('../config/check.ts')]);
  }
  if (command.name() === 'serve') loaded.logger = await import('./logger.ts');
}

const loadConfig: typeof ConfigLoad.loadConfig = (options) => need(loaded.config, 'config/load').loadConfig(options);
const checkConfig: typeof ConfigCheck.checkConfig = (config) => need(loaded.check, 'config/check').checkConfig(config);
const formatFindings: typeof ConfigCheck.formatFindings = (findings) => need(loaded.check, 'config/check').formatFindings(findings);
const hasErrors: typeof ConfigCheck.hasErrors = (findings) => need(loaded.check, 'config/check').hasErrors(findings);
const createLogger: typeof CliLogger.createLogger = (options) => need(loaded.logger, 'cli/logger').createLogger(options);

/** The relay, loaded when `serve` starts it. */
async function startRelay(...args: Parameters<typeof Serve.startRelay>): ReturnType<typeof Serve.startRelay> {
  return (await import('./serve.ts')).startRelay(...args);
}

type ConfigSource = '--config' | 'RELAYGUARD_CONFIG' | './relayguard.yaml' | 'embedded defaults';

/** Where the configuration comes from: --config FILE, else $RELAYGUARD_CONFIG, else ./relayguard.yaml when present, else the embedded defaults. */
function configSource(opts: { config?: string }): ConfigSource {
  if (opts.config !== undefined) return '--config';
  if (process.env['RELAYGUARD_CONFIG']) return 'RELAYGUARD_CONFIG';
  return existsSync('relayguard.yaml') ? './relayguard.yaml' : 'embedded defaults';
}

/** --config FILE, else $RELAYGUARD_CONFIG, else ./relayguard.yaml when present, else the embedded defaults. */
function configFrom(opts: { config?: string }): Config {
  const file = opts.config ?? (process.env['RELAYGUARD_CONFIG'] || undefined) ?? (existsSync('relayguard.yaml') ? 'relayguard.yaml' : undefined);
  return loadConfig(file ? { file } : {});
}

/**
 * The line every command writes on stderr (stdout stays clean for --json), naming the configuration and the data
 * directory it used, e.g. `relayguard: config /etc/relayguard/relayguard.yaml (from --config); data /var/lib/relayguard`.
 */
export function configNotice(source: ConfigSource, config: Pick<Config, 'configFile' | 'dataDir'>): string {
  const where = {
    '--config': 'from --config',
    RELAYGUARD_CONFIG: 'from $RELAYGUARD_CONFIG',
    './relayguard.yaml': 'found in the working directory',
    'embedded defaults': '',
  }[source];
  const config_ = config.configFile === null
    ? 'embedded defaults (no --config, no $RELAYGUARD_CONFIG, no ./relayguard.yaml)'
    : `${config.configFile} (${where})`;
  return `relayguard: config ${config_}; data ${config.dataDir}`;
}

/** How the configuration is found, for --help and the README. */
export const CONFIG_HELP = `
Configuration: every command that takes --config reads the first of
  1. --config FILE
  2. $RELAYGUARD_CONFIG
  3. ./relayguard.yaml (in the working directory)
  4. the embedded defaults (data directory ./relayguard-data)
and names the file and the data directory it used on stderr:
  relayguard: config /etc/relayguard/relayguard.yaml (from --config); data /var/lib/relayguard
(-q leaves that line out). "relayguard config show" prints the effective configuration.
Every key, with its default: docs/configuration.md. An example for a real domain: docs/relayguard.example.yaml.

Exit codes: 0 done; 1 a check failed (config check, lookup not listed, an import with bad lines, ...);
2 usage or configuration error; test and scan: 0 closed, 1 open, 2 inconclusive, 3 error;
audit: 0 clean, 1 abusable, listed or unreachable, 2 warnings only, 3 error.
`;

/** The commands of the tester, whose definitions load it: registered only when the command line may need them. */
const TESTER_COMMANDS = new Set(['test', 'scan']);
const OTHER_COMMANDS = new Set(['serve', 'queue', 'dnsbl', 'user', 'domain', 'alias', 'dkim', 'config', 'db', 'admin', 'audit']);

/** The first word of the command line that is not an option (the command), or null. */
function commandWord(argv: readonly string[]): string | null {
  for (const a of argv) {
    if (a === '--') return null;
    if (!a.startsWith('-')) return a;
  }
  return null;
}

/** True unless the command line names a command outside the tester, or only asks for the version. */
function needsTester(argv: readonly string[]): boolean {
  const word = commandWord(argv);
  if (word !== null) return TESTER_COMMANDS.has(word) || !OTHER_COMMANDS.has(word);
  return !argv.some((a) => a === '-V' || a === '--version');
}

export interface BuildOptions {
  /** Adds `test` and `scan` (tester-commands.ts); main() passes it when the command line may need them. */
  readonly registerTester?: (program: Command, io: Io, setExit: (code: number) => void) => void;
}

export function buildProgram(io: Io, setExit: (code: number) => void, options: BuildOptions = {}): Command {
  const program = new Command('relayguard')
    .description('A closed-by-default ESMTP relay, an open-relay tester and an open-relay DNS blocklist')
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .configureHelp({ showGlobalOptions: true })
    .version(VERSION, '-V, --version', 'print the version')
    .option('-q, --quiet', 'do not name the configuration file and data directory on stderr')
    .helpCommand('help [command...]', 'help for a command ("relayguard help queue list")')
    .exitOverride()
    .showHelpAfterError()
    .addHelpText('after', CONFIG_HELP)
    .hook('preAction', async (_program, action) => preloadFor(action));

  let announced = false;
  /** configFrom, and the stderr line naming what it used (once per process; -q leaves it out). */
  const configFor = (opts: { config?: string }): Config => {
    const config = configFrom(opts);
    if (!announced && program.opts<{ quiet?: boolean }>().quiet !== true) io.err(configNotice(configSource(opts), config));
    announced = true;
    return config;
  };

  program
    .command('serve')
    .description('run the relay (mx and submission listeners) on the configuration or the embedded defaults; SIGHUP reloads the configuration, SIGTERM/SIGINT stop gracefully')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--force', 'start even when `config check` reports open-relay hazards')
    .option('--pid-file <file>', 'write the process id to this file (removed at exit)')
    .action(async (opts: { config?: string; force?: boolean; pidFile?: string }) => {
      // With `workers` > 1 this action runs in the primary (serve-primary.ts) and again in every worker it forks
      // (same command line; worker-role.ts): a worker is this single-process path on its own queue shard, without
      // the pid file, systemd notices and parent watch, which are the primary's.
      const role = currentWorkerRole();
      const source = configSource(opts);
      const config = configFrom(opts);
      const findings = role === null ? checkConfig(config) : [];
      if (hasErrors(findings) && !opts.force) {
        io.err(`relayguard: refusing to start, the configuration has open-relay hazards:\n${formatFindings(findings)}\n(run with --force to start anyway)`);
        return setExit(2);
      }
      process.title = role === null ? 'relayguard' : `relayguard-w${role.index}`;
      const rootLogger = createLogger({ level: config.log.level, format: config.log.format });
      const logger = role === null ? rootLogger : rootLogger.child({ worker: role.index });
      const workers = workerCount(config.workers);
      if (role === null) {
        logger.info('starting', { config_file: config.configFile, config_source: source, data_dir: config.dataDir, pid: process.pid, version: VERSION, workers });
        for (const f of findings) logger.warn('config finding', { severity: f.severity, key: f.key, code: f.code, finding: f.message });
      } else {
        logger.info('worker starting', { pid: process.pid, of: role.count });
      }
      const pidFile = opts.pidFile ? resolvePath(opts.pidFile) : null;
      if (role === null && workers > 1) {
        let identity: Identity | null = null;
        if (config.user !== null && isRoot()) {
          identity = resolveIdentity(config.user, config.group);
          mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
        } else if (config.user === null && isRoot()) {
          logger.warn('running as root', {
            err_code: 'WARN_RUNNING_AS_ROOT',
            hint: 'set `user: relayguard` (and `group`) so serve drops to it after binding its ports, or run it from the systemd unit in deploy/systemd',
          });
        }
        const { runPrimary } = await import('./serve-primary.ts');
        const code = await runPrimary({
          config, count: workers, logger, identity,
          reloadConfig: () => loadConfig(config.configFile ? { file: config.configFile } : {}),
          onReady: () => {
            notifySystemd('READY=1', logger);
            if (pidFile) writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
          },
          onStopping: () => notifySystemd('STOPPING=1', logger),
        });
        if (pidFile) rmSync(pidFile, { force: true });
        return setExit(code);
      }
      // Signal handlers go in before anything listens: a SIGHUP or SIGTERM that arrives while starting is kept
      // and acted on once the relay runs, never the default action (which would kill the process).
      let relay: Awaited<ReturnType<typeof startRelay>> | null = null;
      let stopRequested: string | null = null;
      let reloadRequested = false;
      let stopping = false;
      let resolveStop: () => void = () => {};
      const stopped = new Promise<void>((r) => { resolveStop = r; });
      const stop = (signal: string): void => {
        if (relay === null) { stopRequested ??= signal; return; }
        if (stopping) return;
        stopping = true;
        logger.info('stopping', { signal, grace_ms: relay.config.limits.shutdownGrace });
        relay.close().then(resolveStop, (err: unknown) => {
          logger.error('stop failed', { err: String(err) });
          resolveStop();
        });
      };
      const reload = (): void => {
        if (relay === null) { reloadRequested = true; return; }
        if (stopping) return;
        const running = relay;
        let next: Config;
        try {
          next = loadConfig(config.configFile ? { file: config.configFile } : {});
        } catch (err) {
          logger.error('reload failed; keeping the running configuration', { err_code: errorCode(err), err: (err as Error).message });
          return;
        }
        const nextFindings = checkConfig(next);
        if (hasErrors(nextFindings) && !opts.force) {
          logger.error('reload refused; keeping the running configuration', {
            err_code: 'ERR_RELOAD_HAZARD', findings: nextFindings.filter((f) => f.severity === 'error').map((f) => `${f.key}: ${f.code}`),
          });
          return;
        }
        running.reload(role === null ? next : workerConfig(next, role)).then(
          (r) => logger.info('configuration reloaded', {
            config_file: next.configFile, listeners_added: r.added, listeners_removed: r.removed, listeners_changed: r.changed,
            certificate_reloaded: r.certificateReloaded, delivery_restarted: r.deliveryRestarted, ordb_restarted: r.ordbRestarted, web_restarted: r.webRestarted,
          }),
          (err: unknown) => logger.error('reload failed; keeping the running configuration', { err_code: errorCode(err), err: (err as Error).message }),
        );
      };
      const onTerm = (): void => stop('SIGTERM');
      const onInt = (): void => stop('SIGINT');
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
      process.on('SIGHUP', reload);
      // Least privilege: started as root with `user`, hand dataDir to that user, bind everything, then drop to it
      // before a client byte is read (connections are held until then).
      let identity: Identity | null = null;
      let drains: { stop(): Promise<void> } | null = null;
      if (config.user !== null && isRoot()) {
        identity = resolveIdentity(config.user, config.group);
        mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
        if (role === null) chownTree(config.dataDir, identity.uid, identity.gid);
        else chownWorkerFiles(config, role, identity.uid, identity.gid);
      } else if (config.user !== null) {
        logger.warn('not started as root: keeping the current user', { err_code: 'WARN_NO_PRIVILEGE_DROP', user: config.user, uid: process.getuid?.() });
      } else if (isRoot() && role === null) {
        logger.warn('running as root', {
          err_code: 'WARN_RUNNING_AS_ROOT',
          hint: 'set `user: relayguard` (and `group`) so serve drops to it after binding its ports, or run it from the systemd unit in deploy/systemd',
        });
      }
      try {
        if (role !== null) ensureShardDir(config, role);
        relay = role === null
          ? await startRelay(config, logger, { held: identity !== null })
          : await startRelay(workerConfig(config, role), logger, workerAssembleOptions(role, config, identity !== null));
        if (role !== null) {
          // Shards left without a worker (workers lowered) are delivered by one of the workers (shard-drain.ts).
          const started = relay;
          drains = await (await import('./shard-drain.ts')).startShardDrains(workerConfig(config, role), role, started, logger)
            .catch(async (err: unknown) => { await started.close(); throw err; });
        }
        if (identity !== null) {
          // What start-up created as root (databases, keys, spool).
          if (role === null) chownTree(config.dataDir, identity.uid, identity.gid);
          else chownWorkerFiles(config, role, identity.uid, identity.gid);
          dropPrivileges(identity);
          logger.info('privileges dropped', { user: identity.user, uid: identity.uid, group: identity.group, gid: identity.gid });
        }
        relay.receive.release();
        if (role !== null) announceReady();
        if (role === null) notifySystemd('READY=1', logger);
        if (pidFile && role === null) writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
        // Launched by npm or npx, whose shells do not always pass signals on: when that parent goes away, stop
        // too, so no orphan keeps the ports (field report 1, H3). A server started any other way outlives its shell.
        // (A worker needs no watch: node:cluster ends it when its primary's IPC channel closes.)
        if (role === null && (process.env['npm_lifecycle_event'] !== undefined || process.env['npm_command'] !== undefined)) {
          const parent = process.ppid;
          const watch = setInterval(() => { if (process.ppid !== parent) stop('parent exited'); }, 500);
          watch.unref();
        }
        if (stopRequested !== null) stop(stopRequested);
        else if (reloadRequested) reload();
        await stopped;
        await drains?.stop();
        if (role === null) notifySystemd('STOPPING=1', logger);
      } finally {
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        process.off('SIGHUP', reload);
      }
      if (pidFile && role === null) rmSync(pidFile, { force: true });
      setExit(0);
    });

  registerQueueCommands(program, io, setExit, configFor);
  options.registerTester?.(program, io, setExit);
  registerDnsblCommands(program, io, setExit, configFor);
  registerUserCommands(program, io, setExit, configFor);
  registerAdminCommands(program, io, configFor);
  registerAliasCommands(program, io, configFor);
  registerDbCommands(program, io, setExit, configFor);
  registerAuditCommand(program, io, setExit, configFor);

  const dkim = program.command('dkim').description('DKIM signing keys');
  dkim
    .command('keygen')
    .description('generate a signing key under dataDir/dkim and print the DNS TXT record to publish')
    .argument('<domain>', 'the signing domain (d=)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('-s, --selector <selector>', 'DKIM selector (s=)', 'relayguard')
    .option('--type <type>', 'rsa (2048 bits) or ed25519', 'rsa')
    .action(async (d: string, opts: { config?: string; selector: string; type: string }) => {
      if (opts.type !== 'rsa' && opts.type !== 'ed25519') throw new RelayguardError('ERR_USAGE', `--type must be rsa or ed25519, got "${opts.type}"`);
      const config = configFor(opts);
      const { writeDkimKey } = await import('../delivery/index.ts');
      let key;
      try {
        key = await writeDkimKey(join(config.dataDir, 'dkim'), d, opts.selector, { type: opts.type });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new RelayguardError('ERR_DKIM_EXISTS', `A key for ${d} with selector ${opts.selector} exists already; pick another selector`);
        if (err instanceof TypeError) throw new RelayguardError('ERR_USAGE', err.message);
        throw err;
      }
      io.out(`private key written to ${key.path}`);
      io.out('publish this DNS record:');
      io.out(key.zoneLine);
      io.out('then add to relayguard.yaml:');
      io.out(`delivery:\n  dkim:\n    - { domain: ${key.domain}, selector: ${key.selector}, keyFile: ${relative(config.dataDir, key.path)} }`);
    });

  const cfg = program.command('config').description('configuration tools: show the effective configuration, check it for open-relay hazards');
  cfg
    .command('show')
    .description('print the effective configuration with every default filled in (like postconf); -n: only what differs from the defaults (like postconf -n)')
    .option('-c, --config <file>', 'relayguard.yaml to show')
    .option('-n, --non-default', 'only the settings that differ from the embedded defaults')
    .option('--json', 'as JSON')
    .action(async (opts: { config?: string; nonDefault?: boolean; json?: boolean }) => {
      const source = configSource(opts);
      const config = configFor(opts);
      const [{ default: YAML }, { defaultConfig }] = await Promise.all([import('yaml'), import('../config/schema.ts')]);
      const { configFile: _file, ...effective } = config;
      let shown: Record<string, unknown> = effective;
      if (opts.nonDefault) {
        const base = defaultConfig({ cwd: config.configFile ? dirname(config.configFile) : process.cwd() }) as unknown as Record<string, unknown>;
        shown = Object.fromEntries(Object.entries(effective).filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(base[k])));
      }
      if (opts.json) {
        io.out(JSON.stringify({ source, file: config.configFile, config: shown }));
        return;
      }
      io.out(`# source: ${source}${config.configFile ? ` (${config.configFile})` : ''}; data directory: ${config.dataDir}`);
      io.out(Object.keys(shown).length === 0 ? '# nothing differs from the embedded defaults' : YAML.stringify(shown).trimEnd());
    });
  cfg
    .command('check')
    .description('validate relayguard.yaml and lint it for open-relay hazards; exits 1 on any hazard')
    .option('-c, --config <file>', 'relayguard.yaml to check')
    .option('--json', 'findings as JSON')
    .action((opts: { config?: string; json?: boolean }) => {
      const config = configFor(opts);
      const findings = checkConfig(config);
      if (opts.json) io.out(JSON.stringify({ file: config.configFile, findings }));
      else if (findings.length === 0) io.out(`${config.configFile ?? 'embedded defaults'}: no hazards found`);
      else io.out(formatFindings(findings));
      setExit(hasErrors(findings) ? 1 : 0);
    });
  return program;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(args: readonly string[], io: Io = STDIO): Promise<number> {
  const code = await runCli(args, io);
  if (cluster.isWorker) {
    // A serve worker (serve-primary.ts) is kept alive by its IPC channel to the primary: close it, so the worker
    // exits with this code once it is done (stopped, or failed to start), and exit anyway should a handle linger.
    process.exitCode = code;
    cluster.worker?.disconnect();
    setTimeout(() => process.exit(code), 2000).unref();
  }
  return code;
}

async function runCli(args: readonly string[], io: Io): Promise<number> {
  let argv = args;
  let code = 0;
  const registerTester = needsTester(argv) ? (await import('./tester-commands.ts')).registerTesterCommands : undefined;
  const program = buildProgram(io, (c) => { code = c; }, registerTester ? { registerTester } : {});
  // `relayguard help queue list` is `relayguard queue list --help` (commander's own help command takes one word).
  if (commandWord(argv) === 'help') {
    const at = argv.indexOf('help');
    const words = argv.slice(at + 1);
    let cmd: Command | undefined = program;
    for (const w of words) cmd = cmd?.commands.find((c) => c.name() === w || c.aliases().includes(w));
    if (cmd === undefined) {
      io.err(`relayguard: no command "${words.join(' ')}" ("relayguard help" lists the commands)`);
      return 2;
    }
    if (words.length > 0) argv = [...argv.slice(0, at), ...words, '--help'];
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Usage errors exit 2, except under `test`/`scan`/`audit`, whose documented usage-error code is 3.
      return err.exitCode === 0 ? 0 : err.exitCode === 3 ? 3 : 2;
    }
    if (err instanceof RelayguardError) {
      io.err(`relayguard: ${err.message} [${err.code}]`);
      return 2;
    }
    const e = err as NodeJS.ErrnoException;
    if (e?.code === 'EADDRINUSE' || e?.code === 'EACCES') {
      io.err(`relayguard: cannot listen: ${e.message} [${e.code}]`);
      return 2;
    }
    io.err(`relayguard: ${e?.stack ?? String(err)}`);
    return 70;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
