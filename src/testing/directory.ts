/**
 * The users and aliases API the tests were written against (the synchronous UserStore/AliasStore, now removed),
 * as async calls over the real SqliteDirectoryStore and UserAccounts: what the relay and the CLI use.
 */
import type { Clock } from '../core/clock.ts';
import type { AddManyOptions, AddUserOptions, NewUser, UserInfo } from '../policy/users.ts';
import { UserAccounts, type AliasEntry, type AliasTarget } from '../policy/directory.ts';
import type { ScryptParams } from '../policy/password.ts';
import { SqliteDirectoryStore } from '../store/index.ts';
import type { DatabaseSync } from 'node:sqlite';

export interface TestDirectoryOptions {
  readonly clock?: Clock;
  readonly scrypt?: ScryptParams;
  readonly verify?: (password: string, encoded: string) => Promise<boolean>;
}

export function testDirectory(database: string | DatabaseSync, options: TestDirectoryOptions = {}) {
  const store = new SqliteDirectoryStore(database, options.clock ? { clock: options.clock } : {});
  const accounts = new UserAccounts(store, { ...(options.scrypt ? { scrypt: options.scrypt } : {}), ...(options.verify ? { verify: options.verify } : {}) });
  return {
    store,
    accounts,
    add: (name: string, password: string, o: AddUserOptions = {}): Promise<UserInfo> => accounts.add(name, password, o),
    addMany: (users: readonly NewUser[], o: AddManyOptions = {}): Promise<UserInfo[]> => accounts.addMany(users, o),
    authenticate: (name: string, password: string): Promise<boolean> => accounts.authenticate(name, password),
    setPassword: (name: string, password: string): Promise<void> => accounts.setPassword(name, password),
    get: (name: string): Promise<UserInfo | null> => store.getUser(name),
    list: (): Promise<UserInfo[]> => store.listUsers(),
    remove: (name: string): Promise<void> => store.removeUser(name),
    setDisabled: (name: string, disabled: boolean): Promise<void> => store.setDisabled(name, disabled),
    addAddress: (name: string, address: string): Promise<void> => store.addAddress(name, address),
    removeAddress: (name: string, address: string): Promise<void> => store.removeAddress(name, address),
    owns: (name: string, address: string): Promise<boolean> => store.owns(name, address),
    isMailbox: (address: string): Promise<boolean> => store.isMailbox(address),
    addDomain: (domain: string): Promise<string> => store.addDomain(domain),
    removeDomain: (domain: string): Promise<void> => store.removeDomain(domain),
    listDomains: (): Promise<string[]> => store.listDomains(),
    hasDomain: (domain: string): Promise<boolean> => store.hasDomain(domain),
    addAlias: (key: string, targets: readonly string[], o: { remote?: boolean } = {}): Promise<AliasEntry[]> => store.addAlias(key, targets, o),
    removeAlias: (key: string, target?: string): Promise<number> => store.removeAlias(key, target),
    listAliases: (): Promise<AliasEntry[]> => store.listAliases(),
    lookupAlias: (key: string): Promise<AliasTarget[] | null> => store.lookupAlias(key),
    close: (): Promise<void> => store.close(),
  };
}
