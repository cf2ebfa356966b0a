/**
 * `relayguard user add|remove|list|passwd` and `relayguard domain add|remove|list`: the users who may submit mail
 * (SMTP AUTH) and the local domains kept in the directory (policy/directory.ts): relayguard.db under dataDir, or
 * PostgreSQL with `store.postgres` (every node sees the change). A running `serve` sees it within seconds.
 *
 * `user add -i FILE` imports many users: every line is checked first, the passwords are hashed a few at a time
 * (scrypt is slow on purpose), and all users go in in one transaction; nothing is written when a line is bad,
 * unless --keep-going. Passwords are never printed, not even from a bad line.
 *
 * Exit codes: 0 done; 1 an import had bad lines; 2 usage or a refused change (unknown user, user exists, ...).
 */
import { mkdirSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';
import type { DirectoryStore, UserAccounts } from '../policy/directory.ts';
import type { NewUser } from '../policy/users.ts';
import { readInput } from './dnsbl-commands.ts';
import { databasePath } from './paths.ts';
import { printable } from './queue-commands.ts';

export interface UserCommandIo {
  out(s: string): void;
  err(s: string): void;
}

type UsersModule = typeof import('../policy/users.ts');
const loadUsers = (): Promise<UsersModule> => import('../policy/users.ts');

const usage = (message: string): RelayguardError => new RelayguardError('ERR_USAGE', message);

/** The most passwords hashed at once: scrypt takes about 32 MiB each, and libuv runs 4 at a time by default. */
const MAX_JOBS = 16;

interface OpenedUsers {
  readonly store: DirectoryStore;
  readonly users: UserAccounts;
  readonly u: UsersModule;
  close(): Promise<void>;
}

/** The directory the config names (SQLite file or store.postgres) and passwords over it. */
export async function openDirectory(config: Config): Promise<{ store: DirectoryStore; close(): Promise<void> }> {
  const { openDirectoryStore } = await import('../store/index.ts');
  if (config.store.postgres === null) mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const store = await openDirectoryStore({ sqliteFile: databasePath(config), postgres: config.store.postgres });
  return { store, close: () => store.close() };
}

async function openUsers(config: Config): Promise<OpenedUsers> {
  const [u, d, opened] = await Promise.all([loadUsers(), import('../policy/directory.ts'), openDirectory(config)]);
  return { store: opened.store, users: new d.UserAccounts(opened.store), u, close: opened.close };
}

export async function readPassword(opts: { password?: string; passwordStdin?: boolean }): Promise<string> {
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

/** One user line of an import file, split into its columns (nothing checked yet). */
export interface UserLine {
  readonly line: number;
  readonly name: string;
  /** Absent when the line has only one column. */
  readonly password: string | undefined;
  readonly addresses: readonly string[];
}

export type UserFileFormat = 'words' | 'tsv';

/**
 * The user lines of an import file. `words`: NAME PASSWORD [ADDRESS ...] separated by spaces or tabs (a password
 * cannot hold a space). `tsv`: NAME<TAB>PASSWORD[<TAB>ADDRESSES], the password everything between the two tabs
 * (spaces allowed), the addresses separated by spaces or commas. Both: blank lines and lines whose first
 * non-blank character is `#` are skipped (a `#` later in a line is part of it: passwords may hold one).
 */
export function parseUserLines(text: string, format: UserFileFormat): UserLine[] {
  const out: UserLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, '');
    if (raw.trim() === '' || raw.trimStart().startsWith('#')) continue;
    if (format === 'tsv') {
      const cols = raw.split('\t');
      out.push({
        line: i + 1, name: cols[0]!.trim(), password: cols[1],
        addresses: cols.slice(2).join(' ').split(/[\s,]+/).filter((a) => a !== ''),
      });
    } else {
      const [name = '', password, ...addresses] = raw.trim().split(/\s+/);
      out.push({ line: i + 1, name, password, addresses });
    }
  }
  return out;
}

