/**
 * The relayguard command line: argv -> config -> wiring -> run. Every command answers bad input with a
 * message on stderr and a non-zero exit code: 1 for a failed check, 2 for usage or configuration errors.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve as resolvePath } from 'node:path';
import YAML from 'yaml';
import { execFile } from 'node:child_process';
import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config/load.ts';
import { checkConfig, formatFindings, hasErrors } from '../config/check.ts';
import { defaultConfig, type Config } from '../config/schema.ts';
import { RelayguardError, errorCode } from '../core/errors.ts';
import { UserStore } from '../policy/users.ts';
import { createLogger } from './logger.ts';
import { databasePath, startRelay } from './serve.ts';
import { registerQueueCommands } from './queue-commands.ts';
import { registerTesterCommands } from './tester-commands.ts';
import { registerDnsblCommands } from './dnsbl-commands.ts';
import { registerAliasCommands } from './alias-commands.ts';
import { chownTree, dropPrivileges, isRoot, resolveIdentity, type Identity } from './privileges.ts';
import { writeDkimKey } from '../delivery/index.ts';

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

/** Where the configuration comes from: --config FILE, else $RELAYGUARD_CONFIG, else ./relayguard.yaml when present, else the embedded defaults. */
function configSource(opts: { config?: string }): '--config' | 'RELAYGUARD_CONFIG' | './relayguard.yaml' | 'embedded defaults' {
  if (opts.config !== undefined) return '--config';
  if (process.env['RELAYGUARD_CONFIG']) return 'RELAYGUARD_CONFIG';
  return existsSync('relayguard.yaml') ? './relayguard.yaml' : 'embedded defaults';
}

/** --config FILE, else $RELAYGUARD_CONFIG, else ./relayguard.yaml when present, else the embedded defaults. */
function configFrom(opts: { config?: string }): Config {
  const file = opts.config ?? (process.env['RELAYGUARD_CONFIG'] || undefined) ?? (existsSync('relayguard.yaml') ? 'relayguard.yaml' : undefined);
  return loadConfig(file ? { file } : {});
}

async function readPassword(opts: { password?: string; passwordStdin?: boolean }): Promise<string> {
  if (opts.password !== undefined) return opts.password;
  if (opts.passwordStdin) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    const pw = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    if (pw === '') throw new RelayguardError('ERR_USAGE', 'Empty password on standard input');
    return pw;
  }
  const env = process.env['RELAYGUARD_PASSWORD'];
  if (env) return env;
  throw new RelayguardError('ERR_USAGE', 'Give the password with --password-stdin (or --password, or $RELAYGUARD_PASSWORD)');
}

function openUsers(config: Config): UserStore {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  return new UserStore(databasePath(config));
}


