/**
 * Issue 12: the periodic self-audit inside serve (startRelay, as `relayguard serve` runs it) on an injected clock.
 * The first audit runs at start (no history), the next one only when the clock has moved a full audit.interval; each
 * result reaches GET /api/self-audit and /metrics (relayguard_audit_check_status{check}); an address that becomes
 * listed produces exactly one error-level event (ERR_AUDIT_BLOCKLIST_LISTED), not one per audit while it stays
 * listed; POST /api/self-audit/run runs one now and is written to the admin audit log.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { parseConfig } from '../../src/config/load.ts';
import { ManualClock } from '../../src/core/clock.ts';
import { MemoryLogger } from '../../src/core/log.ts';
import { AdminAccounts } from '../../src/policy/admin-accounts.ts';
import { SqliteAdminStore } from '../../src/store/index.ts';
import { startRelay, type RunningRelay } from '../../src/cli/serve.ts';
import { startFakeDns, type FakeDns } from '../../src/testing/fake-dns.ts';
import type { AuditReport } from '../../src/audit/index.ts';

const DAY = 86_400_000;
const ADDRESS = '198.51.100.9';
const NAME = '9.100.51.198.rbl.test';
let dir: string;
let dns: FakeDns;
let relay: RunningRelay;
let token = '';
const clock = new ManualClock(Date.UTC(2026, 0, 1));
const logger = new MemoryLogger();

function http(method: string, path: string, body?: unknown): Promise<{ status: number; text: string; json: any }> {
  const port = relay.web!.web.admin.port;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => { text += d; }).on('end', () => {
        let json: unknown = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode!, text, json });
      });
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined> | T | null | undefined, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== null && v !== undefined && v !== false) return v;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const listedEvents = () => logger.records.filter((r) => r.level === 'error' && r.fields['err_code'] === 'ERR_AUDIT_BLOCKLIST_LISTED');
const audits = () => logger.records.filter((r) => r.msg === 'audit finished');
const gauge = async (check: string): Promise<number | null> => {
  const m = await http('GET', '/metrics');
  const line = new RegExp(`^relayguard_audit_check_status\\{check="${check}",node="n1"\\} (\\d+)$`, 'm').exec(m.text);
  return line ? Number(line[1]) : null;
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'relayguard-audit-periodic-'));
  dns = await startFakeDns({ zone: { '2.0.0.127.rbl.test': { A: ['127.0.0.2'] } } });
  const admins = new SqliteAdminStore(join(dir, 'relayguard.db'));
  const accounts = new AdminAccounts(admins, { scrypt: { N: 1024, r: 8, p: 1 } });
  await accounts.add('alice', 'correct horse battery');
  token = await accounts.createToken('alice', 'ci');
  await admins.close();
  const config = parseConfig({
    dataDir: dir, hostname: 'mx.local.test', node: 'n1', localDomains: ['local.test'], recipients: { postmaster: 'postmaster@local.test' },
    listeners: [{ name: 'mx', role: 'mx', address: '127.0.0.1', port: 0 }],
    trustedNetworks: ['127.0.0.1/32'],
    delivery: { enabled: false }, dnsbl: { enabled: false },
    web: { enabled: true, port: 0 },
    audit: {
      enabled: true, interval: '1d', addresses: [ADDRESS], dnsTimeout: '1s',
      relay: { enabled: false }, mailDomains: false, // the DNS check of local.test would ask the system resolver
      blocklists: [{ zone: 'rbl.test', servers: [`127.0.0.1:${dns.port}`], delistUrl: 'https://rbl.test/delist?ip=$' }],
    },
  });
  relay = await startRelay(config, logger, {}, { audit: { clock, tickMs: 20 } });
});

after(async () => {
  await relay?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('periodic audit on an injected clock: results on the API and /metrics; a newly listed address logs exactly one error event', async () => {
  // 1. At start there is no history: the first audit runs at once. Not listed: clean.
  await until('the first audit', () => audits().length === 1);
  let api = await http('GET', '/api/self-audit');
  assert.equal(api.status, 200, api.text);
  assert.equal(api.json.latest.exitCode, 0, JSON.stringify(api.json.latest));
  assert.equal(api.json.latest.trigger, 'schedule');
  assert.equal(api.json.latest.startedAt, clock.now());
  assert.deepEqual(api.json.latest.checks.map((c: { check: string }) => c.check), ['config', 'blocklist']);
  assert.equal(api.json.history.length, 1);
  assert.equal(await gauge('blocklist'), 0);
  assert.equal(await gauge('config'), 0);

  // 2. The clock has not moved a day: no audit, whatever the ticks.
  clock.advance(DAY - 1000);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(audits().length, 1);

  // 3. The address gets listed; a day after the first audit the second runs and reports it: one error event.
  dns.set(NAME, { A: ['127.0.0.2'], TXT: ['Listed: seen sending spam'] });
  clock.advance(1000);
  await until('the second audit', () => audits().length === 2);
  assert.equal(listedEvents().length, 1, JSON.stringify(logger.records.filter((r) => r.level === 'error')));
  const ev = listedEvents()[0]!;
  assert.equal(ev.msg, 'audit finding turned bad');
  assert.equal(ev.fields['subject'], `${ADDRESS} in rbl.test`);
  assert.match(String(ev.fields['finding']), /Listed: seen sending spam; delisting: https:\/\/rbl\.test\/delist\?ip=198\.51\.100\.9/);
  api = await http('GET', '/api/self-audit');
  assert.equal(api.json.latest.exitCode, 1);
  assert.deepEqual(api.json.latest.changes.map((c: { kind: string; check: string }) => `${c.kind}:${c.check}`), ['changed:blocklist.listed']);
  assert.equal(api.json.history.length, 2);
  assert.equal(await gauge('blocklist'), 4);
  assert.match((await http('GET', '/metrics')).text, new RegExp(`^relayguard_audit_last_run_timestamp_seconds\\{node="n1"\\} ${Math.floor(clock.now() / 1000)}$`, 'm'));

  // 4. Still listed at the next audit (and one run from the API): no second event.
  clock.advance(DAY);
  await until('the third audit', () => audits().length === 3);
  const run = await http('POST', '/api/self-audit/run', { wait: true });
  assert.equal(run.status, 200, run.text);
  assert.equal((run.json.report as AuditReport).trigger, 'api (alice (token ci))');
  assert.equal(run.json.report.exitCode, 1);
  assert.equal(listedEvents().length, 1, 'a finding that stays bad is not announced again');
  const log = await http('GET', '/api/audit?limit=5');
  assert.ok(log.json.entries.some((e: { action: string }) => e.action === 'audit.run'), JSON.stringify(log.json));

  // 5. Delisted: the finding resolves (info), the gauge goes back to 0.
  dns.zone.delete(NAME);
  clock.advance(DAY);
  await until('the fifth audit', () => audits().length === 5);
  assert.ok(logger.records.some((r) => r.msg === 'audit finding resolved' || (r.msg === 'audit finished' && r.fields['exit_code'] === 0)));
  assert.equal(await gauge('blocklist'), 0);
  assert.equal(listedEvents().length, 1);

  // The page renders the latest report.
  const page = await http('GET', '/self-audit');
  assert.equal(page.status, 200);
  assert.match(page.text, /198\.51\.100\.9 in rbl\.test/);
});
