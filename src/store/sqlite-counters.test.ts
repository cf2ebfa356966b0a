import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { countersContract } from '../policy/counters.case.ts';
import type { CounterStore } from '../policy/counters.ts';
import { SqliteCounterStore } from './sqlite-counters.ts';

countersContract({
  name: 'sqlite',
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-counters-'));
    const opened: CounterStore[] = [];
    return {
      async open() {
        const s = new SqliteCounterStore(join(dir, 'counters.db'));
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

test('sqlite counters: four processes racing on one file count exactly the limit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relayguard-counters-'));
  try {
    const file = join(dir, 'counters.db');
    new SqliteCounterStore(file).close(); // schema first
    const script = `
      import { SqliteCounterStore } from ${JSON.stringify(new URL('./sqlite-counters.ts', import.meta.url).href)};
      const s = new SqliteCounterStore(${JSON.stringify(file)});
      let n = 0;
      for (let i = 0; i < 50; i++) if ((await s.take('auth:203.0.113.9', { now: 1_700_000_000_000 + i, windowMs: 600_000, limit: 37 })).counted) n++;
      await s.close();
      process.stdout.write(String(n));`;
    const run = (): Promise<number> => new Promise((resolve, reject) => {
      const c = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      c.on('error', reject);
      c.on('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`child exited ${code}`))));
    });
    const counts = await Promise.all([run(), run(), run(), run()]);
    assert.equal(counts.reduce((a, b) => a + b, 0), 37, `per process: ${counts.join(', ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
