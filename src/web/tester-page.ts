/**
 * The tester's admin pages (server-rendered; tester.ts owns the runs):
 *   GET  /tester             the form (host, ports, mode, tricks) and the past runs, newest first (paging: ?before=)
 *   POST /tester             starts a run (CSRF in _csrf) and redirects to its page; a refusal (forbidden target,
 *                            busy, bad input) renders the form again with the error and a 4xx status
 *   GET  /tester/runs/:id    a run: while it runs, the verdicts so far (rendered here, so the page works without
 *                            script) and /assets/tester.js following the event stream (it fills rows in with
 *                            textContent only); once finished, the whole report with every trick's dialogue.
 * Hooks for scripts and browser tests: #tester-live[data-events][data-state], #tester-status, #tester-tricks
 * (one tr.trick[data-verdict][data-trick] per trick), #tester-verdict[data-verdict].
 */
import { z } from 'zod';
import type { TesterRunRecord, TesterRunSummary } from '../policy/tester-runs.ts';
import type { Finding, RunResult, TargetResult } from '../tester/index.ts';
import { html, Markup } from './html.ts';
import type { Auth, PageRoute, WebContext } from './module.ts';
import { WebError } from './server.ts';
import { eventsFromRecord, runRequestSchema, trickLines, type TesterRequest, type TesterRuns } from './tester-runs.ts';

const iso = (ms: number | null): string => (ms === null ? '' : new Date(ms).toISOString().replace('T', ' ').slice(0, 19));
const verdictClass = (v: string | null): string => `v-${(v ?? 'none').replace('/', '')}`;

function verdictBadge(v: string | null, state?: string): Markup {
  const text = v ?? state ?? '';
  return html`<span class="verdict ${verdictClass(v ?? state ?? null)}">${text}</span>`;
}

function linesText(lines: readonly { dir: string; line: string }[]): string {
  return lines.map((l) => `${l.dir}: ${l.line}`).join('\n');
}

function form(auth: Auth, proof: boolean, values: Record<string, string>, error: string | null): Markup {
  return html`<form class="tester-form" method="post" action="/tester">
${error === null ? '' : html`<p class="error" role="alert" id="tester-error">${error}</p>`}
<input type="hidden" name="_csrf" value="${auth.session?.csrf ?? ''}">
<label>Host, IP address or mail domain <input name="host" required maxlength="255" value="${values['host'] ?? ''}" autocomplete="off"></label>
<label>Ports <input name="ports" value="${values['ports'] ?? ''}" placeholder="25, 587, 465 (PORT or PORT:ROLE)"></label>
<label>Mode <select name="mode">
<option value="safe"${values['mode'] === 'prove' ? '' : ' selected'}>safe (stops at RCPT, never sends DATA)</option>
<option value="prove"${values['mode'] === 'prove' ? ' selected' : ''}${proof ? '' : ' disabled'}>prove (one tagged probe per accepted trick)${proof ? '' : ': needs web.tester.proof'}</option>
</select></label>
<label>Tricks <input name="tricks" value="${values['tricks'] ?? ''}" placeholder="all (or ids: V01,V02,X01,...)"></label>
<label class="check"><input type="checkbox" name="mx" value="1"${values['mx'] === '0' ? '' : ' checked'}> a name is a mail domain (test its MX hosts)</label>
<button>Test</button></form>`;
}

function runsTable(rows: readonly TesterRunSummary[]): Markup {
  return html`<div class="table-wrap"><table id="tester-runs" class="stack"><caption>Runs, newest first</caption>
<thead><tr><th>Started</th><th>Target</th><th>Addresses</th><th>Mode</th><th>State</th><th>Verdict</th><th>By</th></tr></thead>
<tbody>${rows.map((r) => html`<tr><td><a href="/tester/runs/${r.id}">${iso(r.createdAt)}</a></td><td>${r.target}</td><td>${r.addresses.join(', ')}</td>
<td>${(r.options as { mode?: string } | null)?.mode ?? ''}</td><td>${r.state}</td><td>${verdictBadge(r.verdict, r.state === 'done' ? undefined : r.state)}</td><td>${r.actor}</td></tr>`)}</tbody></table></div>`;
}

