import { after, before } from 'node:test';
import { Client } from 'pg';
import { adminContract } from '../policy/admin-accounts.case.ts';
import type { AdminStore } from '../policy/admin-accounts.ts';
import { startPostgres, type PostgresInstance } from '../testing/postgres.ts';
import { PostgresAdminStore } from './postgres-admin.ts';
import { migrate } from './postgres-schema.ts';

let pg: PostgresInstance;
let admin: Client;

before(async () => {
  pg = await startPostgres();
  admin = new Client(pg.url);
  await admin.connect();
  await migrate(admin);
});

after(async () => {
  await admin?.end().catch(() => {});
  await pg?.stop();
});

adminContract({
  name: 'postgres',
  async fresh() {
    await admin.query('TRUNCATE admin_users, admin_tokens, admin_audit');
    const opened: AdminStore[] = [await PostgresAdminStore.open(pg.url)];
    return {
      store: opened[0]!,
      async other() {
        const s = await PostgresAdminStore.open(pg.url);
        opened.push(s);
        return s;
      },
      async dispose() {
        for (const s of opened) await s.close();
      },
    };
  },
});
