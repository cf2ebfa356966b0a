/**
 * The decision log page of the admin dashboard: the relay decisions (one per recipient) searched by client address,
 * sender, recipient, verdict and rule, newest first, a page at a time, and a "why was this refused?" box that
 * answers from the same rows as GET /api/decisions/why.
 * Purpose: let an admin see, without log files, what the relay decided for whom and by which rule.
 * Trust: the rows hold what SMTP clients sent (HELO names, addresses): every value is rendered through `html`
 * (escaped); the page is server-rendered and runs no script. The query is validated with the API's schemas
 * (decision-query.ts); bad input renders the form again with the error (400), never a partial list.
 */
import type { z } from 'zod';
import type { DecisionRecord, DecisionStore } from '../policy/decisions.ts';
import { decisionFilter, decisionQuery, explain, whyQuery } from './decision-query.ts';
import { html, Markup } from './html.ts';
import type { WebContext, WebModule } from './module.ts';

/** Rows per page of the decision log. */
export const PAGE_ROWS = 50;

const VERDICTS: readonly (readonly [string, string])[] = [['', 'any'], ['reject', 'refused'], ['local', 'accepted (local)'], ['relay', 'accepted (relay)']];
const verdictLabel = (action: string): string => VERDICTS.find(([v]) => v === action)?.[1] ?? action;

/** The web module: nav entry "Decisions", GET /decisions and GET /decisions/why. */
export function decisionsModule(store: DecisionStore): WebModule {
  return {
    name: 'decisions',
    nav: [{ href: '/decisions', label: 'Decisions' }],
    pages: (ctx) => [
      { method: 'GET', url: '/decisions', handler: async ({ query, auth, reply }) => {
        const r = await logPage(store, formQuery(query));
        if (r.status !== 200) reply.code(r.status);
        return page(ctx, 'Decisions', r.body, auth);
      } },
      { method: 'GET', url: '/decisions/why', handler: async ({ query, auth, reply }) => {
        const r = await whyPage(store, formQuery(query));
        if (r.status !== 200) reply.code(r.status);
        return page(ctx, 'Why was this refused?', r.body, auth);
      } },
    ],
  };
}

function page(ctx: WebContext, title: string, body: Markup, auth: Parameters<WebContext['page']>[2]): Markup {
  return new Markup(ctx.page(title, body, auth));
}

/** A submitted form sends every field, empty ones as "": an empty field is no filter. */
function formQuery(query: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries((query ?? {}) as Record<string, unknown>)) {
    const s = Array.isArray(v) ? v.at(-1) : v;
    if (typeof s === 'string' && s.trim() !== '') out[k] = s.trim();
  }
  return out;
}

function problem(error: z.ZodError): string {
  const issue = error.issues[0]!;
  return `${issue.path.length > 0 ? issue.path.join('.') : 'query'}: ${issue.message}`;
}

async function logPage(store: DecisionStore, raw: Record<string, string>): Promise<{ status: number; body: Markup }> {
  const parsed = decisionQuery.safeParse({ limit: String(PAGE_ROWS), ...raw });
  if (!parsed.success) return { status: 400, body: html`${searchForm(raw)}<p class="error" role="alert">Bad search: ${problem(parsed.error)}</p>${whyBox(raw)}` };
  const q = parsed.data;
  const rows = await store.search({ ...decisionFilter(q), ...(q.before !== undefined ? { before: q.before } : {}), limit: q.limit + 1 });
  const shown = rows.slice(0, q.limit);
  const next = rows.length > q.limit ? shown.at(-1)!.id : null;
  const keep = Object.fromEntries(Object.entries(raw).filter(([k]) => k !== 'before'));
  const paging = html`<nav class="paging" aria-label="Pages">${q.before !== undefined ? html`<a href="${link('/decisions', keep)}">Newest</a>` : ''}
${next !== null ? html`<a href="${link('/decisions', { ...keep, before: String(next) })}" rel="next">Older decisions</a>` : ''}</nav>`;
  const filtered = Object.keys(keep).some((k) => k !== 'limit');
  return {
    status: 200,
    body: html`${searchForm(raw)}
<h2>${filtered ? 'Matching decisions' : 'Latest decisions'}</h2>
${shown.length === 0 ? html`<p>No relay decision ${filtered ? 'matches this search' : 'recorded yet'} (within the retention of web.decisionRetention).</p>` : decisionTable(shown, `${shown.length} decision${shown.length === 1 ? '' : 's'}, newest first${q.before !== undefined ? ' (older page)' : ''}`)}
${paging}
<p class="hint">As JSON: <a href="${link('/api/decisions', keep)}">${link('/api/decisions', keep)}</a></p>
${whyBox({})}`,
  };
}

