/**
 * The web service of a real `relayguard serve` (web enabled on an ephemeral loopback port), over real HTTP:
 * /health, /metrics labelled with the node and moving when mail is accepted (queue gauges included), every route
 * of the router (GET /api/routes: the admin listener's routes as fastify registered them, modules' included, not a
 * hand-written list) refusing an anonymous request (401 JSON, or 303 to /login for a page) and every state-changing
 * one refusing a cookie session without its CSRF token (403), 405 with Allow for a wrong method, login with the
 * session cookie and CSRF token, bearer tokens from `relayguard admin token add`, the login throttle per client
 * address, a hold through the API seen by `relayguard queue list`, every change in the audit log, and the OpenAPI
 * document (valid OpenAPI 3.1) against which every API answer recorded here validates.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import { answerProblems, openApiProblems, type RecordedAnswer } from '../../src/testing/openapi.ts';

let serve: ServeProcess;
let port = 0;
let token = '';
const PASSWORD = 'correct horse battery';
/** API answers seen by the tests, validated against the OpenAPI document at the end. */
const recorded: RecordedAnswer[] = [];
const record = (method: string, path: string, r: Res): void => {
  if (path.startsWith('/api/') && r.json !== null) recorded.push({ method, path, status: r.status, body: r.json });
};

interface Res { status: number; headers: Record<string, string | string[] | undefined>; body: string; json: any }

/** One HTTP request from `from` (a loopback address: the throttle counts per client address). */
function http(method: string, path: string, options: { headers?: Record<string, string>; body?: string; from?: string } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: options.headers ?? {}, localAddress: options.from ?? '127.0.0.1' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(body); } catch { /* not JSON */ }
        const r = { status: res.statusCode!, headers: res.headers, body, json };
        if (method !== 'HEAD') record(method, path, r);
        resolve(r);
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function run(args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(NODE, [CLI, ...args, '--config', serve.configFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('close', (code) => resolve({ code, out, err }));
    c.stdin.end(input);
  });
}

const cookiesOf = (r: Res): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const c of [r.headers['set-cookie'] ?? []].flat()) {
    const [pair] = c.split(';');
    const i = pair!.indexOf('=');
    out[pair!.slice(0, i)] = pair!.slice(i + 1);
  }
  return out;
};

