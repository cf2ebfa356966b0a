import { decisionContract } from '../policy/decisions.case.ts';
import { PostgresDecisionStore } from './postgres-decisions.ts';
import { migratedPostgres } from '../testing/postgres-migrated.ts';

const db = migratedPostgres();

decisionContract({
  name: 'postgres',
  async fresh() {
    await db.admin.query('TRUNCATE relay_decisions RESTART IDENTITY');
    const store = await PostgresDecisionStore.open(db.pg.url);
    return { store, dispose: () => store.close() };
  },
});
