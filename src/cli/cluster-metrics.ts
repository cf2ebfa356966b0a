/**
 * /metrics with `workers` > 1 (node:cluster, serve-primary.ts): only worker 0 runs the web service, but every
 * worker takes SMTP connections, so worker 0's own counters would show about 1/workers of the node's traffic.
 * Instead worker 0 asks the primary, which collects every worker's registry with prom-client's AggregatorRegistry
 * (one IPC request and answer per worker; counters and histograms summed, gauges per prom-client's aggregator,
 * default sum) and sends the sum back. The primary only relays numbers: it still reads no client byte and opens no
 * store. A scrape that cannot be aggregated (a worker restarting past the 5 s timeout, the primary gone) fails
 * with ERR_METRICS_CLUSTER rather than answer a partial sum Prometheus would take for a counter reset.
 * The overview charts (series.ts) stay worker 0's: they sample its counters in-process every minute.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import { RelayguardError } from '../core/errors.ts';
import type { RelayMetrics } from '../web/index.ts';

const REQUEST = 'relayguard:metrics-request';
const ANSWER = 'relayguard:metrics-answer';
/** A little longer than prom-client's own 5 s collection timeout. */
const TIMEOUT_MS = 6000;

interface Request { readonly type: typeof REQUEST; readonly id: number }
interface Answer { readonly type: typeof ANSWER; readonly id: number; readonly text?: string; readonly error?: string }

const isRequest = (m: unknown): m is Request => (m as { type?: unknown } | null)?.type === REQUEST && typeof (m as { id?: unknown }).id === 'number';
const isAnswer = (m: unknown): m is Answer => (m as { type?: unknown } | null)?.type === ANSWER && typeof (m as { id?: unknown }).id === 'number';

/** In the primary: answers a worker's request with every worker's metrics summed. Returns the undo. */
export function relayClusterMetrics(): () => void {
  const aggregator = new AggregatorRegistry();
  const onMessage = (worker: Worker, m: unknown): void => {
    if (!isRequest(m)) return;
    const reply = (a: Omit<Answer, 'type' | 'id'>): void => {
      try { if (worker.isConnected()) worker.send({ type: ANSWER, id: m.id, ...a }); } catch { /* the worker went away */ }
    };
    aggregator.clusterMetrics().then((text) => reply({ text }), (err: unknown) => reply({ error: String((err as Error)?.message ?? err) }));
  };
  cluster.on('message', onMessage);
  return () => { cluster.off('message', onMessage); };
}

/**
 * In a worker: answers the primary's collection with this worker's registry (prom-client's worker listener), and
 * makes `metrics.text()` the cluster's sum (used by worker 0, the one serving /metrics).
 */
export function clusterWorkerMetrics(metrics: RelayMetrics): void {
  new AggregatorRegistry(); // installs prom-client's responder in this worker
  AggregatorRegistry.setRegistries([metrics.registry]);
  let next = 0;
  const waiting = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  process.on('message', (m: unknown) => {
    if (!isAnswer(m)) return;
    const w = waiting.get(m.id);
    if (w === undefined) return;
    waiting.delete(m.id);
    clearTimeout(w.timer);
    if (typeof m.text === 'string') w.resolve(m.text);
    else w.reject(new RelayguardError('ERR_METRICS_CLUSTER', `the workers' metrics could not be collected: ${m.error ?? 'no answer'}`));
  });
  metrics.setAggregate(() => new Promise<string>((resolve, reject) => {
    if (!process.send || !process.connected) {
      reject(new RelayguardError('ERR_METRICS_CLUSTER', 'no channel to the serve primary'));
      return;
    }
    const id = next++;
    const timer = setTimeout(() => {
      waiting.delete(id);
      reject(new RelayguardError('ERR_METRICS_CLUSTER', `the serve primary did not answer within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    timer.unref();
    waiting.set(id, { resolve, reject, timer });
    process.send({ type: REQUEST, id } satisfies Request);
  }));
}
