/**
 * Issue 12, the remote vantage point: two `relayguard serve` processes on loopback, each with its web service over
 * https (its generated self-signed certificate, which the other is given as `ca`) and an API token of an admin of
 * the other (in a token file), audit each other over the API (audit.relay.vantage: {remote: ...}; the audit itself
 * started with POST /api/self-audit/run on each):
 *   - A (trustedNetworks 127.0.0.1/32: closed) is tested by B's web tester (from 127.0.0.4): every listener of A
 *     is relay.closed, in proof mode;
 *   - B, started with `--force` and the hazardous trustedNetworks 0.0.0.0/0, is tested by A's web tester (from
 *     127.0.0.3): its mx listener is relay.open, proved (A's probes went through B's queue and delivery, smart host
 *     A's web tester sink, and arrived); its submission listeners (AUTH required) are closed;
 *   - a wrong token: A's relay findings are unreachable with the remote's 401, the other checks still report;
 *   - B stopped: A's relay findings are unreachable ("does not answer"), the other checks still report.
 * Each remote's web.tester.allowTargets is 127.0.0.0/8 (its SSRF guard refuses loopback otherwise). Nothing leaves
 * loopback.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/testing/ports.ts';
import { startWebServe, type WebServe } from '../../src/testing/web-serve.ts';
import type { AuditReport, Finding } from '../../src/audit/index.ts';

interface Side {
  readonly name: 'A' | 'B';
  readonly dir: string;
  readonly webPort: number;
  readonly sinkPort: number;
  readonly tokenFile: string;
  web?: WebServe;
}

let a: Side;
let b: Side;

async function side(name: 'A' | 'B'): Promise<Side> {
  const dir = await mkdtemp(join(tmpdir(), `relayguard-remote-${name}-`));
  return { name, dir, webPort: await freePort(), sinkPort: await freePort(), tokenFile: join(dir, 'remote-token') };
}

/** The configuration of `self`, audited by `peer`'s web tester; `open`: the hazardous trustedNetworks. */
function config(self: Side, peer: Side, testerSource: string, open: boolean): Record<string, unknown> {
  return {
    trustedNetworks: open ? ['127.0.0.1/32', '0.0.0.0/0'] : ['127.0.0.1/32'],
    recipients: { postmaster: 'u@local.test' },
    // An open relay's queue delivers to the peer's tester sink (where the peer's probe domain's mail must go).
    ...(open ? { delivery: { enabled: true, smartHost: `127.0.0.1:${peer.sinkPort}` } } : {}),
    web: {
      port: self.webPort,
      tls: true,
      tester: {
        allowTargets: ['127.0.0.0/8'],
        sourceAddress: testerSource,
        proof: { probeDomain: `probes-${self.name.toLowerCase()}.test`, sink: { address: '127.0.0.1', port: self.sinkPort }, wait: '8s' },
      },
    },
    audit: {
      relay: {
        vantage: { remote: { url: `https://127.0.0.1:${peer.webPort}`, tokenFile: self.tokenFile, ca: join(peer.dir, 'tls', 'cert.pem'), proof: true } },
      },
      blocklists: [],
      mailDomains: false,
    },
  };
}