const HEADER_NAMES = new Set(['name', 'user', 'username', 'login', 'user name']);
const HEADER_PASSWORDS = new Set(['password', 'pass', 'passwd', 'secret']);

/** The problem with a line, in words that never repeat the password (nor the name, which may be a shifted password). */
function lineProblem(u: UsersModule, l: UserLine, format: UserFileFormat): string | null {
  if (HEADER_NAMES.has(l.name.toLowerCase()) && HEADER_PASSWORDS.has((l.password ?? '').trim().toLowerCase())) {
    return 'looks like a header line (name, password): remove it; the file has no header';
  }
  if (l.password === undefined) {
    return format === 'tsv' ? 'no password column: expected NAME<TAB>PASSWORD[<TAB>ADDRESSES]' : 'no password: expected NAME PASSWORD [ADDRESS ...]';
  }
  try {
    u.normalizeUserName(l.name);
  } catch (err) {
    const why = (err as Error).message.replace(/^User name "[\s\S]*" contains/, 'it contains').replace(/^User name /, 'it ');
    return `the user name (first column) is not valid: ${why}`;
  }
  try {
    u.checkPassword(l.password);
  } catch (err) {
    return `the password (second column) is not valid: ${(err as Error).message.replace(/^Password /, 'it ')}`;
  }
  for (let k = 0; k < l.addresses.length; k++) {
    if (u.normalizeOwnedAddress(l.addresses[k]!) === null) return `address ${k + 1} is not valid (expected local@domain or @domain)`;
  }
  return null;
}

type UserOutcome = 'added' | 'exists' | 'invalid';

interface UserImportResult {
  readonly line: number;
  /** The normalized name, for lines that are valid. */
  readonly user?: string;
  readonly outcome: UserOutcome;
  readonly error?: string;
}

