/**
 * Users, local domains and aliases through the web service of a real `relayguard serve` (embedded SQLite
 * directory), seen at once by the same relay: a user added through the API can AUTH on the submissions port right
 * away, a password reset and a removal apply to the next AUTH, a domain added through the API takes mail at the next
 * RCPT and a removed one is refused, an alias forwards at once; `relayguard user list` (another process) sees the
 * changes; every write is in the audit log without the password; the page's forms work with the CSRF token and not
 * without; an oversized body to a module route is 413; the OpenAPI document validates and so do the answers here.
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
const recorded: RecordedAnswer[] = [];

interface Res { status: number; headers: Record<string, string | string[] | undefined>; body: string; json: any }

function http(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
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

async function api(method: string, path: string, body?: unknown): Promise<Res> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await http(method, path, headers, body === undefined ? undefined : JSON.stringify(body));
  if (r.json !== null) recorded.push({ method, path, status: r.status, body: r.json });
  return r;
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

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

/** AUTH PLAIN on the submissions port (implicit TLS) from `from`: the reply code. */
async function auth(user: string, password: string, from: string): Promise<number> {
  const c = await p1(serve.ports.submissions, { tls: true, localAddress: from });
  try {
    return (await c.cmd(`AUTH PLAIN ${b64(`\0${user}\0${password}`)}`)).code;
  } finally {
    c.close();
  }
}

/** RCPT on the MX port from an untrusted client: the reply. */
async function rcpt(address: string): Promise<{ code: number; text: string }> {
  const c = await p1(serve.ports.mx, { localAddress: '127.0.0.2' });
  try {
    assert.equal((await c.cmd('MAIL FROM:<someone@example.net>')).code, 250);
    const r = await c.cmd(`RCPT TO:<${address}>`);
    await c.cmd('QUIT');
    return { code: r.code, text: r.lines.join(' ') };
  } finally {
    c.close();
  }
}