function findingsList(list: readonly Finding[]): Markup {
  const bad = list.filter((f) => !f.ok);
  if (bad.length === 0) return html``;
  return html`<ul class="findings">${bad.map((f) => html`<li class="sev-${f.severity}"><b>${f.severity}</b> ${f.message}${f.remediation ? html`<br><small>fix: ${f.remediation}</small>` : ''}</li>`)}</ul>`;
}

function targetReport(t: TargetResult): Markup {
  return html`<section class="target" data-address="${t.address}"><h3>${t.address}${t.hostName ? ` (${t.hostName})` : ''} ${verdictBadge(t.verdict)}</h3>
<p>${t.reason}: ${t.detail}</p>${findingsList(t.findings)}
${t.ports.map((p) => html`<h4>Port ${p.port} (${p.role}) ${verdictBadge(p.verdict)}</h4>${findingsList(p.findings)}
${p.transports.map((tr) => html`<div class="table-wrap"><table class="tricks stack"><caption>${tr.transport}: ${tr.verdict} ${tr.reason} (${tr.detail})</caption>
<thead><tr><th>Trick</th><th>Verdict</th><th>Reason</th><th>Detail</th></tr></thead>
<tbody>${tr.tricks.map((k) => html`<tr class="trick" data-trick="${k.id}" data-verdict="${k.verdict}"><td>${k.id} ${k.title}</td><td>${verdictBadge(k.verdict)}</td><td>${k.reason}</td>
<td class="wide">${k.detail}<details><summary>dialogue</summary><pre class="transcript">${linesText(trickLines(k))}</pre></details></td></tr>`)}</tbody></table></div>
${tr.transcripts && tr.transcripts.length > 0 ? html`<details><summary>Full transcript (${tr.transcripts.length} connection(s))</summary>${tr.transcripts.map((c) => html`<pre class="transcript">connection ${c.connection} from ${c.localAddress ?? '?'} at ${c.startedAt}\n${c.lines.map((l) => `${String(l.t).padStart(6)} ${l.dir}: ${l.line}`).join('\n')}</pre>`)}</details>` : ''}`)}`)}
</section>`;
}

/** A run's page body. */
export function runView(r: TesterRunRecord | TesterRunSummary, events: readonly { type: string; data: unknown }[]): Markup {
  const report = ('report' in r ? r.report : null) as RunResult | null;
  const finished = r.state !== 'running';
  const trickRows = events.filter((e) => e.type === 'trick').map((e) => {
    const d = e.data as { address: string; port: number; transport: string; id: string; title: string; verdict: string; reason: string; detail: string; lines: { dir: string; line: string }[] };
    return html`<tr class="trick" data-trick="${d.id}" data-verdict="${d.verdict}"><td class="nowrap">${d.address}</td><td class="nowrap">${d.port} ${d.transport}</td><td>${d.id} ${d.title}</td><td>${verdictBadge(d.verdict)}</td><td>${d.reason}</td>
<td class="wide">${d.detail}<details><summary>dialogue</summary><pre class="transcript">${linesText(d.lines)}</pre></details></td></tr>`;
  });
  const head = html`<p>Target <b>${r.target}</b> (${r.addresses.join(', ')}), started ${iso(r.createdAt)} by ${r.actor} on ${r.node}.
<a href="/api/tester/runs/${r.id}/report">JSON report</a></p>`;
  if (finished) {
    return html`${head}<p id="tester-verdict" data-verdict="${r.verdict ?? r.state}">Verdict: ${verdictBadge(r.verdict, r.verdict ? undefined : r.state)}
${report ? ` ${report.reason}: ${report.detail} (exit ${report.exitCode}, ${(report.durationMs / 1000).toFixed(1)} s)` : ''}${r.error ? ` ${r.error}` : ''}</p>
${report ? html`${report.errors.map((e) => html`<p class="error">${e.input}: ${e.error}</p>`)}${report.targets.map(targetReport)}` : ''}`;
  }
  return html`${head}<section id="tester-live" data-events="/api/tester/runs/${r.id}/events" data-state="running">
<p id="tester-status" role="status" aria-live="polite">Running: ${trickRows.length} trick verdict(s) so far. <noscript>Reload the page to see more.</noscript></p>
<p id="tester-verdict" data-verdict=""></p>
<div class="table-wrap"><table id="tester-tricks" class="stack"><caption>Verdicts as they arrive</caption>
<thead><tr><th>Address</th><th>Port</th><th>Trick</th><th>Verdict</th><th>Reason</th><th>Detail</th></tr></thead>
<tbody>${trickRows}</tbody></table></div></section>
<script type="module" src="/assets/tester.js"></script>`;
}

