/**
 * Paths under dataDir that the command line opens without assembling the relay. Kept apart from src/relay so that a
 * command that only touches the database (user, domain, alias, dnsbl) does not load the relay's modules at start-up;
 * paths.test.ts keeps them equal to what the relay opens.
 */
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';

/** The embedded database (users, domains, aliases, ORDB listings): dataDir/relayguard.db. */
export function databasePath(config: Pick<Config, 'dataDir'>): string {
  return join(config.dataDir, 'relayguard.db');
}
