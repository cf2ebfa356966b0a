/**
 * The HTML of the ORDB pages (src/web/ordb.ts serves them): the public lookup with its evidence, the delisting
 * status, the zone's policy, and the admin view (search, listing table, one entry with its evidence, history and
 * action forms). Bodies only: ctx.page / ctx.publicPage wrap them. Every value goes through the `html` tag, which
 * escapes it: an EHLO name, a reply or a transcript line of `<script>` or `"><img onerror>` form renders as text.
 */
import type { HistoryEvent } from '../dnsbl/index.ts';
import { html, type Markup } from './html.ts';
import type { EvidenceView, ListingView } from './ordb-evidence.ts';

export interface CategoryInfo {
  readonly code: string;
  readonly reason: string;
}

const when = (isoText: string | null): string => (isoText === null ? '' : isoText.replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC'));
const ms = (t: number): string => when(new Date(t).toISOString());

export function evidenceSection(e: EvidenceView | null): Markup {
  if (e === null) return html`<p>No test evidence is stored for this entry (listed by the operator).</p>`;
  return html`<section class="evidence" aria-label="Evidence">
<h3>Evidence</h3>
<div class="table-wrap"><table><tbody>
<tr><th scope="row">Tested</th><td>${when(e.testedAt)}</td></tr>
<tr><th scope="row">Check</th><td>${e.check === 'proxy' ? 'open proxy (the proxy is asked to connect to our sink)' : e.check === 'nntp' ? 'open Usenet server (a test article is posted without authentication and read back)' : e.check === 'smtp' ? 'open relay' : e.check}${e.checks.length > 1 ? html` · all checks: ${e.checks.map((c, i) => html`${i > 0 ? ', ' : ''}${c.check} ${c.verdict ?? ''}${c.reason ? html` (${c.reason})` : ''}`)}` : ''}</td></tr>
<tr><th scope="row">Mode</th><td>${e.mode === 'prove' ? 'proof (a tagged probe must arrive at our sink)' : e.check === 'proxy' ? 'safe (no message is sent; the connection must arrive at our sink)' : e.mode ?? ''}</td></tr>
<tr><th scope="row">Verdict</th><td>${e.verdict ?? ''}${e.reason ? html` (${e.reason})` : ''}${e.proved && e.reason !== 'proved' ? ' · proved' : ''}</td></tr>
<tr><th scope="row">Detail</th><td>${e.detail ?? ''}</td></tr>
${e.banner ? html`<tr><th scope="row">Greeting</th><td><code>${e.banner}</code></td></tr>` : ''}
${e.flagged ? html`<tr><th scope="row">Note</th><td>${e.flagged}</td></tr>` : ''}
</tbody></table></div>
${e.proxy === null ? '' : html`<h4>Proof: the proxy connected us to our sink</h4>
<div class="table-wrap"><table><tbody>
<tr><th scope="row">Method</th><td>${e.proxy.method}${e.proxy.title ? html` (<code>${e.proxy.attempt ?? e.proxy.methodId}</code>: ${e.proxy.title})` : ''}</td></tr>
<tr><th scope="row">Tested address</th><td><code>${e.proxy.testedAddress ?? ''}</code>${e.proxy.port !== null ? html` port ${e.proxy.port}` : ''}</td></tr>
<tr><th scope="row">Asked to reach</th><td><code>${e.proxy.destination ?? ''}</code></td></tr>
<tr><th scope="row">The proxy replied</th><td><code>${e.proxy.reply ?? '(nothing)'}</code></td></tr>
<tr><th scope="row">Arrived at our sink from (egress)</th><td><code>${e.proxy.egressAddress ?? 'unknown'}</code>${e.proxy.egressAddress !== null && e.proxy.testedAddress !== null && e.proxy.egressAddress !== e.proxy.testedAddress ? ' (not the tested address: a chain or a multi-homed proxy)' : ''}</td></tr>
<tr><th scope="row">Our sink saw</th><td><code>${e.proxy.sinkLine ?? ''}</code></td></tr>
${e.proxy.openAttempts.length > 1 ? html`<tr><th scope="row">Every attempt that got through</th><td>${e.proxy.openAttempts.map((a, i) => html`${i > 0 ? ', ' : ''}<code>${a}</code>`)}</td></tr>` : ''}
</tbody></table></div>`}
${e.nntp === null ? '' : html`<h4>Proof: the server took our test article and served it back</h4>
<div class="table-wrap"><table><tbody>
<tr><th scope="row">Tested address</th><td><code>${e.nntp.testedAddress ?? ''}</code>${e.nntp.port !== null ? html` port ${e.nntp.port}` : ''}</td></tr>
<tr><th scope="row">Posted with</th><td>${e.nntp.path ?? ''} to <code>${e.nntp.group ?? ''}</code>, no AUTHINFO</td></tr>
<tr><th scope="row">Replies</th><td><code>${e.nntp.command ?? ''}</code><br><code>${e.nntp.posted ?? ''}</code></td></tr>
<tr><th scope="row">Article</th><td><code>${e.nntp.messageId ?? ''}</code>, read back with ${e.nntp.readBack.join(', ')}${e.nntp.cancelled ? '; cancelled afterwards' : ''}</td></tr>
${e.nntp.injectionInfo ? html`<tr><th scope="row">The server saw the poster as</th><td><code>${e.nntp.injectionInfo}</code></td></tr>` : ''}
${e.nntp.pathHeader ? html`<tr><th scope="row">Path</th><td><code>${e.nntp.pathHeader}</code></td></tr>` : ''}
</tbody></table></div>`}
${e.trick === null ? '' : html`<h4>The trick that got through</h4>
<div class="table-wrap"><table><tbody>
<tr><th scope="row">Trick</th><td><code>${e.trick.id}</code> ${e.trick.title}</td></tr>
<tr><th scope="row">Port</th><td>${e.trick.port ?? ''}${e.trick.transport ? html` (${e.trick.transport})` : ''}</td></tr>
<tr><th scope="row">MAIL FROM</th><td><code>${e.trick.mailFrom ?? ''}</code></td></tr>
<tr><th scope="row">RCPT TO</th><td>${e.trick.rcptTo.map((r, i) => html`${i > 0 ? html`<br>` : ''}<code>${r}</code>`)}</td></tr>
<tr><th scope="row">Replies</th><td>${e.trick.replies.map((r, i) => html`${i > 0 ? html`<br>` : ''}<code>${r}</code>`)}</td></tr>
</tbody></table></div>`}
${e.proof === null ? '' : html`<h4>Proof: the probe arrived</h4>
<div class="table-wrap"><table><tbody>
<tr><th scope="row">The relay saw the tester as</th><td><code>${e.proof.relaySawClient ?? 'unknown'}</code></td></tr>
<tr><th scope="row">Sent from</th><td><code>${e.proof.sentFrom ?? ''}</code></td></tr>
<tr><th scope="row">Delivered to our sink by</th><td><code>${e.proof.deliveredBy ?? ''}</code>${e.proof.latencyMs !== null ? html` after ${e.proof.latencyMs} ms` : ''}</td></tr>
</tbody></table></div>
<p>Received chain of the probe (newest first):</p>
<pre class="received">${e.proof.received.join('\n')}</pre>`}
${e.transcript === null ? '' : html`<h4>Transcript</h4>
<p>${e.transcript.startedAt ? html`Connection at ${when(e.transcript.startedAt)}` : ''}${e.transcript.localAddress ? html` from ${e.transcript.localAddress}` : ''}. C: the tester, S: the tested server.</p>
<pre class="transcript">${e.transcript.lines.map((l) => `${String(l.t).padStart(6)} ms ${l.dir}: ${l.line}\n`)}${e.transcript.omitted > 0 ? `... ${e.transcript.omitted} more lines (see the JSON)\n` : ''}</pre>`}
</section>`;
}

export function historyTable(history: readonly HistoryEvent[]): Markup {
  return html`<div class="table-wrap"><table><caption>History</caption><thead><tr><th>When</th><th>Event</th><th>State</th><th>Detail</th></tr></thead>
<tbody>${history.map((h) => html`<tr><td>${ms(h.at)}</td><td>${h.event}</td><td>${h.state}</td><td>${h.detail ?? ''}</td></tr>`)}</tbody></table></div>`;
}

export function lookupForm(ip: string): Markup {
  return html`<form method="get" action="/dnsbl/lookup" role="search">
<label>IP address <input name="ip" value="${ip}" required maxlength="64" inputmode="text" autocomplete="off"></label>
<button>Look up</button></form>`;
}

export interface PublicLookup {
  readonly zone: string;
  readonly ip: string;
  /** The entry that decides (listed or excluded), or the address's own delisted entry, or null. */
  readonly listing: ListingView | null;
  readonly evidence: EvidenceView | null;
  readonly history: readonly HistoryEvent[];
  readonly categories: Readonly<Record<string, CategoryInfo>>;
  /** The delisting form's CSRF token (null: no form, e.g. a network listing nobody can retest). */
  readonly csrf: string | null;
}

export function publicLookupBody(r: PublicLookup): Markup {
  const l = r.listing;
  const query = html`<code>${reverse(r.ip)}.${r.zone}</code>`;
  let status: Markup;
  if (l === null || l.status === 'not-listed') {
    status = html`<p class="status ok" role="status"><strong>${r.ip} is not listed</strong> in ${r.zone}.</p>`;
  } else if (l.status === 'excluded') {
    status = html`<p class="status ok" role="status"><strong>${r.ip} is not listed</strong> in ${r.zone}: it is in ${l.network}, which this list never lists.</p>`;
  } else if (l.status === 'delisted') {
    status = html`<p class="status ok" role="status"><strong>${r.ip} is not listed</strong> in ${r.zone}. It was delisted on ${when(l.delistedAt)} (listed ${l.timesListed} time${l.timesListed === 1 ? '' : 's'} before).</p>`;
  } else {
    const cat = r.categories[l.category];
    status = html`<p class="status listed" role="status"><strong>${r.ip} is listed</strong> in ${r.zone}${l.network !== r.ip ? html` (as part of ${l.network})` : ''} since ${when(l.listedSince)}: ${l.reason ?? cat?.reason ?? l.category} (category ${l.category}, answer ${l.code}).</p>`;
  }
  return html`${lookupForm(r.ip)}
${status}
<p>DNS query: ${query} (A: the category code; TXT: the reason and a link to this page). JSON: <a href="/dnsbl/lookup.json?ip=${encodeURIComponent(r.ip)}">lookup.json</a>. Policy: <a href="/dnsbl/policy">how this list works</a>.</p>
${l !== null && (l.status === 'listed' || l.status === 'delisted') ? html`<h2>Why</h2>${evidenceSection(r.evidence)}` : ''}
${l !== null && l.status === 'listed' ? (r.csrf === null
    ? html`<p>This listing covers a network set by the operator; write to the operator of ${r.zone} to have it reviewed.</p>`
    : html`<h2>Request delisting</h2>
<p>Closed the relay? Ask for a retest: we test ${r.ip} again now. If it refuses to relay, it is delisted at once; if it still relays, it stays listed with the new evidence.</p>
<form method="post" action="/dnsbl/delist"><input type="hidden" name="_csrf" value="${r.csrf}"><input type="hidden" name="ip" value="${r.ip}">
<button>Retest ${r.ip} and delist it if closed</button></form>`) : ''}
${l !== null && (l.status === 'listed' || l.status === 'delisted') ? historyTable(r.history) : ''}`;
}

export interface DelistStatus {
  readonly ip: string;
  readonly zone: string;
  readonly requestedAt: number;
  readonly phase: 'waiting' | 'testing' | 'done';
  readonly listing: ListingView;
  readonly evidence: EvidenceView | null;
  /** The history since the request. */
  readonly events: readonly HistoryEvent[];
}

export function delistStatusBody(s: DelistStatus): Markup {
  const l = s.listing;
  let result: Markup;
  if (s.phase !== 'done') {
    result = html`<p class="status" role="status">The retest of ${s.ip} requested at ${ms(s.requestedAt)} is ${s.phase === 'testing' ? 'running' : 'waiting for its turn'}. This page reloads every 5 seconds until it is done; a test can take a few minutes.</p>`;
  } else if (l.status === 'listed') {
    const last = s.events.at(-1);
    result = html`<p class="status listed" role="status"><strong>${s.ip} stays listed.</strong> ${last?.detail ?? ''}</p>`;
  } else {
    result = html`<p class="status ok" role="status"><strong>${s.ip} is delisted.</strong> The retest found it closed; DNS answers follow within the zone's TTL.</p>`;
  }
  return html`${result}
${s.phase === 'done' ? evidenceSection(s.evidence) : ''}
${s.events.length > 0 ? historyTable(s.events) : ''}
<p><a href="/dnsbl/lookup?ip=${encodeURIComponent(s.ip)}">Look up ${s.ip}</a> · <a href="/dnsbl/policy">Policy of ${s.zone}</a></p>`;
}

export interface PolicyInfo {
  readonly zone: string;
  readonly ttlSeconds: number;
  readonly retestIntervalMs: number;
  readonly proofMode: boolean;
  readonly categories: Readonly<Record<string, CategoryInfo>>;
  readonly limits: { readonly lookupsPerMinute: number; readonly delistingPerClientPerHour: number; readonly delistingPerAddressPerHour: number };
}

const duration = (msValue: number): string => {
  const d = msValue / 86_400_000;
  if (d >= 1 && Number.isInteger(d)) return `${d} day${d === 1 ? '' : 's'}`;
  const h = msValue / 3_600_000;
  if (h >= 1 && Number.isInteger(h)) return `${h} hour${h === 1 ? '' : 's'}`;
  return `${Math.round(msValue / 60_000)} minutes`;
};

export function policyBody(p: PolicyInfo): Markup {
  return html`<h2>What is listed</h2>
<p>${p.zone} lists mail servers that relay mail for anyone: open relays. An address is listed only after our tester
${p.proofMode ? 'proved it: a tagged probe sent through it to a third-party address arrived at our sink' : 'found it open and an operator confirmed it'}.
Open proxies (HTTP CONNECT/POST/GET, SOCKS, telnet gateways that forward for anyone) are listed as open-proxy when the
proxy connected our tester to our own sink: the connection arrived, so no message is needed. Usenet servers that take
articles from anyone are listed as open-nntp only when our tagged test article, posted without authentication,
was read back from the server.
Submissions are tested from our own address; nothing is listed on hearsay. The operator may also list whole networks
(category codes below) and exclude networks that are never listed.</p>
<h2>Return codes</h2>
<div class="table-wrap"><table><thead><tr><th>A record</th><th>Category</th><th>Meaning</th></tr></thead>
<tbody>${Object.entries(p.categories).map(([name, c]) => html`<tr><td><code>${c.code}</code></td><td>${name}</td><td>${c.reason}</td></tr>`)}</tbody></table></div>
<p>The TXT record of a listing gives the reason and a link to its evidence page. Query <code>&lt;reversed address&gt;.${p.zone}</code>:
for 192.0.2.1, <code>dig +short 1.2.0.192.${p.zone} A</code> and <code>TXT</code>. As RFC 5782 asks, <code>2.0.0.127.${p.zone}</code>
is always listed and <code>1.0.0.127.${p.zone}</code> never is: test your resolver setup with them.</p>
<h2>TTLs</h2>
<p>Listing answers carry a TTL of ${p.ttlSeconds} seconds: a delisting reaches resolvers within that time.
Listed hosts are retested every ${duration(p.retestIntervalMs)}; a host found closed is delisted.</p>
<h2>How to get delisted</h2>
<ol><li>Close the relay: accept mail only for your own domains, relay only for your own networks and authenticated users.</li>
<li>Look the address up on <a href="/dnsbl/lookup">the lookup page</a> and press the retest button.</li>
<li>We test it again at once. A host that refuses to relay is delisted; one that still relays stays listed, with the new evidence.</li></ol>
<p>Delisting requests are limited to ${p.limits.delistingPerClientPerHour} per client and hour and ${p.limits.delistingPerAddressPerHour} per listed address and hour; lookups to ${p.limits.lookupsPerMinute} per client and minute.
Only listed addresses can be retested from these pages.</p>`;
}

// --- admin --------------------------------------------------------------------------------------------------------

export interface AdminListPage {
  readonly zone: string;
  readonly counts: Readonly<Record<string, number>>;
  readonly rows: readonly ListingView[];
  readonly filter: { readonly state: string; readonly category: string; readonly ip: string };
  readonly states: readonly string[];
  readonly categories: readonly string[];
  readonly offset: number;
  readonly limit: number;
  readonly more: boolean;
  readonly csrf: string;
  readonly message: string | null;
}

export function adminListBody(p: AdminListPage): Markup {
  const qs = (offset: number): string => `?${new URLSearchParams({ ...(p.filter.state ? { state: p.filter.state } : {}), ...(p.filter.category ? { category: p.filter.category } : {}), offset: String(offset) }).toString()}`;
  return html`${p.message ? html`<p class="error" role="alert">${p.message}</p>` : ''}
<div class="summary">${Object.entries(p.counts).map(([k, v]) => html`<div class="card"><b>${v}</b>${k}</div>`)}</div>
<form method="get" action="/ordb/entry" role="search"><label>Address or network <input name="network" required maxlength="64" value="${p.filter.ip}"></label> <button>Show</button></form>
<form method="post" action="/ordb/action"><input type="hidden" name="_csrf" value="${p.csrf}"><input type="hidden" name="action" value="submit">
<label>Submit an address for testing <input name="network" required maxlength="64"></label> <button>Submit</button></form>
<form method="get" action="/ordb"><label>State <select name="state"><option value="">any</option>${p.states.map((s) => html`<option${s === p.filter.state ? html` selected` : ''}>${s}</option>`)}</select></label>
<label>Category <select name="category"><option value="">any</option>${p.categories.map((c) => html`<option${c === p.filter.category ? html` selected` : ''}>${c}</option>`)}</select></label> <button>Filter</button></form>
<div class="table-wrap"><table><caption>Entries of ${p.zone} ${p.offset + 1}-${p.offset + p.rows.length}</caption>
<thead><tr><th>Network</th><th>State</th><th>Category</th><th>Reason</th><th>Listed since</th><th>Last tested</th><th>Next retest</th><th>Times listed</th></tr></thead>
<tbody>${p.rows.map((r) => html`<tr><td><a href="/ordb/entry?network=${encodeURIComponent(r.network)}">${r.network}</a></td><td>${r.state}</td><td>${r.category}</td><td>${r.reason ?? ''}</td>
<td>${when(r.listedSince)}</td><td>${when(r.lastTested)}</td><td>${when(r.nextRetest)}</td><td class="num">${r.timesListed}</td></tr>`)}</tbody></table></div>
<nav aria-label="Pages">${p.offset > 0 ? html`<a href="/ordb${qs(Math.max(0, p.offset - p.limit))}">Previous</a> ` : ''}${p.more ? html`<a href="/ordb${qs(p.offset + p.limit)}">Next</a>` : ''}</nav>`;
}

export interface AdminEntryPage {
  readonly zone: string;
  readonly listing: ListingView;
  readonly evidence: EvidenceView | null;
  readonly history: readonly HistoryEvent[];
  readonly csrf: string;
  readonly message: string | null;
  readonly evidenceUrl: string | null;
}

export function adminEntryBody(p: AdminEntryPage): Markup {
  const l = p.listing;
  const action = (name: string, label: string, reason = false): Markup => html`<form class="inline" method="post" action="/ordb/action">
<input type="hidden" name="_csrf" value="${p.csrf}"><input type="hidden" name="action" value="${name}"><input type="hidden" name="network" value="${l.network}">
${reason ? html`<input name="reason" maxlength="512" placeholder="reason (optional)" aria-label="Reason for ${label}">` : ''}<button>${label}</button></form>`;
  const single = !l.network.includes('/');
  return html`${p.message ? html`<p class="error" role="alert">${p.message}</p>` : ''}
<p><a href="/ordb">All entries</a>${p.evidenceUrl ? html` · <a href="${p.evidenceUrl}">public page</a>` : ''}</p>
<div class="table-wrap"><table><tbody>
<tr><th scope="row">Network</th><td>${l.network}</td></tr>
<tr><th scope="row">State</th><td>${l.state}</td></tr>
<tr><th scope="row">Category</th><td>${l.category} (${l.code})</td></tr>
<tr><th scope="row">Reason</th><td>${l.reason ?? ''}</td></tr>
<tr><th scope="row">First seen</th><td>${when(l.firstSeen)}</td></tr>
<tr><th scope="row">Listed since</th><td>${when(l.listedSince)}</td></tr>
<tr><th scope="row">Last tested</th><td>${when(l.lastTested)}</td></tr>
<tr><th scope="row">Next retest</th><td>${when(l.nextRetest)}</td></tr>
<tr><th scope="row">Times listed</th><td>${l.timesListed}</td></tr>
</tbody></table></div>
<p>${single && (l.state === 'listed' || l.state === 'pending') ? action('retest', 'Retest now') : ''}
${l.state === 'listed' || l.state === 'pending' ? action('delist', 'Delist', true) : ''}
${l.state === 'excluded' ? action('unexclude', 'Lift the exclusion') : action('exclude', 'Exclude (never list)', true)}</p>
${evidenceSection(p.evidence)}
${historyTable(p.history)}`;
}

/** "1.2.0.192" for 192.0.2.1; the nibbles for IPv6. */
export function reverse(ip: string): string {
  if (!ip.includes(':')) return ip.split('.').reverse().join('.');
  const [head, tail = ''] = ip.split('::');
  const left = head === '' ? [] : head!.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = ip.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left;
  return groups.map((g) => g.padStart(4, '0')).join('').split('').reverse().join('.');
}