export function buildProgram(io: Io, setExit: (code: number) => void): Command {
  const program = new Command('relayguard')
    .description('A closed-by-default ESMTP relay, an open-relay tester and an open-relay DNS blocklist')
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .version(VERSION, '-V, --version', 'print the version')
    .exitOverride()
    .showHelpAfterError();

  program
    .command('serve')
    .description('run the relay (mx and submission listeners) on the configuration or the embedded defaults; SIGHUP reloads the configuration, SIGTERM/SIGINT stop gracefully')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--force', 'start even when `config check` reports open-relay hazards')
    .option('--pid-file <file>', 'write the process id to this file (removed at exit)')
    .action(async (opts: { config?: string; force?: boolean; pidFile?: string }) => {
      const source = configSource(opts);
      const config = configFrom(opts);
      const findings = checkConfig(config);
      if (hasErrors(findings) && !opts.force) {
        io.err(`relayguard: refusing to start, the configuration has open-relay hazards:\n${formatFindings(findings)}\n(run with --force to start anyway)`);
        return setExit(2);
      }
      process.title = 'relayguard';
      const logger = createLogger({ level: config.log.level });
      logger.info('starting', { config_file: config.configFile, config_source: source, data_dir: config.dataDir, pid: process.pid, version: VERSION });
      for (const f of findings) logger.warn('config finding', { severity: f.severity, key: f.key, code: f.code, finding: f.message });
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
        running.reload(next).then(
          (r) => logger.info('configuration reloaded', {
            config_file: next.configFile, listeners_added: r.added, listeners_removed: r.removed, listeners_changed: r.changed,
            certificate_reloaded: r.certificateReloaded, delivery_restarted: r.deliveryRestarted, ordb_restarted: r.ordbRestarted,
          }),
          (err: unknown) => logger.error('reload failed; keeping the running configuration', { err_code: errorCode(err), err: (err as Error).message }),
        );
      };
      const onTerm = (): void => stop('SIGTERM');
      const onInt = (): void => stop('SIGINT');
      process.on('SIGTERM', onTerm);
      process.on('SIGINT', onInt);
      process.on('SIGHUP', reload);
      const pidFile = opts.pidFile ? resolvePath(opts.pidFile) : null;
      // Least privilege: started as root with `user`, hand dataDir to that user, bind everything, then drop to it
      // before a client byte is read (connections are held until then).
      let identity: Identity | null = null;
      if (config.user !== null && isRoot()) {
        identity = resolveIdentity(config.user, config.group);
        mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
        chownTree(config.dataDir, identity.uid, identity.gid);
      } else if (config.user !== null) {
        logger.warn('not started as root: keeping the current user', { err_code: 'WARN_NO_PRIVILEGE_DROP', user: config.user, uid: process.getuid?.() });
      } else if (isRoot()) {
        logger.warn('running as root', {
          err_code: 'WARN_RUNNING_AS_ROOT',
          hint: 'set `user: relayguard` (and `group`) so serve drops to it after binding its ports, or run it from the systemd unit in deploy/systemd',
        });
      }
      try {
        relay = await startRelay(config, logger, { held: identity !== null });
        if (identity !== null) {
          chownTree(config.dataDir, identity.uid, identity.gid); // what start-up created as root (databases, keys, spool)
          dropPrivileges(identity);
          logger.info('privileges dropped', { user: identity.user, uid: identity.uid, group: identity.group, gid: identity.gid });
        }
        relay.receive.release();
        notifySystemd('READY=1', logger);
        if (pidFile) writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
        // Launched by npm or npx, whose shells do not always pass signals on: when that parent goes away, stop
        // too, so no orphan keeps the ports (field report 1, H3). A server started any other way outlives its shell.
        if (process.env['npm_lifecycle_event'] !== undefined || process.env['npm_command'] !== undefined) {
          const parent = process.ppid;
          const watch = setInterval(() => { if (process.ppid !== parent) stop('parent exited'); }, 500);
          watch.unref();
        }
        if (stopRequested !== null) stop(stopRequested);
        else if (reloadRequested) reload();
        await stopped;
        notifySystemd('STOPPING=1', logger);
      } finally {
        process.off('SIGTERM', onTerm);
        process.off('SIGINT', onInt);
        process.off('SIGHUP', reload);
      }
      if (pidFile) rmSync(pidFile, { force: true });
      setExit(0);
    });

  registerQueueCommands(program, io, setExit, configFrom);
  registerTesterCommands(program, io, setExit);
  registerDnsblCommands(program, io, setExit, configFrom);

  const user = program.command('user').description('manage users who may submit mail (SMTP AUTH)');
  user
    .command('add <name>')
    .description('add a user; a name that is an address owns that address')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--password <password>', 'the password (visible to other local users; prefer --password-stdin)')
    .option('--password-stdin', 'read the password from standard input')
    .option('--address <address...>', 'further addresses (or @domain) the user may send as')
    .action(async (name: string, opts: { config?: string; password?: string; passwordStdin?: boolean; address?: string[] }) => {
      const users = openUsers(configFrom(opts));
      try {
        const info = await users.add(name, await readPassword(opts), { addresses: opts.address ?? [] });
        io.out(`added user ${info.name}`);
      } finally { users.close(); }
    });
  user
    .command('remove <name>')
    .description('remove a user')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action((name: string, opts: { config?: string }) => {
      const users = openUsers(configFrom(opts));
      try { users.remove(name); io.out(`removed user ${name}`); } finally { users.close(); }
    });
  user
    .command('list')
    .description('list users and the addresses they own')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'JSON output')
    .action((opts: { config?: string; json?: boolean }) => {
      const users = openUsers(configFrom(opts));
      try {
        const list = users.list();
        if (opts.json) { io.out(JSON.stringify(list)); return; }
        if (list.length === 0) { io.out('no users'); return; }
        for (const u of list) io.out(`${u.name}${u.disabled ? ' (disabled)' : ''}  ${u.addresses.join(' ')}`);
      } finally { users.close(); }
    });
  user
    .command('passwd <name>')
    .description("change a user's password")
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--password <password>', 'the new password')
    .option('--password-stdin', 'read the new password from standard input')
    .action(async (name: string, opts: { config?: string; password?: string; passwordStdin?: boolean }) => {
      const users = openUsers(configFrom(opts));
      try { await users.setPassword(name, await readPassword(opts)); io.out(`password changed for ${name}`); } finally { users.close(); }
    });

  const domain = program.command('domain').description('manage local domains kept in the database (besides localDomains in the config)');
  domain.command('add <domain>').option('-c, --config <file>', 'relayguard.yaml to use').action((d: string, opts: { config?: string }) => {
    const users = openUsers(configFrom(opts));
    try { io.out(`added local domain ${users.addDomain(d)}`); } finally { users.close(); }
  });
  domain.command('remove <domain>').option('-c, --config <file>', 'relayguard.yaml to use').action((d: string, opts: { config?: string }) => {
    const users = openUsers(configFrom(opts));
    try { users.removeDomain(d); io.out(`removed local domain ${d}`); } finally { users.close(); }
  });
  domain.command('list').option('-c, --config <file>', 'relayguard.yaml to use').action((opts: { config?: string }) => {
    const config = configFrom(opts);
    const users = openUsers(config);
    try {
      for (const d of config.localDomains) io.out(`${d}  (config)`);
      for (const d of users.listDomains()) io.out(`${d}  (database)`);
    } finally { users.close(); }
  });

  registerAliasCommands(program, io, configFrom);

  const dkim = program.command('dkim').description('DKIM signing keys');
  dkim
    .command('keygen <domain>')
    .description('generate a signing key under dataDir/dkim and print the DNS TXT record to publish')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('-s, --selector <selector>', 'DKIM selector', 'relayguard')
    .option('--type <type>', 'rsa (2048 bits) or ed25519', 'rsa')
    .action(async (d: string, opts: { config?: string; selector: string; type: string }) => {
      if (opts.type !== 'rsa' && opts.type !== 'ed25519') throw new RelayguardError('ERR_USAGE', `--type must be rsa or ed25519, got "${opts.type}"`);
      const config = configFrom(opts);
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

  const cfg = program.command('config').description('configuration tools');
  cfg
    .command('show')
    .description('print the effective configuration with every default filled in (like postconf); -n: only what differs from the defaults (like postconf -n)')
    .option('-c, --config <file>', 'relayguard.yaml to show')
    .option('-n, --non-default', 'only the settings that differ from the embedded defaults')
    .option('--json', 'as JSON')
    .action((opts: { config?: string; nonDefault?: boolean; json?: boolean }) => {
      const source = configSource(opts);
      const config = configFrom(opts);
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
      const config = configFrom(opts);
      const findings = checkConfig(config);
      if (opts.json) io.out(JSON.stringify({ file: config.configFile, findings }));
      else if (findings.length === 0) io.out(`${config.configFile ?? 'embedded defaults'}: no hazards found`);
      else io.out(formatFindings(findings));
      setExit(hasErrors(findings) ? 1 : 0);
    });
  return program;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: readonly string[], io: Io = STDIO): Promise<number> {
  let code = 0;
  const program = buildProgram(io, (c) => { code = c; });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Usage errors exit 2, except under `test`/`scan`, whose documented usage-error code is 3.
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