async function sendMail(): Promise<string> {
  const c = await p1(serve.ports.mx);
  assert.equal((await c.cmd('MAIL FROM:<sender@example.net>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<u@local.test>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  const r = await c.cmd('Subject: web test\r\nMessage-ID: <web-test@example.net>\r\n\r\nhello\r\n.');
  assert.equal(r.code, 250, r.text);
  await c.cmd('QUIT');
  return /queued as (\S+)/.exec(r.text)![1]!;
}

async function login(from = '127.0.0.1'): Promise<{ cookie: string; csrf: string; set: string[] }> {
  const form = await http('GET', '/login', { from });
  const loginCsrf = cookiesOf(form)['rg_login_csrf']!;
  assert.match(form.body, new RegExp(`name="_csrf" value="${loginCsrf}"`));
  const r = await http('POST', '/login', {
    from,
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${loginCsrf}` },
    body: new URLSearchParams({ name: 'alice', password: PASSWORD, _csrf: loginCsrf }).toString(),
  });
  assert.equal(r.status, 303, r.body);
  const set = [r.headers['set-cookie'] ?? []].flat();
  const cookie = `rg_session=${cookiesOf(r)['rg_session']}`;
  const me = await http('GET', '/api/me', { headers: { cookie }, from });
  assert.equal(me.status, 200, me.body);
  return { cookie, csrf: me.json.csrfToken, set };
}

before(async () => {
  serve = await startServe({ config: { web: { enabled: true, port: 0, loginFailuresPerIp: 3, loginFailureWindow: '10m' } } });
  const line = serve.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin');
  assert.ok(line, 'serve logs where the web service listens');
  port = Number(line['port']);
  const add = await run(['admin', 'add', 'alice', '--password-stdin'], `${PASSWORD}\n`);
  assert.equal(add.code, 0, add.err);
  const t = await run(['admin', 'token', 'add', 'ci', '--admin', 'alice']);
  assert.equal(t.code, 0, t.err);
  token = t.out.trim();
  assert.match(token, /^rgt_[A-Za-z0-9_-]{43}$/);
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

test('/health: 200 with the node and every check ok', async () => {
  const r = await http('GET', '/health');
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.status, 'ok');
  assert.equal(typeof r.json.node, 'string');
  for (const c of ['queue', 'directory', 'admins', 'listeners']) assert.equal(r.json.checks[c].ok, true, c);
});

/** Fills a route's parameters with a value of the right shape (the checks run before the parameters are read). */
const fill = (url: string): string => url.replace(/:id\b/g, 'ABCDEF123').replace(/:action\b/g, 'hold').replace(/:[A-Za-z0-9_]+/g, 'x').replace(/\*/g, 'x');

/** The admin listener's routes as its router has them (GET /api/routes: RunningWeb.routes of this serve). */
async function routerRoutes(): Promise<{ method: string; url: string; public: boolean; page: boolean }[]> {
  const r = await http('GET', '/api/routes', { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, r.body);
  return r.json.routes;
}

test('every non-public route of the router refuses an anonymous request: 401 JSON, or 303 to /login for a page', async () => {
  const routes = await routerRoutes();
  const guarded = routes.filter((r) => !r.public);
  // The router's own list: the built-in API, the dashboard, /metrics, /logout and every module's routes.
  for (const want of ['GET /api/queue', 'POST /api/queue/:id/:action', 'GET /metrics', 'POST /logout', 'GET /', 'GET /api/routes', 'POST /api/users', 'GET /users']) {
    assert.ok(guarded.some((r) => `${r.method} ${r.url}` === want), `${want} among ${guarded.length} guarded routes`);
  }
  assert.deepEqual([...new Set(routes.filter((r) => r.public).map((r) => r.url))].filter((u) => !u.startsWith('/assets/')).sort(), ['/dnsbl/delist', '/dnsbl/delist/status', '/dnsbl/delist/status.json', '/dnsbl/lookup', '/dnsbl/lookup.json', '/dnsbl/policy', '/health', '/login'], 'the public routes: the ORDB public pages, /health, /login (and /assets)');
  for (const r of guarded) {
    const res = await http(r.method, fill(r.url));
    if (r.page) {
      assert.equal(res.status, 303, `${r.method} ${r.url}`);
      assert.equal(res.headers['location'], '/login', `${r.method} ${r.url}`);
      continue;
    }
    assert.equal(res.status, 401, `${r.method} ${r.url}: ${res.body}`);
    if (r.method !== 'HEAD') assert.equal(res.json?.error?.code, 'ERR_WEB_UNAUTHENTICATED', `${r.method} ${r.url}`);
  }
  // A wrong bearer token is refused too.
  assert.equal((await http('GET', '/api/queue', { headers: { authorization: 'Bearer rgt_wrong' }, from: '127.0.0.9' })).status, 401);
});

test('every state-changing route of the router refuses a cookie session without its CSRF token (403), and changes nothing', async () => {
  const { cookie } = await login('127.0.0.13');
  const writes = (await routerRoutes()).filter((r) => !r.public && !['GET', 'HEAD'].includes(r.method));
  assert.ok(writes.length >= 8, JSON.stringify(writes));
  const before = await http('GET', '/api/audit?limit=1', { headers: { cookie }, from: '127.0.0.13' });
  for (const r of writes) {
    for (const headers of [{ cookie }, { cookie, 'x-csrf-token': 'wrong' }] as Record<string, string>[]) {
      const res = await http(r.method, fill(r.url), { headers, from: '127.0.0.13' });
      assert.equal(res.status, 403, `${r.method} ${r.url}: ${res.body}`);
      assert.equal(res.json?.error?.code, 'ERR_WEB_CSRF', `${r.method} ${r.url}`);
    }
  }
  const after = await http('GET', '/api/audit?limit=1', { headers: { cookie }, from: '127.0.0.13' });
  assert.deepEqual(after.json.entries, before.json.entries, 'no refused write reached the audit log');
});

test('a known path with the wrong method: 405 with Allow (JSON); an unknown path: 404 JSON', async () => {
  for (const [method, path, allow] of [['DELETE', '/api/queue', 'GET, HEAD'], ['GET', '/logout', 'POST'], ['PUT', '/health', 'GET, HEAD'], ['GET', '/api/queue/ABCDEF123/hold', 'POST'], ['PATCH', '/api/users/x', 'DELETE, GET, HEAD']] as const) {
    const r = await http(method, path);
    assert.equal(r.status, 405, `${method} ${path}: ${r.body}`);
    assert.equal(r.headers['allow'], allow, `${method} ${path}`);
    assert.equal(r.json.error.code, 'ERR_WEB_METHOD_NOT_ALLOWED');
  }
  const nf = await http('GET', '/api/nope/deeper');
  assert.equal(nf.status, 404);
  assert.equal(nf.json.error.code, 'ERR_WEB_NOT_FOUND');
  // The dashboard page sends an anonymous browser to the login form.
  const page = await http('GET', '/');
  assert.equal(page.status, 303);
  assert.equal(page.headers['location'], '/login');
});

test('/metrics: Prometheus text, every series labelled with the node; counters move when mail is accepted', async () => {
  const scrape = async (): Promise<string> => {
    const r = await http('GET', '/metrics', { headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 200, r.body);
    assert.match(String(r.headers['content-type']), /^text\/plain/);
    return r.body;
  };
  const value = (text: string, series: RegExp): number => {
    const m = text.split('\n').find((l) => series.test(l));
    return m === undefined ? 0 : Number(m.slice(m.lastIndexOf(' ') + 1));
  };
  const before = await scrape();
  const node = /relayguard_messages_accepted_total\{node="([^"]+)"\}/.exec(before)?.[1];
  assert.ok(node, before.slice(0, 500));
  for (const l of before.split('\n')) {
    if (l === '' || l.startsWith('#')) continue;
    assert.match(l, new RegExp(`node="${node}"`), `series without the node label: ${l}`);
  }
  await sendMail();
  const after1 = await scrape();
  assert.equal(value(after1, /^relayguard_messages_accepted_total\{/), value(before, /^relayguard_messages_accepted_total\{/) + 1);
  assert.ok(value(after1, /^relayguard_relay_decisions_total\{action="local",rule="local-domain"/) >= 1, after1);
  assert.ok(value(after1, /^relayguard_smtp_sessions_total\{listener="mx"/) >= 1, after1);
  // The queue gauge is read from the queue at scrape time (cached for a few seconds): delivery is off, so it stays.
  const deadline = Date.now() + 10_000;
  let text = await scrape();
  while (value(text, /^relayguard_queue_messages\{state="queued"/) < 1) {
    assert.ok(Date.now() < deadline, 'relayguard_queue_messages{state="queued"} counts the accepted message');
    await new Promise((r) => setTimeout(r, 250));
    text = await scrape();
  }
  // The oldest age per state, from the same counts (queue port: one aggregate query).
  assert.match(text, /^# TYPE relayguard_queue_oldest_age_seconds gauge$/m);
  assert.ok(value(text, /^relayguard_queue_oldest_age_seconds\{state="queued"/) >= 0, text);
  assert.match(text, /^relayguard_queue_oldest_age_seconds\{state="corrupt",node="[^"]+"\} 0$/m);
});

test('login: session cookie HttpOnly + SameSite=Strict; a write without or with a wrong CSRF token is refused (403); with it, the hold shows in `relayguard queue list` and the audit log', async () => {
  const id = await sendMail();
  const { cookie, csrf, set } = await login();
  const session = set.find((c) => c.startsWith('rg_session='))!;
  assert.match(session, /HttpOnly/i);
  assert.match(session, /SameSite=Strict/i);
  assert.doesNotMatch(session, /Secure/i, 'plain HTTP: no Secure flag');

  // Login form without its CSRF token: 403.
  const bad = await http('POST', '/login', {
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ name: 'alice', password: PASSWORD }).toString(),
  });
  assert.equal(bad.status, 403);
  assert.equal(bad.json.error.code, 'ERR_WEB_CSRF');

  const noCsrf = await http('POST', `/api/queue/${id}/hold`, { headers: { cookie } });
  assert.equal(noCsrf.status, 403, noCsrf.body);
  assert.equal(noCsrf.json.error.code, 'ERR_WEB_CSRF');
  const wrong = await http('POST', `/api/queue/${id}/hold`, { headers: { cookie, 'x-csrf-token': `${csrf}x` } });
  assert.equal(wrong.status, 403);
  const form = await http('POST', `/queue/${id}/hold`, { headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: '_csrf=nope' });
  assert.equal(form.status, 403, 'the dashboard form checks the token too');
  let q = await run(['queue', 'list', '--json']);
  assert.equal(JSON.parse(q.out.trim().split('\n').find((l) => l.includes(id))!).state, 'queued', 'refused writes changed nothing');

  const ok = await http('POST', `/api/queue/${id}/hold`, { headers: { cookie, 'x-csrf-token': csrf } });
  assert.equal(ok.status, 200, ok.body);
  assert.deepEqual(ok.json.changed, [id]);
  q = await run(['queue', 'list', '--json']);
  assert.equal(q.code, 0, q.err);
  assert.equal(JSON.parse(q.out.trim().split('\n').find((l) => l.includes(id))!).state, 'hold');

  const one = await http('GET', `/api/queue/${id}`, { headers: { cookie } });
  assert.equal(one.status, 200);
  assert.equal(one.json.state, 'hold');
  assert.equal(one.json.recipients[0].address, 'u@local.test');

  const audit = await http('GET', '/api/audit', { headers: { cookie } });
  const entry = audit.json.entries.find((e: { action: string; target: string }) => e.action === 'queue.hold' && e.target === id);
  assert.ok(entry, JSON.stringify(audit.json));
  assert.equal(entry.actor, 'alice');
  assert.equal(entry.clientIp, '127.0.0.1');
  assert.ok(audit.json.entries.some((e: { action: string }) => e.action === 'admin.login'));

  // The dashboard shows the message and the audit entry.
  const page = await http('GET', '/', { headers: { cookie } });
  assert.equal(page.status, 200);
  assert.match(page.body, new RegExp(id));
  assert.match(page.body, /queue\.hold/);
  assert.match(String(page.headers['content-security-policy']), /default-src 'none'/);
});

test('bearer token: writes without a CSRF token; the audit names the token', async () => {
  const id = await sendMail();
  const auth = { authorization: `Bearer ${token}` };
  assert.equal((await http('POST', `/api/queue/${id}/hold`, { headers: auth })).status, 200);
  const rel = await http('POST', `/api/queue/${id}/release`, { headers: auth });
  assert.equal(rel.status, 200, rel.body);
  assert.deepEqual(rel.json.changed, [id]);
  const list = await http('GET', `/api/queue?state=queued&limit=1000`, { headers: auth });
  assert.ok(list.json.messages.some((m: { queueId: string }) => m.queueId === id));
  const audit = await http('GET', '/api/audit?limit=10', { headers: auth });
  assert.ok(audit.json.entries.some((e: { action: string; target: string; actor: string }) => e.action === 'queue.release' && e.target === id && e.actor === 'alice (token ci)'));
  // Bad input: 400 naming the field; an unknown message: 404.
  const bad = await http('GET', '/api/queue?limit=0', { headers: auth });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /limit/);
  assert.equal((await http('POST', '/api/queue/ZZZZZZZZZZ/hold', { headers: auth })).status, 404);
  assert.equal((await http('GET', '/api/nope', { headers: auth })).json.error.code, 'ERR_WEB_NOT_FOUND');
});

test('queue paging with after=<next>: every message once, in the listing order, at any depth; after and offset do not mix', async () => {
  await sendMail();
  await sendMail();
  const auth = { authorization: `Bearer ${token}` };
  const all = (await http('GET', '/api/queue?limit=1000', { headers: auth })).json.messages.map((m: { queueId: string }) => m.queueId) as string[];
  assert.ok(all.length >= 3, `${all.length} messages`);
  const seen: string[] = [];
  let next: string | null = null;
  for (let i = 0; i < all.length + 2; i++) {
    const r = await http('GET', `/api/queue?limit=1${next ? `&after=${next}` : ''}`, { headers: auth });
    assert.equal(r.status, 200, r.body);
    seen.push(...r.json.messages.map((m: { queueId: string }) => m.queueId));
    next = r.json.next;
    assert.equal(r.json.more, next !== null);
    if (next === null) break;
  }
  assert.deepEqual(seen, all);
  const both = await http('GET', `/api/queue?limit=1&offset=1&after=1.ABCDEF1`, { headers: auth });
  assert.equal(both.status, 400);
  assert.match(both.json.error.message, /after/);
  assert.equal((await http('GET', '/api/queue?after=x', { headers: auth })).status, 400);
});

test('login throttling: after web.loginFailuresPerIp failures from one address, 429 even with the right password; other addresses still log in', async () => {
  const from = '127.0.0.7';
  const attempt = async (password: string): Promise<Res> => {
    const form = await http('GET', '/login', { from });
    const c = cookiesOf(form)['rg_login_csrf']!;
    return http('POST', '/login', {
      from,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${c}` },
      body: new URLSearchParams({ name: 'alice', password, _csrf: c }).toString(),
    });
  };
  for (let i = 0; i < 3; i++) assert.equal((await attempt('wrong password')).status, 401);
  const blocked = await attempt(PASSWORD);
  assert.equal(blocked.status, 429, blocked.body);
  assert.equal(blocked.json.error.code, 'ERR_WEB_THROTTLED');
  assert.ok(Number(blocked.headers['retry-after']) > 0);
  await login('127.0.0.8');
});

