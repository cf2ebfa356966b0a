/**
 * The overview module: live charts on the admin home page ("/"): messages in / delivered / deferred / bounced per
 * minute, refusals by rule, the queue by state, DNS queries per second, connections. The data is
 * GET /api/overview?minutes=N (authenticated like every API route), answered from the in-memory per-minute ring
 * (series.ts) sampled from this node's RelayMetrics. The charts are drawn in the browser by uPlot (npm `uplot`,
 * served from node_modules as /assets/uPlot.esm.js and /assets/uPlot.min.css: no CDN, no build step) and
 * src/web/assets/overview.js (a plain ES module, no inline script: the CSP allows script only from 'self').
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { WebAsset, WebContext, WebModule } from './module.ts';
import { OverviewSeries } from './series.ts';

export interface OverviewOptions {
  /** Sample interval of the ring, ms. Default 60,000 (one point a minute). */
  readonly stepMs?: number;
  /** Samples kept. Default 1,440 (a day of minutes). */
  readonly capacity?: number;
}

/** The marker the admin home page looks for to include the charts (server.ts). */
export const OVERVIEW_SCRIPT = 'overview.js';

const file = (rel: string): Buffer => readFileSync(fileURLToPath(new URL(rel, import.meta.url)));
const uplotFile = (name: string): Buffer => readFileSync(fileURLToPath(import.meta.resolve(`uplot/dist/${name}`)));

const query = z.strictObject({ minutes: z.coerce.number().int().min(1).max(1440).default(60) });

export function overviewModule(options: OverviewOptions = {}): WebModule {
  // Read once at start: a missing file fails `serve` at once, not the first page view.
  const assets: WebAsset[] = [
    { name: OVERVIEW_SCRIPT, type: 'text/javascript; charset=utf-8', body: file('./assets/overview.js') },
    { name: 'overview.css', type: 'text/css; charset=utf-8', body: file('./assets/overview.css') },
    { name: 'uPlot.esm.js', type: 'text/javascript; charset=utf-8', body: uplotFile('uPlot.esm.js') },
    { name: 'uPlot.min.css', type: 'text/css; charset=utf-8', body: uplotFile('uPlot.min.css') },
  ];
  let series: OverviewSeries | null = null;
  return {
    name: 'overview',
    api(ctx: WebContext) {
      series?.stop();
      const s = new OverviewSeries({ node: ctx.node, metrics: ctx.metrics, now: ctx.now, ...options });
      s.start();
      series = s;
      return [{
        method: 'GET', url: '/api/overview',
        summary: 'The overview charts\' data: per-minute points of the last N minutes (messages, refusals by rule, queue by state, DNS queries per second, connections); the last point is the minute in progress.',
        query,
        // Serialized once a second at most per window (series.ts json()): fastify sends a JSON string as it is.
        handler: async ({ query: q, reply }) => {
          void reply.type('application/json; charset=utf-8');
          return s.json((q as z.infer<typeof query>).minutes);
        },
      }];
    },
    assets: () => assets,
    async close() {
      series?.stop();
      series = null;
    },
  };
}
