/**
 * `dnsbl export --watch` (watchExport): exports at once and whenever the serial moves, never when it does not; at
 * most one export per wall-clock second, so the files' whole-second modification times strictly increase (rbldnsd
 * compares whole seconds: a second export within the same second would go unseen); a failed export is retried.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchExport } from './dnsbl-commands.ts';

describe('watchExport', () => {
  it('exports when the serial moves, one export per second at most (mtime seconds strictly increase), and retries a failed export', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relayguard-watch-'));
    let stop: () => void = () => {};
    try {
      const file = join(dir, 'zone.ip4set');
      let serial = 1;
      let failNext = false;
      const written: number[] = [];
      const stamps: number[] = [];
      const errors: string[] = [];
      const until = new Promise<void>((r) => { stop = r; });
      const run = watchExport({
        serial: () => serial,
        async write() {
          if (failNext) { failNext = false; throw new Error('disk full'); }
          writeFileSync(file, `serial ${serial}\n`);
          return { serial, files: [file] };
        },
        report(w) { written.push(w.serial); stamps.push(Math.floor(statSync(file).mtimeMs / 1000)); },
        error(err) { errors.push((err as Error).message); },
        intervalMs: 20,
        until,
      });
      const wait = async (cond: () => boolean): Promise<void> => { for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5)); };
      await wait(() => written.length === 1);
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(written, [1], 'no change: no export');
      for (const s of [2, 3, 4]) { serial = s; await wait(() => written.length === s); }
      assert.deepEqual(written, [1, 2, 3, 4]);
      for (let i = 1; i < stamps.length; i++) assert.ok(stamps[i]! > stamps[i - 1]!, `mtime seconds strictly increase: ${stamps.join(' ')}`);
      failNext = true;
      serial = 5;
      await wait(() => written.length === 5);
      assert.deepEqual(errors, ['disk full']);
      assert.deepEqual(written, [1, 2, 3, 4, 5], 'retried at the next check');
      stop();
      await run;
    } finally {
      stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
