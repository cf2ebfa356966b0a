/**
 * Relay decisions as data, against a real `relayguard serve` (web on an ephemeral loopback port, trusted networks
 * 127.0.0.1/32): a stranger at 127.0.0.2 tries to relay (554 5.7.1) and writes to an unknown local user (550 5.1.1);
 * a trusted client at 127.0.0.1 delivers locally. The decisions reach /api/decisions (recorded in batches from the
 * 'relay decision' log events, dataDir/decisions.db) with their rule, reason and reply; every filter narrows the
 * list, the cursor pages through it, /api/decisions/why answers "why was this refused?", bad input is 400 naming
 * the field, an anonymous request is 401. After a restart the decisions are still there (written on stop).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { startServe, CLI, NODE, type ServeProcess } from '../../src/testing/serve-process.ts';
import { p1 } from '../../src/testing/smtp-client.ts';

let serve: ServeProcess;
let port = 0;
let token = '';
const STRANGER = '127.0.0.2';

function http(path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; json: any }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'GET', path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(body); } catch { /* not JSON */ }
        resolve({ status: res.statusCode!, body, json });
      });
    });
    req.on('error', reject);
    req.end();
  });
}
const api = (path: string): ReturnType<typeof http> => http(path, { authorization: `Bearer ${token}` });

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

async function webPort(s: ServeProcess): Promise<number> {
  const line = s.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin');
  assert.ok(line, 'serve logs where the web service listens');
  return Number(line['port']);
}

/** Polls until the decisions matching `query` number at least `n` (the recorder flushes every ~250 ms). */
async function waitFor(query: string, n: number): Promise<any[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const r = await api(`/api/decisions?${query}`);
    assert.equal(r.status, 200, r.body);
    if (r.json.decisions.length >= n || Date.now() > deadline) return r.json.decisions;
    await new Promise((res) => setTimeout(res, 50));
  }
}

const config = { trustedNetworks: ['127.0.0.1/32'], web: { enabled: true, port: 0 } };

before(async () => {
  serve = await startServe({ config });
  port = await webPort(serve);
  const t = await run(['admin', 'add', 'alice', '--password-stdin'], 'correct horse battery\n');
  assert.equal(t.code, 0, t.err);
  const tok = await run(['admin', 'token', 'add', 'ci', '--admin', 'alice']);
  assert.equal(tok.code, 0, tok.err);
  token = tok.out.trim();

  const c = await p1(serve.ports.mx, { localAddress: STRANGER, helo: 'stranger.example' });
  assert.equal((await c.cmd('MAIL FROM:<Spammer@Example.ORG>')).code, 250);
  const relay = await c.cmd('RCPT TO:<victim@elsewhere.example>');
  assert.equal(relay.code, 554, relay.text);
  assert.match(relay.text, /^5\.7\.1 /);
  const unknown = await c.cmd('RCPT TO:<nobody@local.test>');
  assert.equal(unknown.code, 550, unknown.text);
  assert.match(unknown.text, /^5\.1\.1 /);
  await c.cmd('QUIT');
  const t2 = await p1(serve.ports.mx, { helo: 'trusted.example' });
  assert.equal((await t2.cmd('MAIL FROM:<friend@example.net>')).code, 250);
  assert.equal((await t2.cmd('RCPT TO:<u@local.test>')).code, 250);
  await t2.cmd('QUIT');
});

after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

test('the stranger\'s refusals are in /api/decisions with rule, reason and reply; newest first; in dataDir/decisions.db', async () => {
  const all = await waitFor('', 3);
  assert.equal(all.length, 3, JSON.stringify(all));
  assert.ok(existsSync(join(serve.dataDir, 'decisions.db')));
  const [accepted, unknown, relay] = all;
  assert.deepEqual([accepted.clientIp, accepted.action, accepted.rcpt], ['127.0.0.1', 'local', 'u@local.test']);
  assert.equal(relay.clientIp, STRANGER);
  assert.equal(relay.action, 'reject');
  assert.equal(relay.rcpt, 'victim@elsewhere.example');
  assert.equal(relay.mailFrom, 'spammer@example.org');
  assert.equal(relay.helo, 'stranger.example');
  assert.equal(relay.listener, 'mx');
  assert.match(relay.reply, /^554 5\.7\.1 /);
  assert.equal(typeof relay.rule, 'string');
  assert.notEqual(relay.rule, 'none');
  assert.ok(relay.reason && relay.reason.length > 0, 'a reason');
  assert.equal(unknown.action, 'reject');
  assert.equal(unknown.rule, 'unknown-recipient');
  assert.equal(unknown.rcpt, 'nobody@local.test');
  assert.match(unknown.reply, /^550 5\.1\.1 /);
  assert.ok(relay.id < unknown.id && unknown.id < accepted.id);
  assert.equal(new Date(relay.time).getTime(), relay.at);
  // The rule and reason are the ones the log line carried.
  const logged = serve.logs.filter((l) => l['msg'] === 'relay decision' && l['client_ip'] === STRANGER);
  assert.deepEqual(logged.map((l) => [l['rule'], l['reason'], l['reply']]), [[relay.rule, relay.reason, relay.reply], [unknown.rule, unknown.reason, unknown.reply]]);
});

