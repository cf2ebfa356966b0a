/**
 * Issue 12, the required relay test: a relay started with a hazardous trusted network (`serve --force`,
 * trustedNetworks 0.0.0.0/0 beside 127.0.0.1/32) is caught by the audit's configuration lint and proved open by its
 * relay check from an untrusted loopback address (127.0.0.2), in proof mode: the probe goes through serve's queue and
 * delivery (smart host) to the sink the audit starts. After the fix (SIGHUP with trustedNetworks 127.0.0.1/32) both
 * pass and the report names what changed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import { freePort } from '../../src/testing/ports.ts';
import { CLI, NODE, startServe, type ServeProcess } from '../../src/testing/serve-process.ts';
import type { AuditReport } from '../../src/audit/index.ts';

const PROBE_DOMAIN = 'probes.test';
let serve: ServeProcess;
let sinkPort = 0;

function config(trustedNetworks: string[], ports: ServeProcess['ports'] | null, dataDir: string | null): Record<string, unknown> {
  return {
    trustedNetworks,
    recipients: { postmaster: 'u@local.test' },
    delivery: { enabled: true, smartHost: `127.0.0.1:${sinkPort}` },
    audit: {
      relay: { probeDomain: PROBE_DOMAIN, sink: { address: '127.0.0.1', port: sinkPort }, probeWait: '8s' },
      blocklists: [],
    },
    ...(dataDir ? { dataDir, hostname: 'mx.local.test', localDomains: ['local.test'], dnsbl: { listen: { port: 0 } }, web: { enabled: false } } : {}),
    ...(ports ? {
      listeners: [
        { name: 'mx', role: 'mx', address: '127.0.0.1', port: ports.mx, tls: 'starttls' },
        { name: 'submission', role: 'submission', address: '127.0.0.1', port: ports.submission, tls: 'starttls' },
        { name: 'submissions', role: 'submission', address: '127.0.0.1', port: ports.submissions, tls: 'implicit' },
      ],
    } : {}),
  };
}

function audit(...args: string[]): Promise<{ code: number | null; out: string; err: string; report: AuditReport }> {
  return new Promise((resolve) => {
    const c = spawn(NODE, [CLI, 'audit', '-q', '--config', serve.configFile, '--json', '--only', 'config,relay', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('close', (code) => {
      let report: AuditReport;
      try { report = JSON.parse(out) as AuditReport; } catch { throw new Error(`audit printed no JSON (exit ${code}): ${out}\n${err}`); }
      resolve({ code, out, err, report });
    });
  });
}

const findings = (r: AuditReport, check: string) => r.checks.find((c) => c.check === check)!.findings;

before(async () => {
  sinkPort = await freePort();
  serve = await startServe({ config: config(['127.0.0.1/32', '0.0.0.0/0'], null, null), args: ['--force'] });
});
after(async () => {
  await serve?.stop();
  await serve?.cleanup();
});

test('a hazardous trusted network: the lint catches it, the relay check proves the relay open from 127.0.0.2; after the fix both pass', async () => {
  const bad = await audit();
  assert.equal(bad.code, 1, bad.out + bad.err);
  const lint = findings(bad.report, 'config');
  const hazard = lint.find((f) => f.check === 'config.trusted-network-public');
  assert.ok(hazard, JSON.stringify(lint));
  assert.equal(hazard.severity, 'critical');
  assert.equal(hazard.subject, 'trustedNetworks[1]');
  const relay = findings(bad.report, 'relay');
  const mx = relay.find((f) => f.subject === `listener mx 127.0.0.1:${serve.ports.mx}`)!;
  assert.equal(mx.check, 'relay.open', JSON.stringify(relay, null, 1));
  assert.equal(mx.severity, 'critical');
  assert.equal(mx.detail!['verdict'], 'OPEN');
  assert.equal(mx.detail!['reason'], 'proved', 'the probe went through the queue and delivery to the sink');
  assert.equal(mx.detail!['mode'], 'prove');
  assert.equal(mx.detail!['from'], '127.0.0.2');
  assert.ok((mx.detail!['acceptedTricks'] as string[]).length > 0);
  // submission listeners require AUTH whatever trustedNetworks says
  for (const name of ['submission', 'submissions']) {
    const f = relay.find((x) => x.subject.startsWith(`listener ${name} `))!;
    assert.equal(f.check, 'relay.closed', JSON.stringify(f));
  }
  // serve itself logged the probe's delivery to the sink
  assert.ok(serve.logs.some((l) => l['msg'] === 'recipient delivered' && String(l['rcpt'] ?? '').endsWith(`@${PROBE_DOMAIN}`)), 'serve delivered a probe');

  // The fix: trust only 127.0.0.1, reload.
  await writeFile(serve.configFile, stringify(config(['127.0.0.1/32'], serve.ports, serve.dataDir)));
  const reloaded = serve.logs.length;
  serve.child.kill('SIGHUP');
  const deadline = Date.now() + 10_000;
  while (!serve.logs.slice(reloaded).some((l) => l['msg'] === 'configuration reloaded')) {
    assert.ok(Date.now() < deadline, `no reload: ${JSON.stringify(serve.logs.slice(reloaded))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const good = await audit();
  assert.equal(good.code, 0, good.out + good.err);
  assert.deepEqual(findings(good.report, 'config').map((f) => f.check), ['config.clean']);
  for (const f of findings(good.report, 'relay')) {
    assert.equal(f.check, 'relay.closed', JSON.stringify(f));
    assert.equal(f.detail!['mode'], 'prove');
  }
  // the trend: the hazard is gone, the mx listener went from open to closed
  const changes = good.report.changes;
  assert.ok(changes.some((c) => c.kind === 'resolved' && c.check === 'config.trusted-network-public'), JSON.stringify(changes));
  assert.ok(changes.some((c) => c.kind === 'changed' && c.check === 'relay.closed' && c.from === 'critical' && c.to === 'ok'), JSON.stringify(changes));
  assert.equal(good.report.previousStartedAt, bad.report.startedAt);
});