/** POST /api/self-audit/run {wait: true} on a side's own API (its token, its certificate as the CA). */
async function auditOf(s: Side): Promise<AuditReport> {
  const ca = await readFile(join(s.dir, 'tls', 'cert.pem'), 'utf8');
  const body = JSON.stringify({ wait: true });
  const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(`https://127.0.0.1:${s.webPort}/api/self-audit/run`, {
      method: 'POST', ca,
      headers: { authorization: `Bearer ${s.web!.token}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
    }, (r) => {
      let text = '';
      r.setEncoding('utf8').on('data', (d: string) => { text += d; }).on('end', () => resolve({ status: r.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
  assert.equal(res.status, 200, res.text);
  return (JSON.parse(res.text) as { report: AuditReport }).report;
}

const findings = (r: AuditReport, check: string): readonly Finding[] => r.checks.find((c) => c.check === check)?.findings ?? [];
const byListener = (r: AuditReport): Record<string, Finding> => Object.fromEntries(findings(r, 'relay').map((f) => [String(f.detail?.['listener']), f]));

before(async () => {
  a = await side('A');
  b = await side('B');
  // A is closed; B is an open relay (`serve --force` accepts the hazardous trustedNetworks).
  a.web = await startWebServe({ dataDir: a.dir, token: true, config: config(a, b, '127.0.0.3', false) });
  b.web = await startWebServe({ dataDir: b.dir, token: true, config: config(b, a, '127.0.0.4', true), args: ['--force'] });
  // Each gets an API token of the other's admin, in its token file.
  for (const [self, peer] of [[a, b], [b, a]] as const) {
    const t = await peer.web!.cli(['admin', 'token', 'add', `peer-${self.name}`, '--admin', peer.web!.admin.name]);
    assert.equal(t.code, 0, t.err);
    await writeFile(self.tokenFile, `${t.out.trim()}\n`, { mode: 0o600 });
  }
});

after(async () => {
  await a?.web?.stop();
  await b?.web?.stop();
  await rm(a?.dir ?? '/nonexistent', { recursive: true, force: true });
  await rm(b?.dir ?? '/nonexistent', { recursive: true, force: true });
});

test('A (closed), audited from B over B\'s API: every listener relay.closed, proof mode', async (t) => {
  const report = await auditOf(a);
  t.diagnostic(`relay check of A from B: ${report.checks.find((c) => c.check === 'relay')!.durationMs} ms for 3 listeners`);
  const f = byListener(report);
  assert.deepEqual(Object.keys(f).sort(), ['mx', 'submission', 'submissions'], JSON.stringify(findings(report, 'relay'), null, 1));
  for (const [name, x] of Object.entries(f)) {
    assert.equal(x.check, 'relay.closed', `${name}: ${JSON.stringify(x)}`);
    assert.equal(x.severity, 'ok');
    assert.equal(x.detail!['mode'], 'prove');
    assert.equal(x.detail!['from'], `remote https://127.0.0.1:${b.webPort} (127.0.0.4)`, 'tested by B\'s tester, from its source address');
  }
  assert.equal(f['mx']!.subject, `listener mx 127.0.0.1:${a.web!.serve.ports.mx}`);
  // B ran the tests: its tester logged a run per listener of A, started by the token A holds.
  const runs = b.web!.serve.logs.filter((l) => l['msg'] === 'tester run finished');
  assert.equal(runs.length, 3, JSON.stringify(runs));
  assert.ok(runs.every((r) => r['verdict'] === 'CLOSED' && r['state'] === 'done'), JSON.stringify(runs));
  assert.ok(b.web!.serve.logs.some((l) => l['msg'] === 'tester run started' && String(l['actor']).includes('peer-A')), 'started with the peer token');
  // The other checks ran beside it.
  assert.deepEqual(findings(report, 'config').map((x) => x.check), ['config.clean']);
});

test('B (open relay, serve --force with 0.0.0.0/0), audited from A over A\'s API: mx relay.open, proved', async (t) => {
  const report = await auditOf(b);
  t.diagnostic(`relay check of B from A: ${report.checks.find((c) => c.check === 'relay')!.durationMs} ms for 3 listeners`);
  assert.equal(report.exitCode, 1);
  const f = byListener(report);
  const mx = f['mx']!;
  assert.equal(mx.check, 'relay.open', JSON.stringify(findings(report, 'relay'), null, 1));
  assert.equal(mx.severity, 'critical');
  assert.equal(mx.detail!['verdict'], 'OPEN');
  assert.equal(mx.detail!['reason'], 'proved', 'A\'s probe went through B\'s queue and delivery to A\'s sink');
  assert.equal(mx.detail!['mode'], 'prove');
  assert.equal(mx.detail!['from'], `remote https://127.0.0.1:${a.webPort} (127.0.0.3)`);
  assert.ok((mx.detail!['acceptedTricks'] as string[]).length > 0);
  for (const name of ['submission', 'submissions']) assert.equal(f[name]!.check, 'relay.closed', JSON.stringify(f[name]));
  // B delivered A's probes to A's sink.
  assert.ok(b.web!.serve.logs.some((l) => l['msg'] === 'recipient delivered' && String(l['rcpt'] ?? '').endsWith('@probes-a.test')), 'B delivered a probe');
  // and the config lint of B catches the hazard beside it
  assert.ok(findings(report, 'config').some((x) => x.check === 'config.trusted-network-public'));
});

test('a wrong token: the relay findings are unreachable with the remote\'s 401; the other checks still run', async () => {
  const good = await readFile(a.tokenFile, 'utf8');
  await writeFile(a.tokenFile, 'rgt_this_is_not_a_token_of_B_0000000000\n', { mode: 0o600 });
  try {
    const report = await auditOf(a);
    assert.equal(report.exitCode, 1);
    const f = byListener(report);
    assert.deepEqual(Object.keys(f).sort(), ['mx', 'submission', 'submissions']);
    for (const x of Object.values(f)) {
      assert.equal(x.check, 'relay.inconclusive', JSON.stringify(x));
      assert.equal(x.severity, 'unreachable');
      assert.equal(x.detail!['reason'], 'remote-unauthorized');
      assert.match(x.summary, /HTTP 401 ERR_WEB_UNAUTHENTICATED/);
    }
    assert.deepEqual(findings(report, 'config').map((x) => x.check), ['config.clean']);
    assert.ok(findings(report, 'blocklist').length > 0);
    // the trend: closed -> unreachable
    assert.ok(report.changes.some((c) => c.kind === 'changed' && c.from === 'ok' && c.to === 'unreachable'), JSON.stringify(report.changes));
  } finally {
    await writeFile(a.tokenFile, good, { mode: 0o600 });
  }
});

test('the remote stopped: unreachable at once, the other checks still run', async () => {
  await b.web!.serve.stop();
  const t0 = Date.now();
  const report = await auditOf(a);
  assert.ok(Date.now() - t0 < 30_000, 'a refused connection is reported at once');
  const f = byListener(report);
  for (const x of Object.values(f)) {
    assert.equal(x.check, 'relay.inconclusive', JSON.stringify(x));
    assert.equal(x.severity, 'unreachable');
    assert.equal(x.detail!['reason'], 'remote-unreachable');
    assert.match(x.summary, /does not answer: ECONNREFUSED/);
  }
  assert.equal(Object.keys(f).length, 3);
  assert.deepEqual(findings(report, 'config').map((x) => x.check), ['config.clean']);
  assert.equal(report.exitCode, 1);
});