async function whyPage(store: DecisionStore, raw: Record<string, string>): Promise<{ status: number; body: Markup }> {
  const parsed = whyQuery.safeParse(raw);
  if (!parsed.success) return { status: 400, body: html`${whyBox(raw)}<p class="error" role="alert">${problem(parsed.error)}</p>` };
  const w = await explain(store, parsed.data);
  return {
    status: 200,
    body: html`${whyBox(raw)}
<section class="answer ${w.refused ? 'refused' : w.latest === null ? '' : 'accepted'}" aria-live="polite"><h2>Answer</h2><p>${w.answer}</p></section>
${w.latest !== null ? html`<h2>Latest decision</h2>${decisionTable([w.latest], 'The latest decision for this query')}` : ''}
${w.refusals.length > 0 ? html`<h2>Refusals</h2>${decisionTable(w.refusals, `The ${w.refusals.length} latest refusal${w.refusals.length === 1 ? '' : 's'} for this query`)}` : ''}
<p><a href="${link('/decisions', { ...(raw['client'] ? { client: raw['client'] } : {}), ...(raw['sender'] ? { sender: raw['sender'] } : {}), ...(raw['rcpt'] ? { rcpt: raw['rcpt'] } : {}) })}">All decisions for this query</a></p>`,
  };
}

function field(label: string, name: string, value: string | undefined, extra: { placeholder?: string; inputmode?: string } = {}): Markup {
  return html`<label>${label}<input name="${name}" value="${value ?? ''}" autocomplete="off" spellcheck="false"${extra.placeholder ? html` placeholder="${extra.placeholder}"` : ''}${extra.inputmode ? html` inputmode="${extra.inputmode}"` : ''}></label>`;
}

function searchForm(q: Record<string, string>): Markup {
  return html`<form class="filters" method="get" action="/decisions" role="search" aria-label="Search decisions">
${field('Client address', 'client', q['client'], { placeholder: '192.0.2.1' })}
${field('Sender', 'sender', q['sender'], { placeholder: 'a@example.org' })}
${field('Recipient', 'rcpt', q['rcpt'], { placeholder: 'b@example.net' })}
<label>Verdict<select name="action">${VERDICTS.map(([v, l]) => html`<option value="${v}"${q['action'] === v ? html` selected` : ''}>${l}</option>`)}</select></label>
${field('Rule', 'rule', q['rule'], { placeholder: 'unknown-recipient' })}
${q['since'] ? html`<input type="hidden" name="since" value="${q['since']}">` : ''}${q['until'] ? html`<input type="hidden" name="until" value="${q['until']}">` : ''}
<span class="nowrap"><button>Search</button> <a href="/decisions">Clear</a></span></form>`;
}

function whyBox(q: Record<string, string>): Markup {
  return html`<section class="why" aria-labelledby="why-title"><h2 id="why-title">Why was this refused?</h2>
<p>Name a client address, a recipient and/or a sender: the answer comes from the recorded decisions.</p>
<form class="filters" method="get" action="/decisions/why">
${field('Client address', 'client', q['client'], { placeholder: '192.0.2.1' })}
${field('Recipient', 'rcpt', q['rcpt'], { placeholder: 'b@example.net' })}
${field('Sender', 'sender', q['sender'], { placeholder: 'a@example.org' })}
<button>Explain</button></form></section>`;
}

function decisionTable(rows: readonly DecisionRecord[], caption: string): Markup {
  // Date and time each on one line: the column wraps between them, never inside.
  const when = (ms: number): Markup => { const t = new Date(ms).toISOString(); return html`<span class="nowrap">${t.slice(0, 10)}</span> <span class="nowrap">${t.slice(11, 19)}</span>`; };
  return html`<div class="table-wrap"><table class="decisions"><caption>${caption}</caption>
<thead><tr><th scope="col">When (UTC)</th><th scope="col">Client</th><th scope="col">HELO</th><th scope="col">Sender</th><th scope="col">Recipient</th><th scope="col">Verdict</th><th scope="col">Rule</th><th scope="col">Reason and reply</th></tr></thead>
<tbody>${rows.map((d) => html`<tr class="verdict-${d.action}"><td><time datetime="${new Date(d.at).toISOString()}">${when(d.at)}</time></td><td>${d.clientIp}${d.listener || d.user ? html`<br><span class="muted">${d.listener ? `on ${d.listener}` : ''}${d.user ? ` as ${d.user}` : ''}</span>` : ''}</td><td class="addr">${d.helo ?? ''}</td>
<td class="addr">${d.mailFrom === null ? '' : d.mailFrom === '' ? '<>' : d.mailFrom}</td><td class="addr">${d.rcpt}</td><td class="verdict">${verdictLabel(d.action)}</td><td>${d.rule}</td>
<td class="long">${d.reason ?? ''}${d.reply ? html`<br><code>${d.reply}</code>` : ''}${d.action === 'reject' ? html` <a href="${link('/decisions/why', { client: d.clientIp, rcpt: d.rcpt })}">why?</a>` : ''}</td></tr>`)}</tbody></table></div>`;
}

function link(path: string, q: Record<string, string>): string {
  const s = new URLSearchParams(q).toString();
  return s === '' ? path : `${path}?${s}`;
}
