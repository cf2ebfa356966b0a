/**
 * The decision log pages over HTTP (startWeb with the decisions module over a real SQLite decision store, no
 * browser): the login guard, the filters of the search form (empty fields ignored, addresses in any case), newest
 * first with a cursor link to older rows, every client-chosen value escaped, bad input answered 400 with the form
 * and no list, and the "why was this refused?" answer equal to the API's. The browser test
 * (test/e2e/browser.test.ts) drives the same pages in chromium against a real relay.
 */
import { queueCounts } from '../queue/index.ts';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryLogger } from '../core/log.ts';
import { AdminAccounts } from '../policy/admin-accounts.ts';
import type { AdminResult } from '../queue/index.ts';
import type { NewDecision } from '../policy/decisions.ts';
import { SqliteAdminStore } from '../store/sqlite-admin.ts';
import { SqliteDecisionStore } from '../store/sqlite-decisions.ts';
import { decisionsModule, PAGE_ROWS } from './decisions-page.ts';
import { RelayMetrics } from './metrics.ts';
import { startWeb, type RunningWeb } from './server.ts';

let web: RunningWeb;
let admins: SqliteAdminStore;
let decisions: SqliteDecisionStore;
let dir = '';
let token = '';
const none: AdminResult = { changed: [], unchanged: [], missing: [] };
const XSS = '"><img src=x onerror=alert(1)><script>alert(2)</script>';
const T0 = Date.parse('2026-12-01T10:00:00Z');

const row = (i: number, over: Partial<NewDecision> = {}): NewDecision => ({
  at: T0 + i * 1000, node: 'n1', sessionId: `s${i}`, clientIp: '192.0.2.7', listener: 'mx', helo: 'client.example', user: null,
  mailFrom: 'a@example.org', rcpt: `r${i}@local.test`, action: 'local', rule: 'local-domain', reason: 'mailbox', reply: null, ...over,
});

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'relayguard-decisions-page-'));
  admins = new SqliteAdminStore(':memory:');
  const accounts = new AdminAccounts(admins, { scrypt: { N: 1024, r: 8, p: 1 } });
  await accounts.add('alice', 'long enough');
  token = await accounts.createToken('alice', 'test');
  decisions = new SqliteDecisionStore(join(dir, 'decisions.db'));
  const rows: NewDecision[] = [];
  for (let i = 0; i < PAGE_ROWS + 5; i++) rows.push(row(i));
  rows.push(row(100, { clientIp: '198.51.100.9', helo: XSS, mailFrom: 'x@evil.example', rcpt: 'victim@elsewhere.example', action: 'reject', rule: 'default-deny', reason: 'no rule permits this destination', reply: '554 5.7.1 <victim@elsewhere.example>: Relay access denied' }));
  await decisions.append(rows);
  web = await startWeb({
    node: 'n1', logger: new MemoryLogger(), metrics: new RelayMetrics('n1', { processMetrics: false }), admins: accounts,
    queue: { list: async () => [], get: async () => null, hold: async () => none, release: async () => none, retry: async () => none, delete: async () => none, flush: async () => none, counts: async () => queueCounts([], 0) },
    decisions, modules: [decisionsModule(decisions)],
    checks: {}, admin: { address: '127.0.0.1', port: 0 }, public: null, tls: null,
    sessionLifetimeMs: 60_000, loginFailuresPerIp: 5, loginFailureWindowMs: 60_000,
  });
});

after(async () => {
  await web?.close();
  await decisions?.close();
  await admins?.close();
  await rm(dir, { recursive: true, force: true });
});

async function get(path: string, auth = true): Promise<{ status: number; body: string; location: string | null }> {
  const r = await fetch(`http://127.0.0.1:${web.admin.port}${path}`, { redirect: 'manual', headers: auth ? { authorization: `Bearer ${token}` } : {} });
  return { status: r.status, body: await r.text(), location: r.headers.get('location') };
}

const rowsOf = (body: string): string[] => [...body.matchAll(/<tr class="verdict-[a-z]+">([\s\S]*?)<\/tr>/g)].map((m) => m[1]!);

test('anonymous: sent to the login form; the nav has "Decisions"', async () => {
  const r = await get('/decisions', false);
  assert.deepEqual([r.status, r.location], [303, '/login']);
  assert.equal((await get('/decisions/why?client=192.0.2.7', false)).status, 303);
  const home = await get('/');
  assert.match(home.body, /<a href="\/decisions">Decisions<\/a>/);
});

