/**
 * Server-rendered pages of the admin dashboard (no build step, no script: the Content-Security-Policy forbids
 * inline and foreign script and style). Every value that reaches a page goes through `esc` (the `html` tag does it
 * for each interpolation; only values made by `html` itself pass unescaped), so an EHLO name, sender or Subject of
 * `<script>` or `"><img onerror>` form renders as text.
 */
import type { AuditEntry } from '../policy/admin-accounts.ts';

/** Markup produced by `html` (safe to embed); anything else is text and gets escaped. */
export class Markup {
  readonly text: string;
  constructor(text: string) { this.text = text; }
  toString(): string { return this.text; }
}

export function esc(v: unknown): string {
  return String(v ?? '').replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Markup {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1]!;
  });
  return new Markup(out);
}

function render(v: unknown): string {
  if (v instanceof Markup) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  return esc(v);
}

export const CSS = `
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#111;background:#fafafa}
header{background:#1d3557;color:#fff;padding:.6em 1em;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
header h1{font-size:1.1em;margin:0;flex:1}
header nav{display:flex;gap:.8em;flex-wrap:wrap}header a{color:#fff}
main{padding:1em;max-width:72em;margin:auto}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top;word-break:break-word}
.num{text-align:right}.summary{display:flex;gap:1em;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ddd;padding:.6em 1em;min-width:7em}.card b{display:block;font-size:1.6em}
form.inline{display:inline}button{font:inherit;cursor:pointer}
.login{max-width:22em;margin:4em auto;background:#fff;border:1px solid #ddd;padding:1.5em}
.login label{display:block;margin:.5em 0}.login input{width:100%;box-sizing:border-box;padding:.4em}
.error{color:#b00020}
`;

export function page(title: string, body: Markup, who: { admin: string; csrf: string } | null, nav: readonly { href: string; label: string }[] = []): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} · relayguard</title><link rel="stylesheet" href="/assets/app.css"></head>
<body><header><h1>relayguard · ${title}</h1>${who === null ? '' : html`${nav.length > 0 ? html`<nav aria-label="Main">${nav.map((n) => html`<a href="${n.href}">${n.label}</a>`)}</nav>` : ''}<span>${who.admin}</span>
<form class="inline" method="post" action="/logout"><input type="hidden" name="_csrf" value="${who.csrf}"><button>Log out</button></form>`}</header>
<main>${body}</main></body></html>`.text;
}

/** A page of the public surface (ORDB lookup, delisting, policy): no login state, no admin navigation. */
export function publicPage(title: string, body: Markup): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} · relayguard</title><link rel="stylesheet" href="/assets/app.css"></head>
<body><header><h1>${title}</h1></header>
<main>${body}</main></body></html>`.text;
}

export function loginPage(csrf: string, error: string | null): string {
  return page('Log in', html`<form class="login" method="post" action="/login">
${error === null ? '' : html`<p class="error" role="alert">${error}</p>`}
<input type="hidden" name="_csrf" value="${csrf}">
<label>Admin name<input name="name" autocomplete="username" required autofocus></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button>Log in</button></form>`, null);
}

export interface QueueRow {
  readonly queueId: string;
  readonly receivedAt: number;
  readonly sender: string;
  readonly recipients: readonly string[];
  readonly state: string;
  readonly node: string | null;
}

/** A refused recipient from the relay-decision log (policy/decisions.ts). */
export interface RefusalRow {
  readonly at: number;
  readonly clientIp: string;
  readonly helo: string | null;
  readonly mailFrom: string | null;
  readonly rcpt: string;
  readonly rule: string;
  readonly reason: string | null;
  readonly reply: string | null;
}

