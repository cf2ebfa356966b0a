/**
 * `relayguard alias add|remove|list`: the database alias table (src/policy/aliases.ts). A target outside the local
 * domains (config plus database) is refused unless `--remote` says the admin means to forward mail outside.
 */
import { mkdirSync } from 'node:fs';
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { domainOfAddress } from '../core/canonical.ts';
import { createLocality } from '../core/locality.ts';
import { RelayguardError } from '../core/errors.ts';
import { AliasStore, ERR_ALIAS_INVALID, normalizeAliasTarget } from '../policy/aliases.ts';
import { UserStore } from '../policy/users.ts';
import { databasePath } from '../relay/index.ts';

interface Io {
  out(s: string): void;
  err(s: string): void;
}

export function registerAliasCommands(program: Command, io: Io, configFrom: (opts: { config?: string }) => Config): void {
  const alias = program
    .command('alias')
    .description('manage aliases: local addresses that forward to users, lists, or (with --remote) outside addresses');
  const open = (config: Config): { aliases: AliasStore; users: UserStore } => {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    return { aliases: new AliasStore(databasePath(config)), users: new UserStore(databasePath(config)) };
  };

  alias
    .command('add <address> <targets...>')
    .description('add targets to an alias (address local@domain, or @domain for a catch-all); several targets make a list')
    .option('--remote', 'allow targets outside the local domains (mail is forwarded outside)')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action((address: string, targets: string[], opts: { config?: string; remote?: boolean }) => {
      const config = configFrom(opts);
      const { aliases, users } = open(config);
      try {
        const domains = new Set([...config.localDomains, ...users.listDomains()]);
        const locality = createLocality({ domains: () => domains, ownAddresses: () => [] });
        const keyDomain = domainOfAddress(address);
        if (!locality.isLocal(keyDomain)) {
          throw new RelayguardError(ERR_ALIAS_INVALID, `${address}: ${keyDomain || 'the domain'} is not a local domain (add it with "relayguard domain add" or localDomains)`);
        }
        for (const t of targets) {
          const n = normalizeAliasTarget(t);
          if (n !== null && !locality.isLocal(domainOfAddress(n)) && opts.remote !== true) {
            throw new RelayguardError(ERR_ALIAS_INVALID, `target ${n} is outside the local domains: add --remote to forward mail there`);
          }
        }
        const added = aliases.add(address, targets, { remote: opts.remote === true });
        for (const e of added) io.out(`alias ${e.key} -> ${e.target}${e.remote ? ' (remote)' : ''}`);
        io.out(`database: ${databasePath(config)}`);
      } finally {
        aliases.close();
        users.close();
      }
    });

  alias
    .command('remove <address> [target]')
    .description('remove one target of an alias, or the whole alias')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action((address: string, target: string | undefined, opts: { config?: string }) => {
      const config = configFrom(opts);
      const { aliases, users } = open(config);
      try {
        const n = aliases.remove(address, target);
        io.out(`removed ${n} alias entr${n === 1 ? 'y' : 'ies'} of ${address}`);
      } finally {
        aliases.close();
        users.close();
      }
    });

  alias
    .command('list')
    .description('list the aliases of the database (alias files are listed by name)')
    .option('--json', 'as JSON')
    .option('-c, --config <file>', 'relayguard.yaml to use')
    .action((opts: { config?: string; json?: boolean }) => {
      const config = configFrom(opts);
      const { aliases, users } = open(config);
      try {
        const list = aliases.list();
        if (opts.json) {
          io.out(JSON.stringify({ aliases: list, files: config.recipients.aliasFiles }));
          return;
        }
        for (const e of list) io.out(`${e.key}\t${e.target}${e.remote ? '\t(remote)' : ''}`);
        for (const f of config.recipients.aliasFiles) io.out(`# alias file: ${f}`);
        if (list.length === 0 && config.recipients.aliasFiles.length === 0) io.out('no aliases');
      } finally {
        aliases.close();
        users.close();
      }
    });
}