test('`relayguard admin passwd` (another process) ends the admin\'s sessions at once', async () => {
  const { cookie } = await login('127.0.0.12');
  assert.equal((await http('GET', '/api/me', { headers: { cookie }, from: '127.0.0.12' })).status, 200);
  const r = await run(['admin', 'passwd', 'alice', '--password-stdin'], `${PASSWORD}\n`);
  assert.equal(r.code, 0, r.err);
  const after = await http('GET', '/api/me', { headers: { cookie }, from: '127.0.0.12' });
  assert.equal(after.status, 401, 'the old session still works after a password change');
  await login('127.0.0.12');
});

test('OpenAPI: /api/openapi.json is valid OpenAPI 3.1; the queue, decision and other answers recorded by these tests validate against it', async () => {
  const auth = { authorization: `Bearer ${token}` };
  const id = await sendMail();
  // The queue and decision routes once more, so that each has an answer on record whatever ran before.
  for (const path of ['/api/queue?limit=5', `/api/queue/${id}`, '/api/queue/summary', '/api/decisions?limit=5', '/api/decisions/why?rcpt=u@local.test', '/api/me', '/api/audit?limit=5']) {
    assert.equal((await http('GET', path, { headers: auth })).status, 200, path);
  }
  assert.equal((await http('POST', `/api/queue/${id}/hold`, { headers: auth })).status, 200);
  assert.equal((await http('POST', '/api/queue/flush', { headers: auth })).status, 200);
  assert.equal((await http('GET', '/api/decisions?client=not-an-ip', { headers: auth })).status, 400);
  const summary = await http('GET', '/api/queue/summary', { headers: auth });
  assert.ok(summary.json.states.hold.messages >= 1);
  assert.equal(typeof summary.json.states.hold.oldestAgeMs, 'number');

  const doc = await http('GET', '/api/openapi.json', { headers: auth });
  assert.equal(doc.json.openapi, '3.1.0');
  assert.deepEqual(openApiProblems(doc.json), []);
  for (const p of ['/api/queue', '/api/queue/{id}', '/api/decisions']) {
    const schema = doc.json.paths[p].get.responses['200'].content['application/json'].schema;
    assert.equal(schema.additionalProperties, false, `${p}: a real response schema, not "any object"`);
  }
  const paths = new Set(recorded.map((r) => r.path.split('?')[0]!.replace(id, '{id}')));
  for (const p of ['/api/queue', '/api/queue/{id}', '/api/queue/summary', '/api/decisions', '/api/decisions/why', '/api/routes', '/api/audit']) assert.ok(paths.has(p), `${p} answered`);
  assert.deepEqual(answerProblems(doc.json, recorded), []);
});

