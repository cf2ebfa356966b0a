/**
 * Preloaded into a process under soak (`node --expose-gc --import bench/soak-probe.ts ...`, see bench/soak.ts):
 * on SIGUSR2 it runs two full garbage collections and appends one JSON line to $SOAK_PROBE_FILE:
 *   {"t": ms since epoch, "heapUsed": bytes (live heap after GC), "heapTotal", "heapPhysical" (resident part of the
 *    V8 heap: RSS minus this is memory outside V8's heap), "external", "arrayBuffers", "rss",
 *    "spaces": {space name: [committed, resident, used] bytes}}
 * With $SOAK_PROBE_SNAPSHOT_DIR set it also writes a heap snapshot there per signal (diagnosis only: slow, big).
 *
 * Nothing else: no timer, no listener besides the signal, so the process measured is the process as shipped.
 * SIGUSR2 has no other use in relayguard (SIGUSR1 is Node's inspector signal, SIGHUP reload, SIGTERM/SIGINT stop).
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { getHeapSpaceStatistics, getHeapStatistics, writeHeapSnapshot } from 'node:v8';

const file = process.env['SOAK_PROBE_FILE'];
const snapshotDir = process.env['SOAK_PROBE_SNAPSHOT_DIR'];
const gc = (globalThis as { gc?: () => void }).gc;
let n = 0;

if (file !== undefined && file !== '') {
  process.on('SIGUSR2', () => {
    if (gc === undefined) throw new Error('soak-probe needs --expose-gc');
    gc();
    gc();
    const m = process.memoryUsage();
    let snapshot: string | null = null;
    if (snapshotDir !== undefined && snapshotDir !== '') snapshot = writeHeapSnapshot(join(snapshotDir, `soak-${process.pid}-${++n}.heapsnapshot`));
    const heapPhysical = getHeapStatistics().total_physical_size;
    const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, [s.space_size, s.physical_space_size, s.space_used_size]]));
    appendFileSync(file, `${JSON.stringify({ t: Date.now(), heapUsed: m.heapUsed, heapTotal: m.heapTotal, heapPhysical, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss, spaces, snapshot })}\n`);
  });
}