export function dashboardPage(data: {
  node: string;
  counts: Record<string, number>;
  messages: readonly QueueRow[];
  audit: readonly AuditEntry[];
  /** The latest refused recipients (null: the decision log is not available). */
  refusals?: readonly RefusalRow[] | null;
  who: { admin: string; csrf: string };
  nav?: readonly { href: string; label: string }[];
  /** Include the live charts (the overview module serves their script and data: web/overview.ts). */
  charts?: boolean;
}): string {
  const iso = (ms: number): string => new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
  const action = (id: string, a: string): Markup => html`<form class="inline" method="post" action="/queue/${encodeURIComponent(id)}/${a}">
<input type="hidden" name="_csrf" value="${data.who.csrf}"><button>${a}</button></form>`;
  return page(`node ${data.node}`, html`${data.charts === true ? overviewCharts() : ''}
<h2>Queue</h2>
<div class="summary">${Object.entries(data.counts).map(([k, v]) => html`<div class="card"><b>${v}</b>${k}</div>`)}</div>
<table><caption>Oldest ${data.messages.length} messages</caption>
<thead><tr><th>Queue id</th><th>Received</th><th>Sender</th><th>Recipients</th><th>State</th><th>Node</th><th>Actions</th></tr></thead>
<tbody>${data.messages.map((m) => html`<tr><td>${m.queueId}</td><td>${iso(m.receivedAt)}</td><td>${m.sender === '' ? '<>' : m.sender}</td>
<td>${m.recipients.join(', ')}</td><td>${m.state}</td><td>${m.node ?? ''}</td>
<td>${m.state === 'hold' ? action(m.queueId, 'release') : action(m.queueId, 'hold')} ${action(m.queueId, 'retry')}</td></tr>`)}</tbody></table>
${data.refusals == null ? '' : html`<h2>Latest refusals</h2>
<table><caption>The ${data.refusals.length} latest refused recipients (all decisions: GET /api/decisions; why: GET /api/decisions/why)</caption>
<thead><tr><th>When</th><th>Client</th><th>HELO</th><th>Sender</th><th>Recipient</th><th>Rule</th><th>Reason</th><th>Reply</th></tr></thead>
<tbody>${data.refusals.map((r) => html`<tr><td>${iso(r.at)}</td><td>${r.clientIp}</td><td>${r.helo ?? ''}</td><td>${r.mailFrom === null ? '' : r.mailFrom === '' ? '<>' : r.mailFrom}</td>
<td>${r.rcpt}</td><td>${r.rule}</td><td>${r.reason ?? ''}</td><td>${r.reply ?? ''}</td></tr>`)}</tbody></table>`}
<h2>Audit log</h2>
<table><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Result</th><th>From</th></tr></thead>
<tbody>${data.audit.map((e) => html`<tr><td>${iso(e.at)}</td><td>${e.actor}</td><td>${e.action}</td><td>${e.target ?? ''}</td><td>${e.detail ?? ''}</td><td>${e.clientIp ?? ''}</td></tr>`)}</tbody></table>`, data.who, data.nav ?? []);
}

/** The overview's chart frames; /assets/overview.js fills them from GET /api/overview. */
function overviewCharts(): Markup {
  const chart = (name: string, title: string): Markup => html`<figure><figcaption>${title}</figcaption><div class="chart" data-chart="${name}"></div><p class="latest" aria-live="off"></p></figure>`;
  return html`<link rel="stylesheet" href="/assets/uPlot.min.css"><link rel="stylesheet" href="/assets/overview.css">
<section id="overview" aria-labelledby="overview-title">
<div class="overview-bar"><h2 id="overview-title">Overview</h2>
<label>Window <select id="overview-minutes"><option value="60">1 hour</option><option value="360">6 hours</option><option value="1440">24 hours</option></select></label></div>
<p id="overview-status" role="status">Loading the charts (they need JavaScript).</p>
<div class="charts">${[
    chart('messages', 'Messages per minute'), chart('refusals', 'Refused recipients per minute, by rule'), chart('queue', 'Queue by state'),
    chart('dns', 'DNS queries per second'), chart('connections', 'SMTP connections'),
  ]}</div></section>
<script type="module" src="/assets/overview.js"></script>`;
}