/** Adds the `user` and `domain` commands to the program. */
export function registerUserCommands(
  program: Command,
  io: UserCommandIo,
  setExit: (code: number) => void,
  configFrom: (opts: { config?: string }) => Config,
): void {
  const user = program.command('user').description('manage users who may submit mail (SMTP AUTH) and the addresses they may send as');

  type AddOpts = {
    config?: string; password?: string; passwordStdin?: boolean; address?: string[];
    input?: string; format?: string; keepGoing?: boolean; jobs?: string; json?: boolean;
  };

  const importUsers = async (opts: AddOpts & { input: string }): Promise<void> => {
    const format = (opts.format ?? 'words') as UserFileFormat;
    if (format !== 'words' && format !== 'tsv') throw usage(`--format takes words or tsv, got "${opts.format}"`);
    const jobs = opts.jobs === undefined ? Math.min(4, availableParallelism()) : Number(opts.jobs);
    if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_JOBS) throw usage(`--jobs takes a whole number from 1 to ${MAX_JOBS}, got "${opts.jobs}"`);
    const source = opts.input === '-' ? 'standard input' : opts.input;
    if (opts.input !== '-') {
      try {
        if ((statSync(opts.input).mode & 0o077) !== 0) io.err(`relayguard: warning: ${source} holds passwords and other users can read it: chmod 600 it, or delete it after the import`);
      } catch { /* readInput reports a missing file */ }
    }
    const lines = parseUserLines(await readInput(opts.input), format);
    const config = configFrom(opts);
    const { store, users, u, close } = await openUsers(config);
    try {
      const results: UserImportResult[] = [];
      const todo: (NewUser & { line: number })[] = [];
      const seen = new Map<string, number>();
      for (const l of lines) {
        const problem = lineProblem(u, l, format);
        if (problem !== null) { results.push({ line: l.line, outcome: 'invalid', error: problem }); continue; }
        const name = u.normalizeUserName(l.name);
        const first = seen.get(name);
        if (first !== undefined) { results.push({ line: l.line, user: name, outcome: 'invalid', error: `user ${name} is also on line ${first}` }); continue; }
        seen.set(name, l.line);
        if ((await store.getUser(name)) !== null) { results.push({ line: l.line, user: name, outcome: 'exists' }); continue; }
        todo.push({ line: l.line, name, password: l.password!, addresses: l.addresses });
        results.push({ line: l.line, user: name, outcome: 'added' });
      }
      const bad = results.filter((r) => r.outcome === 'invalid');
      const apply = todo.length > 0 && (bad.length === 0 || opts.keepGoing === true);
      const started = performance.now();
      if (apply) {
        const tty = process.stderr.isTTY === true && !opts.json;
        if (tty) io.err(`relayguard: hashing ${todo.length} password${todo.length === 1 ? '' : 's'} (scrypt, ${jobs} at a time)...`);
        let last = 0;
        await users.addMany(todo, {
          concurrency: jobs,
          onHashed: tty ? (done, total) => {
            const t = performance.now();
            if (t - last < 2000 && done < total) return;
            last = t;
            process.stderr.write(`\rrelayguard: ${done}/${total} hashed${done === total ? '\n' : ''}`);
          } : undefined,
        });
      }
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const count = (o: UserOutcome): number => results.filter((r) => r.outcome === o).length;
      const added = apply ? count('added') : 0;
      if (opts.json) {
        io.out(JSON.stringify({
          input: source, applied: apply, seconds: Number(seconds),
          counts: { added, exists: count('exists'), invalid: bad.length, skipped: apply ? 0 : count('added') },
          lines: results.map((r) => (r.outcome === 'added' && !apply ? { ...r, outcome: 'skipped' } : r)),
        }));
      } else {
        for (const r of bad) io.err(`relayguard: ${printable(source)}: line ${r.line}: ${printable(r.error ?? 'invalid')}`);
        const tail = `${count('exists')} already there (left unchanged), ${bad.length} invalid`;
        if (apply) io.out(`imported ${source}: ${added} user${added === 1 ? '' : 's'} added in ${seconds} s, ${tail}${bad.length > 0 ? ' (the bad lines were skipped: --keep-going)' : ''}`);
        else if (bad.length > 0) io.out(`nothing imported from ${source}: ${count('added')} good, ${tail}; fix the lines above, or add --keep-going to import the good ones`);
        else io.out(`nothing to add from ${source}: ${tail}`);
      }
      if (bad.length > 0) setExit(1);
    } finally { await close(); }
  };

  user
    .command('add')
    .description('add a user; a name that is an address owns that address; -i imports a file of users in one transaction')
    .argument('[name]', 'login name: an address (alice@example.org) or a plain name')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--password <password>', 'the password (visible to other local users; prefer --password-stdin)')
    .option('--password-stdin', 'read the password from standard input')
    .option('--address <address...>', 'further addresses (or @domain) the user may send as')
    .option('-i, --input <file>', 'import users from a file ("-" = standard input), one per line: NAME PASSWORD [ADDRESS ...]')
    .option('--format <format>', 'with -i: words (NAME PASSWORD [ADDRESS ...], split at spaces; the default) or tsv (NAME<TAB>PASSWORD[<TAB>ADDRESSES]: passwords with spaces)')
    .option('--keep-going', 'with -i: add the good lines even when some are invalid (the exit code is still 1)')
    .option('-j, --jobs <n>', `with -i: passwords hashed at once (default: the CPU count, at most 4; up to ${MAX_JOBS})`)
    .option('--json', 'with -i: the import report as JSON (never the passwords)')
    .addHelpText('after', `
Import file (-i), one user per line; blank lines and lines starting with # are skipped:
  # name                password        further addresses (optional)
  alice@example.org     s3cret-One
  bob                   An0ther-secret  bob@example.org @example.net
With --format tsv the columns are separated by one tab each and a password may hold spaces.
Every line is checked before anything is written: a bad or repeated line makes the command exit 1 with nothing
added, unless --keep-going. Users that exist already are left as they are (change a password with "user passwd").
Passwords are hashed with scrypt (about 32 MiB and some tens of milliseconds each), --jobs at a time; all users
go in in one transaction. Keep the file private (chmod 600) and delete it afterwards; nothing prints a password.`)
    .action(async (name: string | undefined, opts: AddOpts) => {
      if (opts.input !== undefined) {
        if (name !== undefined) throw usage('give a user name or --input FILE, not both');
        if (opts.password !== undefined || opts.passwordStdin || (opts.address?.length ?? 0) > 0) throw usage('with --input the passwords and addresses come from the file: drop --password, --password-stdin and --address');
        if (opts.input === '-' && opts.passwordStdin) throw usage('--input - and --password-stdin both read standard input');
        return importUsers({ ...opts, input: opts.input });
      }
      for (const [flag, given] of [['--format', opts.format], ['--keep-going', opts.keepGoing], ['--jobs', opts.jobs], ['--json', opts.json]] as const) {
        if (given !== undefined) throw usage(`${flag} goes with --input FILE`);
      }
      if (name === undefined) throw usage('give a user name, or --input FILE to import many');
      const { users, close } = await openUsers(configFrom(opts));
      try {
        const info = await users.add(name, await readPassword(opts), { addresses: opts.address ?? [] });
        io.out(`added user ${info.name}`);
      } finally { await close(); }
    });
  user
    .command('remove')
    .description('remove a user and the addresses they own')
    .argument('<name>', 'login name')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (name: string, opts: { config?: string }) => {
      const { store, close } = await openDirectory(configFrom(opts));
      try { await store.removeUser(name); io.out(`removed user ${name}`); } finally { await close(); }
    });
  user
    .command('list')
    .description('list users and the addresses they own')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--json', 'JSON output')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const { store, close } = await openDirectory(configFrom(opts));
      try {
        const list = await store.listUsers();
        if (opts.json) { io.out(JSON.stringify(list)); return; }
        if (list.length === 0) { io.out('no users'); return; }
        for (const u of list) io.out(`${u.name}${u.disabled ? ' (disabled)' : ''}  ${u.addresses.join(' ')}`);
      } finally { await close(); }
    });
  user
    .command('passwd')
    .description("change a user's password")
    .argument('<name>', 'login name')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--password <password>', 'the new password (visible to other local users; prefer --password-stdin)')
    .option('--password-stdin', 'read the new password from standard input')
    .action(async (name: string, opts: { config?: string; password?: string; passwordStdin?: boolean }) => {
      const { users, close } = await openUsers(configFrom(opts));
      try { await users.setPassword(name, await readPassword(opts)); io.out(`password changed for ${name}`); } finally { await close(); }
    });

  const domain = program
    .command('domain')
    .description('manage local domains kept in the database (besides localDomains in the config); mail for them is delivered here');
  domain
    .command('add')
    .description('add a local domain: its users, aliases, postmaster@ and abuse@ receive mail here')
    .argument('<domain>', 'domain name (IDN allowed; stored as lower-case A-labels)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (d: string, opts: { config?: string }) => {
      const { store, close } = await openDirectory(configFrom(opts));
      try { io.out(`added local domain ${await store.addDomain(d)}`); } finally { await close(); }
    });
  domain
    .command('remove')
    .description('remove a local domain from the database (domains in localDomains stay: edit the config)')
    .argument('<domain>', 'domain name')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (d: string, opts: { config?: string }) => {
      const { store, close } = await openDirectory(configFrom(opts));
      try { await store.removeDomain(d); io.out(`removed local domain ${d}`); } finally { await close(); }
    });
  domain
    .command('list')
    .description('list the local domains: localDomains from the config, then those in the database')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (opts: { config?: string }) => {
      const config = configFrom(opts);
      const { store, close } = await openDirectory(config);
      try {
        for (const d of config.localDomains) io.out(`${d}  (config)`);
        for (const d of await store.listDomains()) io.out(`${d}  (database)`);
      } finally { await close(); }
    });
}