test('filters: client, sender, recipient, action, rule, time range; cursor paging', async () => {
  await waitFor('', 3);
  const ids = async (q: string): Promise<string[]> => (await waitFor(q, 0)).map((d) => `${d.clientIp} ${d.rcpt}`);
  assert.deepEqual(await ids(`client=${STRANGER}`), [`${STRANGER} nobody@local.test`, `${STRANGER} victim@elsewhere.example`]);
  assert.deepEqual(await ids('client=127.0.0.1'), ['127.0.0.1 u@local.test']);
  assert.deepEqual(await ids(`sender=${encodeURIComponent('<SPAMMER@example.org>')}`), [`${STRANGER} nobody@local.test`, `${STRANGER} victim@elsewhere.example`]);
  assert.deepEqual(await ids('rcpt=Victim@Elsewhere.example'), [`${STRANGER} victim@elsewhere.example`]);
  assert.deepEqual(await ids('action=local'), ['127.0.0.1 u@local.test']);
  assert.deepEqual(await ids('action=reject&rule=unknown-recipient'), [`${STRANGER} nobody@local.test`]);
  assert.deepEqual(await ids('since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z'), []);
  assert.equal((await ids(`since=${Date.now() - 600_000}`)).length, 3);
  const p1r = await api('/api/decisions?limit=2');
  assert.equal(p1r.json.decisions.length, 2);
  assert.equal(typeof p1r.json.next, 'number');
  const p2r = await api(`/api/decisions?limit=2&before=${p1r.json.next}`);
  assert.equal(p2r.json.decisions.length, 1);
  assert.equal(p2r.json.next, null);
  assert.equal(p2r.json.decisions[0].rcpt, 'victim@elsewhere.example');
});

test('/api/decisions/why answers from the data', async () => {
  await waitFor('', 3);
  let r = await api(`/api/decisions/why?client=${STRANGER}&rcpt=victim@elsewhere.example`);
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.refused, true);
  assert.equal(r.json.refusals.length, 1);
  assert.match(r.json.answer, new RegExp(`refused <victim@elsewhere\\.example> from 127\\.0\\.0\\.2 at .* by rule "${r.json.refusals[0].rule}"`));
  assert.match(r.json.answer, /554 5\.7\.1/);
  r = await api('/api/decisions/why?rcpt=nobody@local.test');
  assert.equal(r.json.refused, true);
  assert.match(r.json.answer, /by rule "unknown-recipient"/);
  assert.match(r.json.answer, /550 5\.1\.1/);
  r = await api('/api/decisions/why?client=127.0.0.1');
  assert.equal(r.json.refused, false);
  assert.match(r.json.answer, /accepted <u@local\.test>.*no refusal recorded/);
  r = await api('/api/decisions/why?client=192.0.2.1');
  assert.equal(r.json.latest, null);
  assert.match(r.json.answer, /No relay decision recorded/);
});

test('the dashboard shows the latest refusals', async () => {
  await waitFor('', 3);
  const r = await api('/');
  assert.equal(r.status, 200, r.body);
  const section = r.body.slice(r.body.indexOf('<h2>Latest refusals</h2>'), r.body.indexOf('<h2>Audit log</h2>'));
  assert.match(section, /<td>victim@elsewhere\.example<\/td>/);
  assert.match(section, /<td>nobody@local\.test<\/td><td>unknown-recipient<\/td>/);
  assert.match(section, /554 5\.7\.1/);
  assert.doesNotMatch(section, /u@local\.test/, 'accepted recipients are not refusals');
});

test('bad input is 400 naming the field; anonymous is 401; both routes are in the OpenAPI document', async () => {
  for (const [q, field] of [['client=not-an-ip', 'client'], ['action=maybe', 'action'], ['limit=0', 'limit'], ['since=yesterday', 'since'], ['color=red', 'query']] as const) {
    const r = await api(`/api/decisions?${q}`);
    assert.equal(r.status, 400, `${q}: ${r.body}`);
    assert.equal(r.json.error.code, 'ERR_WEB_BAD_INPUT');
    assert.ok(r.json.error.message.includes(`"${field}`), `${q}: ${r.json.error.message}`);
  }
  const none = await api('/api/decisions/why');
  assert.equal(none.status, 400, none.body);
  for (const path of ['/api/decisions', `/api/decisions/why?client=${STRANGER}`]) {
    const r = await http(path);
    assert.equal(r.status, 401, r.body);
    assert.equal(r.json.error.code, 'ERR_WEB_UNAUTHENTICATED');
  }
  const doc = await api('/api/openapi.json');
  assert.ok(doc.json.paths['/api/decisions']?.get);
  assert.ok(doc.json.paths['/api/decisions/why']?.get);
});

test('a stop writes what is buffered; after a restart the decisions are still there', async () => {
  const c = await p1(serve.ports.mx, { localAddress: STRANGER });
  assert.equal((await c.cmd('MAIL FROM:<late@example.org>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<late@elsewhere.example>')).code, 554);
  await c.cmd('QUIT');
  assert.equal(await serve.stop(), 0);
  const dataDir = serve.dataDir;
  const ports = serve.ports;
  serve = await startServe({ config, dataDir, ports });
  port = await webPort(serve);
  const r = await api('/api/decisions?sender=late@example.org');
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.decisions.length, 1);
  assert.equal(r.json.decisions[0].rcpt, 'late@elsewhere.example');
});
