import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../config/load.ts';
import { databasePath as relayDatabasePath } from '../relay/index.ts';
import { ordbDatabasePath } from './ordb-service.ts';
import { databasePath } from './paths.ts';

test('the CLI opens the same database as the relay and the ORDB service', () => {
  const config = parseConfig({ dataDir: '/var/lib/relayguard' });
  assert.equal(databasePath(config), '/var/lib/relayguard/relayguard.db');
  assert.equal(databasePath(config), relayDatabasePath(config));
  assert.equal(databasePath(config), ordbDatabasePath(config));
});
