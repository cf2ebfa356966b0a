/**
 * The web service on its own (fake queue, in-memory admin store): HTTPS with the SMTP certificate and a Secure
 * session cookie, the public listener serving /health and nothing of the admin surface, oversized bodies (413),
 * and the health answer when a check fails or hangs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { MemoryLogger } from '../core/log.ts';
import { AdminAccounts } from '../policy/admin-accounts.ts';
import type { AdminResult } from '../queue/index.ts';
import { generateSelfSigned } from '../smtp/tls-cert.ts';
import { SqliteAdminStore } from '../store/sqlite-admin.ts';
import { RelayMetrics } from './metrics.ts';
import { startWeb, type RunningWeb } from './server.ts';
import { queueCounts } from '../queue/index.ts';

let web: RunningWeb;
let store: SqliteAdminStore;
let healthy = true;
const none: AdminResult = { changed: [], unchanged: [], missing: [] };

before(async () => {
  store = new SqliteAdminStore(':memory:');
  const admins = new AdminAccounts(store, { scrypt: { N: 1024, r: 8, p: 1 } });
  await admins.add('alice', 'long enough');
  web = await startWeb({
    node: 'n1', logger: new MemoryLogger(), metrics: new RelayMetrics('n1', { processMetrics: false }), admins,
    queue: { list: async () => [], counts: async () => queueCounts([], 0), get: async () => null, hold: async () => none, release: async () => none, retry: async () => none, delete: async () => none, flush: async () => none },
    checks: { queue: () => { if (!healthy) throw Object.assign(new Error('queue gone'), { code: 'ERR_STORE_UNAVAILABLE' }); }, slow: () => new Promise(() => {}) },
    admin: { address: '127.0.0.1', port: 0 },
    public: { address: '127.0.0.1', port: 0 },
    tls: await generateSelfSigned('web.test'),
    sessionLifetimeMs: 60_000, loginFailuresPerIp: 5, loginFailureWindowMs: 60_000, checkTimeoutMs: 200,
  });
});

after(async () => {
  await web?.close();
  await store?.close();
});

function https(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, rejectUnauthorized: false }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('web.tls: HTTPS on both listeners; the login cookie is Secure; the public listener serves /health and no admin route', async () => {
  const form = await https(web.admin.port, 'GET', '/login');
  assert.equal(form.status, 200);
  const csrf = /rg_login_csrf=([^;]+)/.exec([form.headers['set-cookie']].flat().join('\n'))![1]!;
  assert.match([form.headers['set-cookie']].flat().join('\n'), /Secure/);
  const r = await https(web.admin.port, 'POST', '/login', { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${csrf}` },
    new URLSearchParams({ name: 'alice', password: 'long enough', _csrf: csrf }).toString());
  assert.equal(r.status, 303, r.body);
  const session = [r.headers['set-cookie']].flat().find((c) => c?.startsWith('rg_session='))!;
  assert.match(session, /; Secure/);
  assert.match(session, /HttpOnly/);
  assert.match(session, /SameSite=Strict/);

  assert.ok(web.public !== null);
  assert.equal((await https(web.public.port, 'GET', '/health')).status, 503, 'the hanging check fails within its timeout');
  for (const path of ['/api/queue', '/metrics', '/login', '/']) {
    const p = await https(web.public.port, 'GET', path);
    assert.equal(p.status, 404, `${path} on the public listener`);
    assert.equal(JSON.parse(p.body).error.code, 'ERR_WEB_NOT_FOUND');
  }
  // The public pages' stylesheet and icon are there.
  for (const [path, type] of [['/assets/app.css', 'text/css'], ['/assets/favicon.svg', 'image/svg+xml']] as const) {
    const p = await https(web.public.port, 'GET', path);
    assert.equal(p.status, 200, path);
    assert.ok(String(p.headers['content-type']).startsWith(type), `${path}: ${p.headers['content-type']}`);
  }
});

test('/health: 503 naming the failed and the timed-out check; 413 for an oversized body', async () => {
  healthy = false;
  const h = await https(web.admin.port, 'GET', '/health');
  assert.equal(h.status, 503);
  const body = JSON.parse(h.body);
  assert.deepEqual(body.checks.queue, { ok: false, error: 'queue gone', code: 'ERR_STORE_UNAVAILABLE' });
  assert.equal(body.checks.slow.ok, false);
  assert.match(body.checks.slow.error, /timed out/);
  healthy = true;
  const big = await https(web.admin.port, 'POST', '/login', { 'content-type': 'application/x-www-form-urlencoded' }, `x=${'a'.repeat(100_000)}`);
  assert.equal(big.status, 413);
  assert.equal(JSON.parse(big.body).error.code, 'ERR_WEB_TOO_LARGE');
});

test('every admin route from the router refuses an anonymous request (401, or 303 to /login for the page), and every state-changing one a session without its CSRF token (403)', async () => {
  const fill = (url: string): string => url.replace(':id', 'ABCDEF123').replace(':action', 'hold');
  const guarded = web.routes.filter((r) => !r.public);
  assert.ok(guarded.length >= 15, `${guarded.length} guarded routes: ${JSON.stringify(web.routes)}`);
  assert.deepEqual(web.routes.filter((r) => r.public).map((r) => r.url).sort(), ['/assets/app.css', '/assets/app.css', '/assets/favicon.svg', '/assets/favicon.svg', '/health', '/health', '/login', '/login', '/login']);
  for (const r of guarded) {
    const res = await https(web.admin.port, r.method, fill(r.url));
    if (r.page) {
      assert.equal(res.status, 303, `${r.method} ${r.url}`);
      assert.equal(res.headers['location'], '/login');
      continue;
    }
    assert.equal(res.status, 401, `${r.method} ${r.url}: ${res.body}`);
    if (r.method !== 'HEAD') assert.equal(JSON.parse(res.body).error.code, 'ERR_WEB_UNAUTHENTICATED', `${r.method} ${r.url}`);
  }
  // A logged-in session without the CSRF token: every write refused.
  const form = await https(web.admin.port, 'GET', '/login');
  const csrf = /rg_login_csrf=([^;]+)/.exec([form.headers['set-cookie']].flat().join('\n'))![1]!;
  const login = await https(web.admin.port, 'POST', '/login', { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${csrf}` },
    new URLSearchParams({ name: 'alice', password: 'long enough', _csrf: csrf }).toString());
  const cookie = /rg_session=[^;]+/.exec([login.headers['set-cookie']].flat().join('\n'))![0];
  const writes = guarded.filter((r) => !['GET', 'HEAD'].includes(r.method));
  assert.ok(writes.length >= 4, JSON.stringify(writes));
  for (const r of writes) {
    const res = await https(web.admin.port, r.method, fill(r.url), { cookie });
    assert.equal(res.status, 403, `${r.method} ${r.url}: ${res.body}`);
    assert.equal(JSON.parse(res.body).error.code, 'ERR_WEB_CSRF');
  }
});

test('a known path with the wrong method: 405 JSON with Allow, on both listeners; an unknown path: 404 JSON', async () => {
  const cases: [number, string, string, string | null][] = [
    [web.admin.port, 'DELETE', '/api/queue', 'GET, HEAD'],
    [web.admin.port, 'GET', '/logout', 'POST'],
    [web.admin.port, 'GET', '/api/queue/ABCDEF123/hold', 'POST'],
    [web.admin.port, 'PUT', '/api/queue/ABCDEF123', 'GET, HEAD'],
    [web.admin.port, 'POST', '/health?x=1', 'GET, HEAD'],
    [web.admin.port, 'PATCH', '/login', 'GET, HEAD, POST'],
    [web.public!.port, 'POST', '/health', 'GET, HEAD'],
    [web.admin.port, 'GET', '/api/queue/ABCDEF123/hold/more', null],
    [web.admin.port, 'POST', '/nope', null],
    [web.public!.port, 'POST', '/api/queue', null],
  ];
  for (const [port, method, path, allow] of cases) {
    const r = await https(port, method, path);
    const body = JSON.parse(r.body);
    if (allow === null) {
      assert.equal(r.status, 404, `${method} ${path}`);
      assert.equal(body.error.code, 'ERR_WEB_NOT_FOUND');
      assert.equal(r.headers['allow'], undefined);
    } else {
      assert.equal(r.status, 405, `${method} ${path}: ${r.body}`);
      assert.equal(body.error.code, 'ERR_WEB_METHOD_NOT_ALLOWED');
      assert.equal(r.headers['allow'], allow, `${method} ${path}`);
    }
  }
});
