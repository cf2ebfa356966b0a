/**
 * The web tester ("an MX Toolbox that tells the truth"): `relayguard test` started from the dashboard or the API,
 * run in the background, its verdicts streamed trick by trick as Server-Sent Events, its report kept.
 *
 *   POST /api/tester/runs              start a run (the options of `relayguard test`); 202 with the run, or
 *                                      400 ERR_TESTER_TARGET_FORBIDDEN (an address the SSRF guard refuses: every
 *                                      address the target resolves to is checked, and the run tests exactly those),
 *                                      400 ERR_TESTER_RESOLVE, 400 ERR_WEB_BAD_INPUT (naming the field),
 *                                      400 ERR_TESTER_PROOF_UNAVAILABLE (mode "prove" without web.tester.proof),
 *                                      429 ERR_TESTER_BUSY + Retry-After when web.tester.maxConcurrent runs are going
 *                                      (refused, not queued: a form user gets an answer at once, a script retries).
 *   GET  /api/tester/runs              past runs, newest first (paging: before=<next>; filter: state).
 *   GET  /api/tester/runs/:id          one run: state, verdict, and `report` (schema relayguard-tester/2 when done).
 *   GET  /api/tester/runs/:id/report   the report alone: the document `relayguard test --json` prints.
 *   GET  /api/tester/runs/:id/events   text/event-stream: `run` (first), one `trick` per trick as its verdict
 *                                      arrives (with its dialogue lines), one `target` per address tested, then
 *                                      `done` (state, verdict, exit code). A late client gets the events so far
 *                                      replayed (ids count from 1; Last-Event-ID resumes), then the live ones; a
 *                                      finished run's events are rebuilt from its stored report (trick verdicts
 *                                      final). A client that goes away is unsubscribed at once.
 * Runs are recorded in the tester-run store (policy/tester-runs.ts) as 'running', then 'done' / 'failed' /
 * 'aborted'; when the web service stops, running runs are cancelled and marked 'aborted' (and at the next start,
 * any the node left running, e.g. after a crash). Every started run is audited (tester.run) and counted in
 * relayguard_tester_runs_total{verdict}.
 *
 * The tester itself comes in through TesterEngine (the CLI composes it from src/tester): this module never
 * speaks SMTP. Trust: the targets are chosen by an authenticated admin, but a stolen session must not turn the
 * tester against the operator's network: target-guard.ts. Values from remote servers reach pages escaped (html
 * tag) and the live view through textContent only.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Logger } from '../core/log.ts';
import type { TesterRunRecord, TesterRunSummary } from '../policy/tester-runs.ts';
import type { ApiRoute, PageRoute, WebAsset, WebContext, WebModule } from './module.ts';
import { WebError } from './server.ts';
import { testerPages } from './tester-page.ts';
import {
  ERR_TESTER_RUN_NOT_FOUND, TesterRuns, runRequestSchema, type TesterModuleOptions, type TesterRequest,
} from './tester-runs.ts';

export {
  ERR_TESTER_BUSY, ERR_TESTER_PROOF_UNAVAILABLE, ERR_TESTER_RESOLVE, ERR_TESTER_RUN_NOT_FOUND, ERR_TESTER_TARGET_FORBIDDEN,
  TesterRuns, runRequestSchema, type PreparedRun, type RunHooks, type TesterEngine, type TesterModuleOptions, type TesterRequest,
} from './tester-runs.ts';

const RUN_ID = z.string().regex(/^[0-9a-f]{16}$/, 'a run id (16 hex digits)');
const listQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  before: z.coerce.number().int().min(1).optional(),
  state: z.enum(['running', 'done', 'failed', 'aborted']).optional(),
});

let assetCache: Buffer | null = null;
function testerScript(): Buffer {
  assetCache ??= readFileSync(new URL('./assets/tester.js', import.meta.url));
  return assetCache;
}

function summaryJson(s: TesterRunSummary): Record<string, unknown> {
  return {
    id: s.id, node: s.node, actor: s.actor, target: s.target, addresses: s.addresses, options: s.options, state: s.state,
    verdict: s.verdict, exitCode: s.exitCode, error: s.error,
    createdAt: new Date(s.createdAt).toISOString(), finishedAt: s.finishedAt === null ? null : new Date(s.finishedAt).toISOString(),
    links: { self: `/api/tester/runs/${s.id}`, report: `/api/tester/runs/${s.id}/report`, events: `/api/tester/runs/${s.id}/events`, page: `/tester/runs/${s.id}` },
  };
}

export function testerModule(o: TesterModuleOptions, logger?: Logger): WebModule & { readonly runs: TesterRuns } {
  const runs = new TesterRuns(o);
  const get = async (id: string): Promise<TesterRunRecord> => {
    const r = await o.store.get(id);
    if (r === null) throw new WebError(404, ERR_TESTER_RUN_NOT_FOUND, `No tester run ${id}`);
    return r;
  };
  return {
    name: 'tester',
    runs,
    nav: [{ href: '/tester', label: 'Tester' }],
    api(ctx: WebContext): ApiRoute[] {
      runs.bind(ctx);
      return [
        {
          method: 'POST', url: '/api/tester/runs', body: runRequestSchema,
          summary: 'Start a tester run (the options of `relayguard test`): 202 with the run; 429 ERR_TESTER_BUSY when web.tester.maxConcurrent runs are going; 400 ERR_TESTER_TARGET_FORBIDDEN for loopback, private and reserved targets outside web.tester.allowTargets.',
          handler: async ({ body, auth, request, reply }) => {
            const s = await runs.start(body as TesterRequest, auth, request);
            void reply.code(202).header('location', `/api/tester/runs/${s.id}`);
            return summaryJson(s);
          },
        },
        {
          method: 'GET', url: '/api/tester/runs', query: listQuery, summary: 'Past and current tester runs, newest first; page with before=<next of the previous page>.',
          handler: async ({ query }) => {
            const q = query as z.infer<typeof listQuery>;
            const rows = await o.store.list({ limit: q.limit + 1, ...(q.before !== undefined ? { before: q.before } : {}), ...(q.state ? { state: q.state } : {}) });
            const page = rows.slice(0, q.limit);
            return { runs: page.map(summaryJson), next: rows.length > q.limit ? page.at(-1)!.seq : null };
          },
        },
        {
          method: 'GET', url: '/api/tester/runs/:id', params: z.strictObject({ id: RUN_ID }),
          summary: 'One tester run: state, verdict, and its report (schema relayguard-tester/2, as `relayguard test --json`) once done.',
          handler: async ({ params }) => {
            const r = await get(params.id);
            return { ...summaryJson(r), report: r.report };
          },
        },
        {
          method: 'GET', url: '/api/tester/runs/:id/report', params: z.strictObject({ id: RUN_ID }),
          summary: 'The report of a run alone: the document `relayguard test --json` prints (schema relayguard-tester/2); 409 ERR_TESTER_NO_REPORT while it runs or when it failed.',
          handler: async ({ params }) => {
            const r = await get(params.id);
            if (r.report === null) throw new WebError(409, 'ERR_TESTER_NO_REPORT', `Tester run ${r.id} has no report (${r.state}${r.error ? `: ${r.error}` : ''})`);
            return r.report;
          },
        },
        {
          method: 'GET', url: '/api/tester/runs/:id/events', params: z.strictObject({ id: RUN_ID }), produces: 'text/event-stream', raw: true,
          summary: 'Server-Sent Events of a run: run, one trick per trick as its verdict arrives (with its dialogue), target per address, then done. Late clients get the events so far first; Last-Event-ID resumes.',
          handler: async ({ params, request, reply }) => runs.stream(params.id, request, reply),
        },
      ];
    },
    pages(ctx: WebContext): PageRoute[] {
      runs.bind(ctx);
      return testerPages(ctx, runs);
    },
    assets(): WebAsset[] {
      return [{ name: 'tester.js', type: 'text/javascript; charset=utf-8', body: testerScript() }];
    },
    async stop() {
      await runs.stop();
    },
    async close() {
      await runs.stop();
      await o.store.close().catch((err: unknown) => logger?.warn('tester store not closed', { err: String(err) }));
      await o.onClose?.();
    },
  };
}
