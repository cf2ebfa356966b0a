/**
 * The worker-thread side of ThreadedSqliteDecisionStore (sqlite-decisions.ts): owns the SqliteDecisionStore
 * (node:sqlite is synchronous) and answers one request at a time over the parent port.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SqliteDecisionStore } from './sqlite-decisions.ts';

const store = new SqliteDecisionStore((workerData as { file: string }).file);
const port = parentPort!;
port.on('message', async (m: { id: number; op: 'append' | 'search' | 'prune' | 'close'; args: unknown[] }) => {
  try {
    const result = await (store[m.op] as (...a: unknown[]) => Promise<unknown>)(...m.args);
    port.postMessage({ id: m.id, ok: true, result });
  } catch (err) {
    port.postMessage({ id: m.id, ok: false, message: String((err as Error)?.message ?? err), code: (err as { code?: unknown })?.code ?? null });
  }
  if (m.op === 'close') port.close();
});
