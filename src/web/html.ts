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
pre{background:#fff;border:1px solid #ddd;padding:.5em;overflow-x:auto;white-space:pre-wrap;word-break:break-all;font-size:.85em}
.status{background:#fff;border-left:4px solid #888;padding:.6em 1em}.status.listed{border-color:#b00020}.status.ok{border-color:#2a7d2a}
form label{margin-right:.5em}
span.verdict{font-weight:bold;padding:0 .3em;border-radius:3px;white-space:nowrap;display:inline-block}td.nowrap{white-space:nowrap;word-break:normal}.v-OPEN{background:#b00020;color:#fff}.v-CLOSED{background:#1b7f3b;color:#fff}
.v-INCONCLUSIVE{background:#f2c200;color:#111}.v-NA,.v-none,.v-running{background:#ddd;color:#111}.v-failed,.v-aborted{background:#555;color:#fff}
.tester-form{background:#fff;border:1px solid #ddd;padding:.8em 1em;display:grid;gap:.5em;max-width:40em}
.tester-form label{display:grid;gap:.2em}.tester-form label.check{display:block}.tester-form input:not([type=checkbox]),.tester-form select{padding:.3em;font:inherit;width:100%;box-sizing:border-box}
@media (max-width:40em){table.stack thead{display:none}table.stack tr{display:block;border-bottom:1px solid #ddd;padding:.3em 0}table.stack td{display:inline-block;border:0;padding:.1em .4em}table.stack td.wide{display:block}}
pre.transcript{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:.4em;margin:.3em 0;font-size:.85em;max-height:30em;overflow:auto}
.table-wrap{overflow-x:auto;max-width:100%;margin:.5em 0 1.5em}.table-wrap table{margin:0}
.table-wrap th,.table-wrap td{word-break:normal;overflow-wrap:break-word}button{white-space:nowrap}
@media (max-width:40em){main{padding:.6em}header{padding:.5em .6em}}
:focus-visible{outline:3px solid #e76f51;outline-offset:2px}header :focus-visible{outline-color:#ffb703}
.filters{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:flex-end;margin:.5em 0 1em}
.filters label{display:flex;flex-direction:column;font-size:.9em}.filters input,.filters select{font:inherit;padding:.3em;min-width:0;max-width:100%}
.paging{display:flex;gap:1em;margin:.5em 0}.hint{color:#555;font-size:.9em;overflow-wrap:anywhere}
.answer{background:#fff;border-left:4px solid #999;padding:.2em 1em;overflow-wrap:anywhere}.answer.refused{border-color:#b00020}.answer.accepted{border-color:#2a9d8f}
caption{text-align:left;padding:.2em 0}
tr.verdict-reject td.verdict{color:#b00020;font-weight:600}code{overflow-wrap:anywhere}
fieldset label{display:block;margin:.3em 0}
.table-wrap td.addr{min-width:7em;overflow-wrap:anywhere}.table-wrap td.long{min-width:13em;overflow-wrap:anywhere}.muted{color:#555;font-size:.85em}.nowrap{white-space:nowrap}
`;

/** The tab icon (a browser asks for one on every page; without it, /favicon.ico is a 404 in the console). */
export const FAVICON = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><path d="M8 1 2 3v4c0 4 2.6 6.6 6 8 3.4-1.4 6-4 6-8V3z" fill="#1d3557"/><path d="m5 8 2 2 4-4" stroke="#fff" stroke-width="1.6" fill="none"/></svg>';

export function page(title: string, body: Markup, who: { admin: string; csrf: string } | null, nav: readonly { href: string; label: string }[] = []): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} · relayguard</title><link rel="stylesheet" href="/assets/app.css"><link rel="icon" href="/assets/favicon.svg" type="image/svg+xml"></head>
<body><header><h1>relayguard · ${title}</h1>${who === null ? '' : html`${nav.length > 0 ? html`<nav aria-label="Main">${nav.map((n) => html`<a href="${n.href}">${n.label}</a>`)}</nav>` : ''}<span>${who.admin}</span>
<form class="inline" method="post" action="/logout"><input type="hidden" name="_csrf" value="${who.csrf}"><button>Log out</button></form>`}</header>
<main>${body}</main></body></html>`.text;
}

/** A page of the public surface (ORDB lookup, delisting, policy): no login state, no admin navigation. */
export function publicPage(title: string, body: Markup): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} · relayguard</title><link rel="stylesheet" href="/assets/app.css"><link rel="icon" href="/assets/favicon.svg" type="image/svg+xml"></head>
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
<div class="table-wrap"><table><caption>Oldest ${data.messages.length} messages</caption>
<thead><tr><th>Queue id</th><th>Received</th><th>Sender</th><th>Recipients</th><th>State</th><th>Node</th><th>Actions</th></tr></thead>
<tbody>${data.messages.map((m) => html`<tr><td>${m.queueId}</td><td>${iso(m.receivedAt)}</td><td>${m.sender === '' ? '<>' : m.sender}</td>
<td>${m.recipients.join(', ')}</td><td>${m.state}</td><td>${m.node ?? ''}</td>
<td>${m.state === 'hold' ? action(m.queueId, 'release') : action(m.queueId, 'hold')} ${action(m.queueId, 'retry')}</td></tr>`)}</tbody></table></div>
${data.refusals == null ? '' : html`<h2>Latest refusals</h2>
<div class="table-wrap"><table><caption>The ${data.refusals.length} latest refused recipients (all decisions: GET /api/decisions; why: GET /api/decisions/why)</caption>
<thead><tr><th>When</th><th>Client</th><th>HELO</th><th>Sender</th><th>Recipient</th><th>Rule</th><th>Reason</th><th>Reply</th></tr></thead>
<tbody>${data.refusals.map((r) => html`<tr><td>${iso(r.at)}</td><td>${r.clientIp}</td><td>${r.helo ?? ''}</td><td>${r.mailFrom === null ? '' : r.mailFrom === '' ? '<>' : r.mailFrom}</td>
<td>${r.rcpt}</td><td>${r.rule}</td><td>${r.reason ?? ''}</td><td>${r.reply ?? ''}</td></tr>`)}</tbody></table></div>`}
<h2>Audit log</h2>
<div class="table-wrap"><table><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Result</th><th>From</th></tr></thead>
<tbody>${data.audit.map((e) => html`<tr><td>${iso(e.at)}</td><td>${e.actor}</td><td>${e.action}</td><td>${e.target ?? ''}</td><td>${e.detail ?? ''}</td><td>${e.clientIp ?? ''}</td></tr>`)}</tbody></table></div>`, data.who, data.nav ?? []);
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
