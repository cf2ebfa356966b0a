/**
 * The directory web module (directory.ts) in a web service of its own over an in-memory SQLite directory: the API
 * (users with search and paging, password reset, disable, domains, aliases with the locality rule), the store's
 * refusals as 400/404/409, the audit without passwords, the page and its forms (CSRF, escaping, the refusal shown),
 * and the OpenAPI document (valid OpenAPI 3.1; the answers recorded here validate against it).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { MemoryLogger } from '../core/log.ts';
import { AdminAccounts } from '../policy/admin-accounts.ts';
import { UserAccounts } from '../policy/directory.ts';
import { queueCounts } from '../queue/index.ts';
import { SqliteAdminStore, SqliteDirectoryStore } from '../store/index.ts';
import { answerProblems, openApiProblems, type RecordedAnswer } from '../testing/openapi.ts';
import { directoryModule } from './directory.ts';
import { RelayMetrics } from './metrics.ts';
import { startWeb, type RunningWeb } from './server.ts';

let web: RunningWeb;
let admins: SqliteAdminStore;
let dir: SqliteDirectoryStore;
let users: UserAccounts;
let token = '';
const none = { changed: [], unchanged: [], missing: [] };
const recorded: RecordedAnswer[] = [];

before(async () => {
  admins = new SqliteAdminStore(':memory:');
  const accounts = new AdminAccounts(admins, { scrypt: { N: 1024, r: 8, p: 1 } });
  await accounts.add('alice', 'long enough');
  token = await accounts.createToken('alice', 'unit');
  dir = new SqliteDirectoryStore(':memory:');
  users = new UserAccounts(dir, { scrypt: { N: 1024, r: 8, p: 1 } });
  web = await startWeb({
    node: 'n1', logger: new MemoryLogger(), metrics: new RelayMetrics('n1', { processMetrics: false }), admins: accounts,
    queue: { list: async () => [], counts: async () => queueCounts([], 0), get: async () => null, hold: async () => none, release: async () => none, retry: async () => none, delete: async () => none, flush: async () => none },
    checks: {}, admin: { address: '127.0.0.1', port: 0 }, public: null, tls: null,
    sessionLifetimeMs: 60_000, loginFailuresPerIp: 50, loginFailureWindowMs: 60_000,
    modules: [directoryModule({ store: dir, accounts: users, localDomains: () => new Set(['local.test']) })],
  });
});

after(async () => {
  await web?.close();
  await dir?.close();
  await admins?.close();
});

interface Res { status: number; headers: Record<string, string | string[] | undefined>; body: string; json: any }

function http(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: web.admin.port, method, path, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d: string) => { b += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(b); } catch { /* HTML */ }
        resolve({ status: res.statusCode!, headers: res.headers, body: b, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** An API call with the bearer token; the answer is recorded for the OpenAPI check. */
async function api(method: string, path: string, body?: unknown): Promise<Res> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await http(method, path, headers, body === undefined ? undefined : JSON.stringify(body));
  if (r.json !== null) recorded.push({ method, path, status: r.status, body: r.json });
  return r;
}

test('users: add, search and page, one, password reset, disable and enable, remove; refusals as 400, 404, 409', async () => {
  for (const n of ['bob@local.test', 'carol@local.test', 'dave']) {
    const r = await api('POST', '/api/users', { name: n, password: `pw of ${n}`, addresses: n === 'dave' ? 'dave@local.test, @other.test' : [] });
    assert.equal(r.status, 200, r.body);
  }
  const dave = await api('GET', '/api/users/dave');
  assert.equal(dave.status, 200);
  assert.deepEqual(dave.json.addresses, ['@other.test', 'dave@local.test']);
  assert.equal(dave.json.disabled, false);

  assert.equal((await api('POST', '/api/users', { name: 'Bob@Local.Test', password: 'x' })).json.error.code, 'ERR_USER_EXISTS');
  assert.equal((await api('POST', '/api/users', { name: 'Bob@Local.Test', password: 'x' })).status, 409);
  const invalid = await api('POST', '/api/users', { name: 'has space', password: 'x' });
  assert.equal(invalid.status, 400, invalid.body);
  assert.equal(invalid.json.error.code, 'ERR_USER_INVALID');
  const noName = await api('POST', '/api/users', { password: 'x' });
  assert.equal(noName.status, 400);
  assert.match(noName.json.error.message, /"name"/);
  const badPassword = await api('POST', '/api/users', { name: 'eve', password: 'a\nb' });
  assert.equal(badPassword.status, 400);
  assert.equal(badPassword.json.error.code, 'ERR_USER_INVALID');
  assert.equal(await dir.getUser('eve'), null, 'a refused add wrote nothing');

  const all = await api('GET', '/api/users?limit=2');
  assert.deepEqual([all.json.total, all.json.more, all.json.users.map((u: { name: string }) => u.name)], [3, true, ['bob@local.test', 'carol@local.test']]);
  const next = await api('GET', '/api/users?limit=2&offset=2');
  assert.deepEqual([next.json.more, next.json.users.map((u: { name: string }) => u.name)], [false, ['dave']]);
  const found = await api('GET', '/api/users?search=OTHER.test');
  assert.deepEqual(found.json.users.map((u: { name: string }) => u.name), ['dave'], 'search matches owned addresses, any case');
  assert.equal((await api('GET', '/api/users?limit=0')).status, 400);

  assert.equal((await api('POST', '/api/users/bob@local.test/password', { password: 'new secret' })).status, 200);
  assert.equal(await users.authenticate('bob@local.test', 'new secret'), true);
  assert.equal(await users.authenticate('bob@local.test', 'pw of bob@local.test'), false);
  assert.equal((await api('POST', '/api/users/nobody/password', { password: 'x' })).status, 404);

  assert.equal((await api('POST', '/api/users/bob@local.test/disable')).status, 200);
  assert.equal(await users.authenticate('bob@local.test', 'new secret'), false, 'a disabled user cannot AUTH');
  assert.equal((await api('POST', '/api/users/bob@local.test/enable')).status, 200);
  assert.equal(await users.authenticate('bob@local.test', 'new secret'), true);

  assert.equal((await api('DELETE', '/api/users/carol@local.test')).status, 200);
  const gone = await api('DELETE', '/api/users/carol@local.test');
  assert.equal(gone.status, 404);
  assert.equal(gone.json.error.code, 'ERR_USER_NOT_FOUND');
  assert.equal((await api('GET', '/api/users/carol@local.test')).status, 404);
});

test('domains and aliases: add, list, remove; an alias outside the local domains or with a remote target needs remote', async () => {
  const add = await api('POST', '/api/domains', { domain: 'Extra.TEST.' });
  assert.equal(add.status, 200, add.body);
  assert.equal(add.json.domain, 'extra.test');
  assert.equal((await api('POST', '/api/domains', { domain: 'extra.test' })).status, 409);
  assert.equal((await api('POST', '/api/domains', { domain: 'not a domain' })).status, 400);
  assert.deepEqual((await api('GET', '/api/domains')).json, { config: ['local.test'], database: ['extra.test'] });

  assert.equal((await api('POST', '/api/aliases', { address: 'team@local.test', targets: ['dave@local.test', 'bob@local.test'] })).status, 200);
  const remote = await api('POST', '/api/aliases', { address: 'fwd@local.test', targets: ['friend@remote.test'] });
  assert.equal(remote.status, 400);
  assert.match(remote.json.error.message, /outside the local domains/);
  assert.equal((await api('POST', '/api/aliases', { address: 'fwd@local.test', targets: 'friend@remote.test', remote: true })).status, 200);
  const foreign = await api('POST', '/api/aliases', { address: 'x@remote.test', targets: ['dave@local.test'] });
  assert.equal(foreign.status, 400);
  assert.match(foreign.json.error.message, /not a local domain/);
  assert.deepEqual((await api('GET', '/api/aliases')).json.aliases, [
    { key: 'fwd@local.test', target: 'friend@remote.test', remote: true },
    { key: 'team@local.test', target: 'bob@local.test', remote: false },
    { key: 'team@local.test', target: 'dave@local.test', remote: false },
  ]);
  assert.equal((await api('DELETE', '/api/aliases/team@local.test?target=bob@local.test')).json.removed, 1);
  assert.equal((await api('DELETE', '/api/aliases/fwd@local.test')).json.removed, 1);
  assert.equal((await api('DELETE', '/api/aliases/fwd@local.test')).status, 404);

  assert.equal((await api('DELETE', '/api/domains/extra.test')).status, 200);
  assert.equal((await api('DELETE', '/api/domains/extra.test')).status, 404);
  assert.deepEqual((await api('GET', '/api/domains')).json.database, []);
});

test('every write is in the audit log with its actor and target, never with a password', async () => {
  const audit = await api('GET', '/api/audit?limit=1000');
  const actions = audit.json.entries.map((e: { action: string; target: string }) => `${e.action} ${e.target}`);
  for (const want of ['user.add bob@local.test', 'user.password bob@local.test', 'user.disable bob@local.test', 'user.enable bob@local.test', 'user.remove carol@local.test',
    'domain.add extra.test', 'domain.remove extra.test', 'alias.add team@local.test', 'alias.remove team@local.test']) {
    assert.ok(actions.includes(want), `${want} in ${actions.join(', ')}`);
  }
  assert.ok(audit.json.entries.every((e: { actor: string }) => e.actor === 'alice (token unit)'));
  assert.doesNotMatch(audit.body, /new secret|pw of/, 'no password in the audit log');
  assert.ok(!actions.some((a: string) => a.startsWith('user.add eve')), 'refused changes are not recorded as done');
});

test('the page: nav entry, forms with the CSRF token; a form without it is refused; a refusal is shown escaped', async () => {
  const form = await http('GET', '/login');
  const loginCsrf = /rg_login_csrf=([^;]+)/.exec([form.headers['set-cookie']].flat().join('\n'))![1]!;
  const login = await http('POST', '/login', { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${loginCsrf}` },
    new URLSearchParams({ name: 'alice', password: 'long enough', _csrf: loginCsrf }).toString());
  const cookie = /rg_session=[^;]+/.exec([login.headers['set-cookie']].flat().join('\n'))![0];
  const csrf = (await http('GET', '/api/me', { cookie })).json.csrfToken as string;

  const anon = await http('GET', '/users');
  assert.equal(anon.status, 303);
  assert.equal(anon.headers['location'], '/login');
  const page = await http('GET', '/users', { cookie });
  assert.equal(page.status, 200);
  assert.match(page.body, /<a href="\/users">Users &#38; domains<\/a>/);
  assert.match(page.body, /<td>dave<\/td>/);
  assert.match(page.body, new RegExp(`name="_csrf" value="${csrf}"`));

  const post = (path: string, fields: Record<string, string>): Promise<Res> =>
    http('POST', path, { cookie, 'content-type': 'application/x-www-form-urlencoded' }, new URLSearchParams(fields).toString());
  const refused = await post('/users/add', { name: 'frank@local.test', password: 'pw frank' });
  assert.equal(refused.status, 403);
  assert.equal(await dir.getUser('frank@local.test'), null);
  const added = await post('/users/add', { name: 'frank@local.test', password: 'pw frank', addresses: '@local.test', _csrf: csrf });
  assert.equal(added.status, 303, added.body);
  assert.match(String(added.headers['location']), /^\/users\?done=Added\+user\+frank%40local\.test$/);
  assert.deepEqual((await dir.getUser('frank@local.test'))!.addresses, ['@local.test', 'frank@local.test']);
  assert.equal(await users.authenticate('frank@local.test', 'pw frank'), true);

  const hostile = await post('/users/add', { name: '"><img src=x onerror=alert(1)>', password: 'x', _csrf: csrf });
  assert.equal(hostile.status, 303);
  const shown = await http('GET', String(hostile.headers['location']), { cookie });
  assert.match(shown.body, /class="error" role="alert">User name/);
  assert.doesNotMatch(shown.body, /<img src=x/);
  assert.match(shown.body, /ERR_USER_INVALID/);

  assert.equal((await post('/domains/add', { domain: 'pages.test', _csrf: csrf })).status, 303);
  assert.deepEqual(await dir.listDomains(), ['pages.test']);
  assert.equal((await post('/users/remove', { name: 'frank@local.test', _csrf: csrf })).status, 303);
  assert.equal(await dir.getUser('frank@local.test'), null);
  const audit = await api('GET', '/api/audit?limit=5');
  assert.ok(audit.json.entries.some((e: { action: string; actor: string; target: string }) => e.action === 'user.remove' && e.actor === 'alice' && e.target === 'frank@local.test'));
});

test('OpenAPI: the document is valid OpenAPI 3.1 with the directory routes; every answer recorded here validates against it', async () => {
  const doc = await api('GET', '/api/openapi.json');
  assert.deepEqual(openApiProblems(doc.json), []);
  // The checks can fail: a 3.0 version, an operation without responses, a schema that is no JSON Schema.
  assert.ok(openApiProblems({ ...doc.json, openapi: '3.0.3' }).length > 0);
  assert.ok(openApiProblems({ ...doc.json, paths: { ...doc.json.paths, '/x': { get: { summary: 'x', responses: { 200: { description: 'OK', content: { 'application/json': { schema: { type: 'nonsense' } } } } } } } } }).length > 0);
  assert.ok(openApiProblems({ ...doc.json, paths: { '/x': { get: { parameters: [{ name: 'a', schema: {} }] } } } }).length > 0);
  for (const p of ['/api/users', '/api/users/{name}', '/api/users/{name}/password', '/api/domains', '/api/domains/{domain}', '/api/aliases', '/api/aliases/{address}']) {
    assert.ok(doc.json.paths[p], p);
  }
  assert.ok(recorded.length > 30, `${recorded.length} answers`);
  assert.deepEqual(answerProblems(doc.json, recorded), []);
  // The check can fail: a wrong shape is reported.
  assert.equal(answerProblems(doc.json, [{ method: 'GET', path: '/api/users', status: 200, body: { users: 'no' } }]).length, 1);
});