test('SIGHUP with changed web settings restarts the web service on the new port; the old one is closed', async () => {
  const { parse, stringify } = await import('yaml');
  const { readFileSync, writeFileSync } = await import('node:fs');
  const { freePort } = await import('../../src/testing/ports.ts');
  const next = await freePort();
  const doc = parse(readFileSync(serve.configFile, 'utf8')) as { web: Record<string, unknown> };
  doc.web = { ...doc.web, port: next };
  writeFileSync(serve.configFile, stringify(doc));
  const old = port;
  serve.child.kill('SIGHUP');
  const deadline = Date.now() + 10_000;
  while (!serve.logs.some((l) => l['msg'] === 'configuration reloaded')) {
    assert.ok(Date.now() < deadline, 'configuration reloaded');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(serve.logs.find((l) => l['msg'] === 'configuration reloaded')!['web_restarted'], true);
  port = next;
  assert.equal((await http('GET', '/health')).status, 200);
  port = old;
  await assert.rejects(http('GET', '/health'), /ECONNREFUSED/);
  port = next;
});

test('SIGTERM: /health answers 503 while sessions drain (a balancer stops sending new ones), then the web service stops', async () => {
  const c = await p1(serve.ports.mx);
  assert.equal((await c.cmd('MAIL FROM:<sender@example.net>')).code, 250); // a transaction in progress: the drain waits
  serve.child.kill('SIGTERM');
  const deadline = Date.now() + 10_000;
  let h = await http('GET', '/health');
  while (h.status === 200) {
    assert.ok(Date.now() < deadline, 'health stays 200 during the drain');
    await new Promise((r) => setTimeout(r, 100));
    h = await http('GET', '/health');
  }
  assert.equal(h.status, 503);
  assert.equal(h.json.checks.listeners.ok, false);
  assert.match(h.json.checks.listeners.error, /stopping/);
  await c.cmd('QUIT').catch(() => undefined);
  c.close();
  assert.equal(await serve.stop(), 0);
  await assert.rejects(http('GET', '/health'), /ECONNREFUSED/);
});
