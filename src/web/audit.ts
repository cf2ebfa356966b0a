/**
 * The self-audit on the web service (issue 12): the latest report and the history of this node, an audited
 * "run now", and the admin page "Audit". Routes live under /api/self-audit (/api/audit is the admin action log).
 *
 *   GET  /api/self-audit          latest report, the history (newest first, ?limit=) and whether one runs now
 *   POST /api/self-audit/run      starts an audit (or joins the running one); {wait: true} answers with its report,
 *                                 else 202 at once; written to the admin audit log
 *   GET  /self-audit              the page; POST /self-audit/run is its form action
 *
 * Reads the audit only through the AuditAccess it is handed (src/cli/web-modules.ts composes it).
 */
import { z } from 'zod';
import type { AuditReport, Severity } from '../audit/index.ts';
import { Markup, html } from './html.ts';
import type { ApiRoute, PageRoute, WebContext, WebModule } from './module.ts';
import { WebError } from './server.ts';

/** What the module needs of the audit service (src/audit AuditService). */
export interface AuditAccess {
  readonly running: boolean;
  runNow(trigger: string): Promise<AuditReport>;
  latest(): Promise<AuditReport | null>;
  history(limit: number): Promise<AuditReport[]>;
}

export interface AuditModuleOptions {
  /** The service, or null while none runs (asked at each request: a reload may restart it). */
  readonly service: () => AuditAccess | null;
}

const summaryOf = (r: AuditReport) => ({
  startedAt: r.startedAt, durationMs: r.durationMs, trigger: r.trigger, exitCode: r.exitCode, status: r.status,
  checks: r.checks.map((c) => ({ check: c.check, findings: c.findings.length, worst: c.findings.reduce<Severity>((w, f) => (RANK[f.severity] > RANK[w] ? f.severity : w), 'ok') })),
  changes: r.changes.length,
});
const RANK: Readonly<Record<Severity, number>> = { ok: 0, warning: 1, broken: 2, unreachable: 3, critical: 4 };

export function auditWebModule(options: AuditModuleOptions): WebModule {
  const service = (): AuditAccess => {
    const s = options.service();
    if (s === null) throw new WebError(503, 'ERR_AUDIT_UNAVAILABLE', 'The self-audit does not run on this node (audit and web are off, or it is starting)');
    return s;
  };
  /** Starts a run in the background (a failure is logged by the service and shown in the next report). */
  const start = (ctx: WebContext, trigger: string): Promise<AuditReport> => {
    const p = service().runNow(trigger);
    p.catch((err: unknown) => ctx.logger.warn('audit run failed', { err: (err as Error).message }));
    return p;
  };
  return {
    name: 'audit',
    nav: [{ href: '/self-audit', label: 'Audit' }],
    api(ctx): ApiRoute[] {
      return [
        {
          method: 'GET', url: '/api/self-audit', summary: 'The self-audit of this node: the latest report, the history (summaries, newest first) and whether one runs now.',
          query: z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(30) }),
          handler: async ({ query }) => {
            const s = service();
            const [latest, history] = await Promise.all([s.latest(), s.history(query.limit)]);
            return { node: ctx.node, running: s.running, latest, history: history.map(summaryOf) };
          },
        },
        {
          method: 'POST', url: '/api/self-audit/run', summary: 'Runs the self-audit now (or joins the run in progress). wait: answer with the report when it is done; else 202 at once.',
          body: z.strictObject({ wait: z.boolean().default(false) }).prefault({}),
          handler: async ({ body, auth, request, reply }) => {
            const s = service();
            await ctx.audit(auth, request, 'audit.run', null, { wait: body.wait, joined: s.running });
            const p = start(ctx, `api (${auth.actor})`);
            if (body.wait) return { state: 'done', report: await p };
            reply.code(202);
            return { state: 'running' };
          },
        },
      ];
    },
    pages(ctx): PageRoute[] {
      return [
        {
          method: 'GET', url: '/self-audit',
          handler: async ({ auth }) => {
            const s = options.service();
            const latest = s === null ? null : await s.latest();
            const history = s === null ? [] : await s.history(20);
            return new Markup(ctx.page('Audit', auditPage(latest, history, s?.running ?? false, auth.session?.csrf ?? null), auth));
          },
        },
        {
          method: 'POST', url: '/self-audit/run',
          handler: async ({ auth, request }) => {
            const s = service();
            await ctx.audit(auth, request, 'audit.run', null, { wait: false, joined: s.running });
            void start(ctx, `web (${auth.actor})`).catch(() => {});
            return { redirect: '/self-audit' };
          },
        },
      ];
    },
  };
}

const ts = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

function auditPage(latest: AuditReport | null, history: readonly AuditReport[], running: boolean, csrf: string | null): Markup {
  const form = csrf === null ? html`` : html`<form method="post" action="/self-audit/run"><input type="hidden" name="_csrf" value="${csrf}"><button>Run the audit now</button></form>`;
  if (latest === null) return html`<p>No audit yet.${running ? ' One is running.' : ''}</p>${form}`;
  return html`<p class="summary"><span class="card">Result<b>${['clean', 'problems', 'warnings'][latest.exitCode]}</b></span>
<span class="card">Started<b>${ts(latest.startedAt)}</b></span><span class="card">Trigger<b>${latest.trigger}</b></span></p>
${running ? html`<p>An audit is running.</p>` : ''}${form}
<div class="table-wrap"><table><thead><tr><th>Check</th><th>Severity</th><th>Subject</th><th>Finding</th></tr></thead><tbody>
${latest.checks.flatMap((c) => c.findings.map((f) => html`<tr><td>${c.check}</td><td>${f.severity}</td><td>${f.subject}</td><td>${f.summary}</td></tr>`))}
</tbody></table></div>
<h2>Changes since the audit before</h2>
${latest.changes.length === 0 ? html`<p>None.</p>` : html`<div class="table-wrap"><table><thead><tr><th>Change</th><th>Finding</th><th>Subject</th><th>From</th><th>To</th></tr></thead><tbody>
${latest.changes.map((c) => html`<tr><td>${c.kind}</td><td>${c.check}</td><td>${c.subject}</td><td>${c.from ?? ''}</td><td>${c.to ?? ''}</td></tr>`)}</tbody></table></div>`}
<h2>History</h2>
<div class="table-wrap"><table><thead><tr><th>Started</th><th>Trigger</th><th>Result</th><th class="num">Changes</th></tr></thead><tbody>
${history.map((r) => html`<tr><td>${ts(r.startedAt)}</td><td>${r.trigger}</td><td>${r.status}</td><td class="num">${r.changes.length}</td></tr>`)}</tbody></table></div>`;
}
