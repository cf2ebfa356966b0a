import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminContract } from '../policy/admin-accounts.case.ts';
import type { AdminStore } from '../policy/admin-accounts.ts';
import { SqliteAdminStore } from './sqlite-admin.ts';

adminContract({
  name: 'sqlite',
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-admin-'));
    const file = join(dir, 'relayguard.db');
    const opened: AdminStore[] = [new SqliteAdminStore(file)];
    return {
      store: opened[0]!,
      async other() {
        const s = new SqliteAdminStore(file);
        opened.push(s);
        return s;
      },
      async dispose() {
        for (const s of opened) await s.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
});
