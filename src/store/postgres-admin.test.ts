import { adminContract } from '../policy/admin-accounts.case.ts';
import type { AdminStore } from '../policy/admin-accounts.ts';
import { PostgresAdminStore } from './postgres-admin.ts';
import { migratedPostgres } from '../testing/postgres-migrated.ts';

const db = migratedPostgres();

adminContract({
  name: 'postgres',
  async fresh() {
    await db.admin.query('TRUNCATE admin_users, admin_tokens, admin_audit');
    const opened: AdminStore[] = [await PostgresAdminStore.open(db.pg.url)];
    return {
      store: opened[0]!,
      async other() {
        const s = await PostgresAdminStore.open(db.pg.url);
        opened.push(s);
        return s;
      },
      async dispose() {
        for (const s of opened) await s.close();
      },
    };
  },
});