before(async () => {
  // Only 127.0.0.1 is trusted: the RCPT checks come from 127.0.0.2, a stranger who may not relay.
  serve = await startServe({ config: { trustedNetworks: ['127.0.0.1/32'], web: { enabled: true, port: 0 } } });
  port = Number(serve.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin')!['port']);
  const add = await run(['admin', 'add', 'alice', '--password-stdin'], `${PASSWORD}\n`);
  assert.equal(add.code, 0, add.err);
  const t = await run(['admin', 'token', 'add', 'ci', '--admin', 'alice']);
  assert.equal(t.code, 0, t.err);
  token = t.out.trim();
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

test('a user added through the API can AUTH at once on the same serve; a password reset and a removal apply to the next AUTH', async () => {
  assert.equal(await auth('web-user@local.test', 'first password', '127.0.0.21'), 535, 'unknown before');
  const add = await api('POST', '/api/users', { name: 'Web-User@local.test', password: 'first password', addresses: ['@local.test'] });
  assert.equal(add.status, 200, add.body);
  assert.equal(add.json.name, 'web-user@local.test');
  assert.equal(await auth('web-user@local.test', 'first password', '127.0.0.21'), 235);

  const list = await run(['user', 'list', '--json']);
  assert.equal(list.code, 0, list.err);
  assert.ok((JSON.parse(list.out) as { name: string }[]).some((u) => u.name === 'web-user@local.test'), 'the CLI (another process) sees it');
  const found = await api('GET', '/api/users?search=web-user');
  assert.deepEqual(found.json.users.map((u: { name: string }) => u.name), ['web-user@local.test']);

  assert.equal((await api('POST', '/api/users/web-user@local.test/password', { password: 'second password' })).status, 200);
  assert.equal(await auth('web-user@local.test', 'first password', '127.0.0.22'), 535);
  assert.equal(await auth('web-user@local.test', 'second password', '127.0.0.22'), 235);

  assert.equal((await api('DELETE', '/api/users/web-user@local.test')).status, 200);
  assert.equal(await auth('web-user@local.test', 'second password', '127.0.0.23'), 535);
  assert.equal((await api('DELETE', '/api/users/web-user@local.test')).status, 404);
});

test('a domain added through the API takes mail at the next RCPT; once removed it is refused; an alias forwards at once', async () => {
  assert.equal((await rcpt('box@extra.test')).code, 554, 'not ours yet: relaying refused');
  assert.equal((await api('POST', '/api/domains', { domain: 'extra.test' })).status, 200);
  assert.equal((await api('POST', '/api/users', { name: 'box@extra.test', password: 'box password' })).status, 200);
  assert.equal((await rcpt('box@extra.test')).code, 250);
  assert.equal((await rcpt('nobody@extra.test')).code, 550, 'a local domain now: unknown users are refused');

  assert.equal((await api('POST', '/api/aliases', { address: 'team@extra.test', targets: ['box@extra.test'] })).status, 200);
  assert.equal((await rcpt('team@extra.test')).code, 250);
  assert.equal((await api('DELETE', '/api/aliases/team@extra.test')).json.removed, 1);
  assert.equal((await rcpt('team@extra.test')).code, 550);

  const domains = await api('GET', '/api/domains');
  assert.deepEqual(domains.json, { config: ['local.test'], database: ['extra.test'] });
  assert.equal((await api('DELETE', '/api/domains/extra.test')).status, 200);
  const refused = await rcpt('box@extra.test');
  assert.equal(refused.code, 554, refused.text);
  assert.match(refused.text, /5\.7\.1/);
});

test('every write is audited with its actor, never with the password; refused input is 400 naming the field; 413 for an oversized body', async () => {
  const audit = await api('GET', '/api/audit?limit=100');
  const actions = audit.json.entries.map((e: { action: string; target: string; actor: string }) => `${e.action} ${e.target} ${e.actor}`);
  for (const want of ['user.add web-user@local.test', 'user.password web-user@local.test', 'user.remove web-user@local.test', 'domain.add extra.test', 'domain.remove extra.test', 'alias.add team@extra.test', 'alias.remove team@extra.test']) {
    assert.ok(actions.includes(`${want} alice (token ci)`), `${want} in ${actions.join(' | ')}`);
  }
  assert.doesNotMatch(audit.body, /first password|second password|box password/);
  assert.ok(!serve.lines.some((l) => /first password|second password|box password/.test(l)), 'no password in the log either');

  const bad = await api('POST', '/api/users', { name: 'x@local.test' });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.code, 'ERR_WEB_BAD_INPUT');
  assert.match(bad.json.error.message, /"password"/);
  const big = await http('POST', '/api/users', { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    JSON.stringify({ name: 'big@local.test', password: 'x'.repeat(100_000) }));
  assert.equal(big.status, 413, big.body);
  assert.equal(big.json.error.code, 'ERR_WEB_TOO_LARGE');
  assert.equal((await api('GET', '/api/users/big@local.test')).status, 404);
  const wrong = await http('PUT', '/api/users', { authorization: `Bearer ${token}` });
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers['allow'], 'GET, HEAD, POST');
});

test('the "Users & domains" page: linked from the navigation; its forms change the directory with the CSRF token, and not without', async () => {
  const form = await http('GET', '/login');
  const loginCsrf = /rg_login_csrf=([^;]+)/.exec([form.headers['set-cookie']].flat().join('\n'))![1]!;
  const login = await http('POST', '/login', { 'content-type': 'application/x-www-form-urlencoded', cookie: `rg_login_csrf=${loginCsrf}` },
    new URLSearchParams({ name: 'alice', password: PASSWORD, _csrf: loginCsrf }).toString());
  assert.equal(login.status, 303);
  const cookie = /rg_session=[^;]+/.exec([login.headers['set-cookie']].flat().join('\n'))![0];
  const csrf = (await http('GET', '/api/me', { cookie })).json.csrfToken as string;
  const overview = await http('GET', '/', { cookie });
  assert.match(overview.body, /<a href="\/users">Users &#38; domains<\/a>/);

  const post = (path: string, fields: Record<string, string>): Promise<Res> =>
    http('POST', path, { cookie, 'content-type': 'application/x-www-form-urlencoded' }, new URLSearchParams(fields).toString());
  assert.equal((await post('/users/add', { name: 'paged@local.test', password: 'paged password' })).status, 403);
  assert.equal(await auth('paged@local.test', 'paged password', '127.0.0.24'), 535);
  const added = await post('/users/add', { name: 'paged@local.test', password: 'paged password', _csrf: csrf });
  assert.equal(added.status, 303, added.body);
  assert.equal(await auth('paged@local.test', 'paged password', '127.0.0.24'), 235);
  const page = await http('GET', String(added.headers['location']), { cookie });
  assert.equal(page.status, 200);
  assert.match(page.body, /role="status">Added user paged@local\.test</);
  assert.match(page.body, /<td>paged@local\.test<\/td>/);
  assert.equal((await post('/users/remove', { name: 'paged@local.test', _csrf: csrf })).status, 303);
  assert.equal(await auth('paged@local.test', 'paged password', '127.0.0.25'), 535);
});

test('OpenAPI: /api/openapi.json is valid OpenAPI 3.1, and every API answer recorded by this file validates against it', async () => {
  const doc = await api('GET', '/api/openapi.json');
  assert.deepEqual(openApiProblems(doc.json), []);
  assert.ok(recorded.length >= 12, `${recorded.length} answers`);
  assert.deepEqual(answerProblems(doc.json, recorded), []);
});