test('newest first, one page at a time, the cursor link goes on where the page ended', async () => {
  const r = await get('/decisions');
  assert.equal(r.status, 200);
  const rows = rowsOf(r.body);
  assert.equal(rows.length, PAGE_ROWS);
  assert.match(rows[0]!, /victim@elsewhere\.example/);
  assert.match(rows[1]!, new RegExp(`r${PAGE_ROWS + 4}@local\\.test`));
  const next = /<a href="([^"]+)" rel="next">Older decisions<\/a>/.exec(r.body)?.[1]?.replace(/&#38;/g, '&');
  assert.ok(next, 'a link to older decisions');
  const older = await get(next);
  const more = rowsOf(older.body);
  assert.equal(more.length, 6);
  assert.match(more[0]!, /r5@local\.test/);
  assert.match(more.at(-1)!, /r0@local\.test/);
  assert.doesNotMatch(older.body, /rel="next"/, 'the last page has no older link');
  assert.match(older.body, /<a href="\/decisions">Newest<\/a>/);
});

test('filters: empty fields are no filter; addresses match in any case; verdict and rule narrow', async () => {
  const form = await get('/decisions?client=&sender=&rcpt=R3%40Local.Test&action=&rule=');
  assert.equal(form.status, 200);
  assert.deepEqual(rowsOf(form.body).length, 1);
  assert.match(form.body, /value="R3@Local.Test"/, 'the form keeps what was typed');
  const refused = await get('/decisions?action=reject&rule=default-deny');
  assert.equal(rowsOf(refused.body).length, 1);
  assert.match(refused.body, /<option value="reject" selected>refused<\/option>/);
  assert.equal(rowsOf((await get('/decisions?client=198.51.100.9&action=local')).body).length, 0);
  assert.match((await get('/decisions?client=203.0.113.1')).body, /No relay decision matches this search/);
});

test('what clients sent is escaped everywhere it is shown', async () => {
  for (const path of ['/decisions', '/decisions?client=198.51.100.9', '/decisions/why?client=198.51.100.9']) {
    const r = await get(path);
    assert.equal(r.status, 200, path);
    assert.ok(!r.body.includes('<img') && !r.body.includes('<script'), `${path}: raw markup from a client`);
    assert.ok(r.body.includes('&#34;&#62;&#60;img src=x onerror=alert(1)&#62;&#60;script&#62;alert(2)&#60;/script&#62;'), path);
  }
});

test('bad input: 400, the form with the error, no list', async () => {
  for (const [q, field] of [['client=not-an-ip', 'client'], ['action=maybe', 'action'], ['limit=0', 'limit'], ['before=x', 'before'], ['color=red', 'query']] as const) {
    const r = await get(`/decisions?${q}`);
    assert.equal(r.status, 400, q);
    assert.match(r.body, new RegExp(`role="alert">Bad search: ${field}`), q);
    assert.equal(rowsOf(r.body).length, 0, q);
    assert.match(r.body, /role="search"/, q);
  }
  const why = await get('/decisions/why');
  assert.equal(why.status, 400);
  assert.match(why.body, /name at least one of client, rcpt, sender/);
});

test('"why was this refused?" says what the API says; a refused row links to it', async () => {
  const page = await get('/decisions/why?client=198.51.100.9&rcpt=Victim@elsewhere.example');
  const api = JSON.parse((await get('/api/decisions/why?client=198.51.100.9&rcpt=Victim@elsewhere.example')).body);
  assert.equal(api.refused, true);
  const answer = /<section class="answer refused"[^>]*><h2>Answer<\/h2><p>([\s\S]*?)<\/p>/.exec(page.body)?.[1];
  const unescape = (s: string): string => s.replace(/&#(\d+);/g, (_m, c: string) => String.fromCharCode(Number(c)));
  assert.equal(unescape(answer ?? ''), api.answer);
  assert.match(api.answer, /by rule "default-deny"/);
  const list = await get('/decisions?action=reject');
  assert.match(list.body, /<a href="\/decisions\/why\?client=198\.51\.100\.9&#38;rcpt=victim%40elsewhere\.example">why\?<\/a>/);
  const accepted = await get('/decisions/why?client=192.0.2.7');
  assert.match(accepted.body, /<section class="answer accepted"/);
  assert.match(accepted.body, /no refusal recorded/);
});
