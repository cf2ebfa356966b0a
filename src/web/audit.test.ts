/**
 * The web module of the self-audit on its own (a fake audit service, in-memory admin store): the API behind the
 * login, 503 while no audit service runs, "run now" written to the admin audit log (and refused without the CSRF
 * token when made with the session cookie), the page with every value escaped, and the form action.
 */
import { queueCounts } from '../queue/index.ts';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { MemoryLogger } from '../core/log.ts';
import { AdminAccounts } from '../policy/admin-accounts.ts';
import type { AdminResult } from '../queue/index.ts';
import { SqliteAdminStore } from '../store/sqlite-admin.ts';
import type { AuditReport } from '../audit/index.ts';
import { auditWebModule, type AuditAccess } from './audit.ts';
import { RelayMetrics } from './metrics.ts';
import { startWeb, type RunningWeb } from './server.ts';

let web: RunningWeb;
let store: SqliteAdminStore;
let token = '';
let service: AuditAccess | null = null;
const none: AdminResult = { changed: [], unchanged: [], missing: [] };
const runs: string[] = [];

const report: AuditReport = {
  schema: 'relayguard-audit/1', node: 'n1', startedAt: Date.UTC(2026, 11, 1), durationMs: 1200, trigger: 'schedule', exitCode: 1, status: 'critical',
  checks: [{ check: 'blocklist', durationMs: 3, findings: [{ check: 'blocklist.listed', subject: '192.0.2.1 in z.test', severity: 'critical', summary: 'listed: <script>alert(1)</script>' }] }],
  previousStartedAt: null, changes: [],
};
const fake: AuditAccess = {
  running: false,
  async runNow(trigger) { runs.push(trigger); return { ...report, trigger }; },
  async latest() { return report; },
  async history() { return [report]; },
};

before(async () => {
  store = new SqliteAdminStore(':memory:');
  const admins = new AdminAccounts(store, { scrypt: { N: 1024, r: 8, p: 1 } });
  await admins.add('alice', 'long enough');
  token = await admins.createToken('alice', 'ci');
  web = await startWeb({
    node: 'n1', logger: new MemoryLogger(), metrics: new RelayMetrics('n1', { processMetrics: false }), admins,
    queue: { list: async () => [], get: async () => null, hold: async () => none, release: async () => none, retry: async () => none, delete: async () => none, flush: async () => none, counts: async () => queueCounts([], 0) },
    checks: {}, admin: { address: '127.0.0.1', port: 0 }, public: null, tls: null,
    sessionLifetimeMs: 60_000, loginFailuresPerIp: 50, loginFailureWindowMs: 60_000,
    modules: [auditWebModule({ service: () => service })],
  });
});
after(async () => {
  await web?.close();
  await store?.close();
});

function http(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: web.admin.port, method, path, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
const bearer = (): Record<string, string> => ({ authorization: `Bearer ${token}` });

test('self-audit API: login required; 503 while no service runs; latest and history; run now (202, or the report with wait) audited', async () => {
  assert.equal((await http('GET', '/api/self-audit')).status, 401);
  assert.equal((await http('POST', '/api/self-audit/run')).status, 401);
  service = null;
  const off = await http('GET', '/api/self-audit', bearer());
  assert.equal(off.status, 503);
  assert.equal(JSON.parse(off.body).error.code, 'ERR_AUDIT_UNAVAILABLE');
  service = fake;
  const got = JSON.parse((await http('GET', '/api/self-audit?limit=5', bearer())).body);
  assert.equal(got.latest.exitCode, 1);
  assert.deepEqual(got.history, [{ startedAt: report.startedAt, durationMs: 1200, trigger: 'schedule', exitCode: 1, status: 'critical', checks: [{ check: 'blocklist', findings: 1, worst: 'critical' }], changes: 0 }]);
  assert.equal((await http('GET', '/api/self-audit?limit=0', bearer())).status, 400);
  const started = await http('POST', '/api/self-audit/run', bearer());
  assert.equal(started.status, 202, started.body);
  assert.deepEqual(JSON.parse(started.body), { state: 'running' });
  const waited = await http('POST', '/api/self-audit/run', { ...bearer(), 'content-type': 'application/json' }, JSON.stringify({ wait: true }));
  assert.equal(waited.status, 200, waited.body);
  assert.equal(JSON.parse(waited.body).report.trigger, 'api (alice (token ci))');
  assert.deepEqual(runs, ['api (alice (token ci))', 'api (alice (token ci))']);
  const log = await store.auditLog({ limit: 10 });
  assert.equal(log.filter((e) => e.action === 'audit.run').length, 2);
});

test('self-audit page: escaped values, in the navigation; the form action needs the CSRF token', async () => {
  service = fake;
  const page = await http('GET', '/self-audit', bearer());
  assert.equal(page.status, 200);
  assert.match(page.body, /href="\/self-audit">Audit</);
  assert.ok(!page.body.includes('<script>alert(1)'), 'the finding is escaped');
  assert.match(page.body, /listed: &#60;script&#62;alert\(1\)&#60;\/script&#62;/);
  // a login session: the form posts with its CSRF token; without it 403
  const form = await http('GET', '/login');
  const lc = /rg_login_csrf=([^;]+)/.exec([form.headers['set-cookie']].flat().join('\n'))![1]!;
  const login = await http('POST', '/login', { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${lc}` }, new URLSearchParams({ name: 'alice', password: 'long enough', _csrf: lc }).toString());
  const cookie = `rg_session=${/rg_session=([^;]+)/.exec([login.headers['set-cookie']].flat().join('\n'))![1]}`;
  const me = JSON.parse((await http('GET', '/api/me', { cookie })).body);
  const withPage = await http('GET', '/self-audit', { cookie });
  assert.match(withPage.body, new RegExp(`name="_csrf" value="${me.csrfToken}"`));
  const before = runs.length;
  const refused = await http('POST', '/self-audit/run', { cookie, 'content-type': 'application/x-www-form-urlencoded' }, '');
  assert.equal(refused.status, 403);
  const ok = await http('POST', '/self-audit/run', { cookie, 'content-type': 'application/x-www-form-urlencoded' }, new URLSearchParams({ _csrf: me.csrfToken }).toString());
  assert.equal(ok.status, 303);
  assert.equal(ok.headers['location'], '/self-audit');
  assert.equal(runs.length, before + 1);
  assert.equal(runs.at(-1), 'web (alice)');
});
