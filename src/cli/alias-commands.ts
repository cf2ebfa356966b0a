/**
 * `relayguard alias add|remove|list`: the database alias table, through the directory (policy/directory.ts: the
 * SQLite file or store.postgres). A target outside the local domains (config plus database) is refused unless
 * `--remote` says the admin means to forward mail outside.
 */
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { RelayguardError } from '../core/errors.ts';
import type { DirectoryStore } from '../policy/directory.ts';
import { databasePath } from './paths.ts';
import { openDirectory } from './user-commands.ts';

interface Io {
  out(s: string): void;
  err(s: string): void;
}

export function registerAliasCommands(program: Command, io: Io, configFrom: (opts: { config?: string }) => Config): void {
  const alias = program
    .command('alias')
    .description('manage aliases: local addresses that forward to users, lists, or (with --remote) outside addresses');
  // The stores are loaded by the actions (start-up time: other commands never load them).
  const open = async (config: Config): Promise<{ store: DirectoryStore; close(): Promise<void>; a: typeof import('../policy/aliases.ts') }> => {
    const [a, d] = await Promise.all([import('../policy/aliases.ts'), openDirectory(config)]);
    return { ...d, a };
  };

  alias
    .command('add')
    .description('add targets to an alias (address local@domain, or @domain for a catch-all); several targets make a list')
    .argument('<address>', 'the alias: local@domain in a local domain, or @domain for a catch-all')
    .argument('<targets...>', 'where its mail goes: users or addresses in the local domains (outside them with --remote)')
    .option('--remote', 'allow targets outside the local domains (mail is forwarded outside)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (address: string, targets: string[], opts: { config?: string; remote?: boolean }) => {
      const config = configFrom(opts);
      const { store, close, a } = await open(config);
      const { createLocality } = await import('../core/locality.ts');
      try {
        const domains = new Set([...config.localDomains, ...(await store.listDomains())]);
        const locality = createLocality({ domains: () => domains, ownAddresses: () => [] });
        a.checkAliasLocality(address, targets, (d) => locality.isLocal(d), opts.remote === true, 'add --remote');
        const added = await store.addAlias(address, targets, { remote: opts.remote === true });
        for (const e of added) io.out(`alias ${e.key} -> ${e.target}${e.remote ? ' (remote)' : ''}`);
        io.out(`database: ${config.store.postgres === null ? databasePath(config) : (await import('../store/index.ts')).describePostgresUrl(config.store.postgres.url)}`);
      } finally {
        await close();
      }
    });

  alias
    .command('remove')
    .description('remove one target of an alias, or the whole alias')
    .argument('<address>', 'the alias')
    .argument('[target]', 'the target to remove (default: every target, the whole alias)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (address: string, target: string | undefined, opts: { config?: string }) => {
      const config = configFrom(opts);
      const { store, close } = await open(config);
      try {
        const n = await store.removeAlias(address, target);
        io.out(`removed ${n} alias entr${n === 1 ? 'y' : 'ies'} of ${address}`);
      } finally {
        await close();
      }
    });

  alias
    .command('list')
    .description('list the aliases of the database (alias files are listed by name)')
    .option('--json', 'as JSON')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const config = configFrom(opts);
      const { store, close } = await open(config);
      try {
        const list = await store.listAliases();
        if (opts.json) {
          io.out(JSON.stringify({ aliases: list, files: config.recipients.aliasFiles }));
          return;
        }
        for (const e of list) io.out(`${e.key}\t${e.target}${e.remote ? '\t(remote)' : ''}`);
        for (const f of config.recipients.aliasFiles) io.out(`# alias file: ${f}`);
        if (list.length === 0 && config.recipients.aliasFiles.length === 0) io.out('no aliases');
      } finally {
        await close();
      }
    });
}