const formBody = z.object({
  host: z.string().max(300).default(''),
  ports: z.string().max(200).optional(),
  mode: z.string().max(10).optional(),
  tricks: z.string().max(1000).optional(),
  mx: z.string().max(5).optional(),
});

export function testerPages(ctx: WebContext, runs: TesterRuns): PageRoute[] {
  const index = async (auth: Auth, values: Record<string, string>, error: string | null, before?: number): Promise<Markup> => {
    const rows = await runs.store.list({ limit: 51, ...(before !== undefined ? { before } : {}) });
    const page = rows.slice(0, 50);
    const more = rows.length > 50 ? html`<p><a href="/tester?before=${page.at(-1)!.seq}">Older runs</a></p>` : '';
    return new Markup(ctx.page('Tester', html`<h2>Test a mail server for open relaying</h2>${form(auth, runs.proofAvailable, values, error)}
<h2>Runs</h2>${runsTable(page)}${more}`, auth));
  };
  return [
    {
      method: 'GET', url: '/tester', query: z.object({ before: z.coerce.number().int().min(1).optional() }),
      handler: async ({ auth, query }) => index(auth, {}, null, (query as { before?: number }).before),
    },
    {
      method: 'POST', url: '/tester', body: formBody,
      handler: async ({ auth, body, request, reply }) => {
        const f = body as z.infer<typeof formBody>;
        const values = { host: f.host, ports: f.ports ?? '', mode: f.mode ?? 'safe', tricks: f.tricks ?? '', mx: f.mx ? '1' : '0' };
        const split = (s: string | undefined): string[] | undefined => {
          const parts = (s ?? '').split(/[\s,]+/).filter((x) => x !== '');
          return parts.length > 0 ? parts : undefined;
        };
        const input = { host: f.host, mode: f.mode === 'prove' ? 'prove' : 'safe', mx: f.mx !== undefined, ...(split(f.ports) ? { ports: split(f.ports) } : {}), ...(split(f.tricks) ? { tricks: split(f.tricks) } : {}) };
        const parsed = runRequestSchema.safeParse(input);
        if (!parsed.success) {
          const issue = parsed.error.issues[0]!;
          void reply.code(400);
          return index(auth, values, `${issue.path.join('.') || 'form'}: ${issue.message}`);
        }
        try {
          const s = await runs.start(parsed.data as TesterRequest, auth, request);
          return { redirect: `/tester/runs/${s.id}` };
        } catch (err) {
          if (!(err instanceof WebError)) throw err;
          void reply.code(err.status);
          if (err.status === 429) void reply.header('retry-after', '10');
          return index(auth, values, err.message);
        }
      },
    },
    {
      method: 'GET', url: '/tester/runs/:id', params: z.strictObject({ id: z.string().regex(/^[0-9a-f]{16}$/) }),
      handler: async ({ auth, params }) => {
        const live = runs.live(params.id);
        if (live) return new Markup(ctx.page(`Tester run ${params.id}`, runView(live.summary, live.events), auth));
        const r = await runs.store.get(params.id);
        if (r === null) throw new WebError(404, 'ERR_TESTER_RUN_NOT_FOUND', `No tester run ${params.id}`);
        return new Markup(ctx.page(`Tester run ${params.id}`, runView(r, r.state === 'running' ? eventsFromRecord(r) : []), auth));
      },
    },
  ];
}
