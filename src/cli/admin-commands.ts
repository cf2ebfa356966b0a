/**
 * `relayguard admin add|passwd|remove|list` and `relayguard admin token add|remove|list`: the accounts of the web
 * dashboard and API (policy/admin-accounts.ts), kept apart from the mail users (an SMTP password never opens the
 * dashboard), in the admin store: dataDir/relayguard.db, or PostgreSQL with store.postgres (every node's). A running serve sees a change at the next login or API call. `token add`
 * prints the token once; only its hash is stored. Every change is written to the audit log (actor `cli`).
 * Exit codes: 0 done; 2 usage or a refused change (unknown admin, admin exists, ...).
 */
import { mkdirSync } from 'node:fs';
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import type { AdminAccounts } from '../policy/admin-accounts.ts';
import { databasePath } from './paths.ts';
import { readPassword } from './user-commands.ts';

export interface AdminCommandIo {
  out(s: string): void;
  err(s: string): void;
}

async function withAdmins<T>(config: Config, fn: (a: AdminAccounts) => Promise<T>): Promise<T> {
  if (config.store.postgres === null) mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  // Loaded when an admin command runs (other commands never load them).
  const [{ openAdminStore }, { AdminAccounts }] = await Promise.all([import('../store/index.ts'), import('../policy/admin-accounts.ts')]);
  const store = await openAdminStore({ sqliteFile: databasePath(config), postgres: config.store.postgres });
  try { return await fn(new AdminAccounts(store)); } finally { await store.close(); }
}

const audit = (a: AdminAccounts, action: string, target: string): Promise<void> =>
  a.store.appendAudit({ at: Date.now(), actor: 'cli', action, target, detail: null, clientIp: null });

export function registerAdminCommands(program: Command, io: AdminCommandIo, configFrom: (opts: { config?: string }) => Config): Command {
  const admin = program.command('admin').description('manage the accounts of the web dashboard and API (separate from mail users)');
  const pw = (c: Command): Command => c
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .option('--password <password>', 'the password (visible to other local users; prefer --password-stdin)')
    .option('--password-stdin', 'read the password from standard input');
  pw(admin.command('add').description('add an admin (password of 8 characters or more)').argument('<name>', 'admin name'))
    .action(async (name: string, opts: { config?: string; password?: string; passwordStdin?: boolean }) => {
      await withAdmins(configFrom(opts), async (a) => { await a.add(name, await readPassword(opts)); await audit(a, 'admin.add', name); });
      io.out(`added admin ${name}`);
    });
  pw(admin.command('passwd').description("change an admin's password").argument('<name>', 'admin name'))
    .action(async (name: string, opts: { config?: string; password?: string; passwordStdin?: boolean }) => {
      await withAdmins(configFrom(opts), async (a) => { await a.setPassword(name, await readPassword(opts)); await audit(a, 'admin.passwd', name); });
      io.out(`password changed for admin ${name}`);
    });
  admin.command('remove').description('remove an admin and their API tokens').argument('<name>', 'admin name')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (name: string, opts: { config?: string }) => {
      await withAdmins(configFrom(opts), async (a) => { await a.store.removeAdmin(name); await audit(a, 'admin.remove', name); });
      io.out(`removed admin ${name}`);
    });
  admin.command('list').description('list the admins').option('-c, --config <file>', 'relayguard.yaml to use').option('--json', 'JSON lines')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const list = await withAdmins(configFrom(opts), (a) => a.store.listAdmins());
      for (const r of list) io.out(opts.json ? JSON.stringify(r) : `${r.name}\t${new Date(r.createdAt).toISOString()}`);
    });
  const token = admin.command('token').description('API tokens (Authorization: Bearer) for scripts');
  token.command('add').description('create an API token and print it (the only time it is shown)')
    .argument('<name>', 'token name').requiredOption('--admin <admin>', 'the admin the token acts as')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (name: string, opts: { config?: string; admin: string }) => {
      const t = await withAdmins(configFrom(opts), async (a) => {
        const made = await a.createToken(opts.admin, name);
        await audit(a, 'admin.token.add', `${opts.admin}/${name}`);
        return made;
      });
      io.out(t);
    });
  token.command('remove').description('revoke an API token').argument('<name>', 'token name').requiredOption('--admin <admin>', 'its admin')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (name: string, opts: { config?: string; admin: string }) => {
      await withAdmins(configFrom(opts), async (a) => { await a.store.removeToken(opts.admin, name); await audit(a, 'admin.token.remove', `${opts.admin}/${name}`); });
      io.out(`revoked token ${name} of ${opts.admin}`);
    });
  token.command('list').description('list API tokens (never the tokens themselves)').option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (opts: { config?: string }) => {
      const list = await withAdmins(configFrom(opts), (a) => a.store.listTokens());
      for (const t of list) io.out(`${t.admin}\t${t.name}\t${new Date(t.createdAt).toISOString()}\t${t.lastUsedAt === null ? 'never used' : new Date(t.lastUsedAt).toISOString()}`);
    });
  return admin;
}
