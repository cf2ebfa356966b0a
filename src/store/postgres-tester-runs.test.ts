import { testerRunContract } from '../policy/tester-runs.case.ts';
import { PostgresTesterRunStore } from './postgres-tester-runs.ts';
import { migratedPostgres } from '../testing/postgres-migrated.ts';

const db = migratedPostgres();

testerRunContract({
  name: 'postgres',
  async fresh() {
    await db.admin.query('TRUNCATE tester_runs RESTART IDENTITY');
    const store = await PostgresTesterRunStore.open(db.pg.url);
    return { store, dispose: () => store.close() };
  },
});
