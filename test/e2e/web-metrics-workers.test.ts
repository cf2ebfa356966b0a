/**
 * /metrics of `relayguard serve` with `workers: 2`: worker 0 serves it as the sum over both workers (collected
 * through the primary with prom-client's AggregatorRegistry, src/cli/cluster-metrics.ts), so mail accepted by
 * worker 1 is counted too; the exposition stays strict Prometheus text with the node label.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { CLI, NODE, startServe } from '../../src/testing/serve-process.ts';
import { p1 } from '../../src/testing/smtp-client.ts';
import { parseProm, value } from './prom-text.ts';

function get(port: number, path: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function cli(configFile: string, args: readonly string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(NODE, [CLI, ...args, '--config', configFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    c.on('close', (code) => resolve({ code, out, err }));
    c.stdin.end(input);
  });
}

test('workers: 2: /metrics (served by worker 0) sums both workers\' counters', { timeout: 90_000 }, async () => {
  const serve = await startServe({ config: { workers: 2, web: { enabled: true, port: 0 } } });
  try {
    const line = serve.logs.find((l) => l['msg'] === 'web listening' && l['surface'] === 'admin');
    assert.ok(line, 'worker 0 logs where the web service listens');
    assert.equal(line['worker'], 0);
    const port = Number(line['port']);
    assert.equal((await cli(serve.configFile, ['admin', 'add', 'alice', '--password-stdin'], 'correct horse battery\n')).code, 0);
    const t = await cli(serve.configFile, ['admin', 'token', 'add', 'prom', '--admin', 'alice']);
    assert.equal(t.code, 0, t.err);
    const token = t.out.trim();
    const before = parseProm((await get(port, '/metrics', token)).body);

    // One message per connection until both workers have accepted some (the kernel spreads the connections).
    const byWorker = new Map<unknown, number>();
    let sent = 0;
    while (sent < 60 && !((byWorker.get(0) ?? 0) > 0 && (byWorker.get(1) ?? 0) > 0 && sent >= 8)) {
      const c = await p1(serve.ports.mx);
      try {
        assert.equal((await c.cmd('MAIL FROM:<a@example.net>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<u@local.test>')).code, 250);
        assert.equal((await c.cmd('DATA')).code, 354);
        const r = await c.cmd(`Subject: workers ${sent}\r\n\r\nhello\r\n.`);
        assert.equal(r.code, 250, r.text);
        await c.cmd('QUIT');
      } finally {
        c.close();
      }
      sent++;
      byWorker.clear();
      for (const l of serve.logs) if (l['msg'] === 'message accepted') byWorker.set(l['worker'], (byWorker.get(l['worker']) ?? 0) + 1);
    }
    assert.ok((byWorker.get(1) ?? 0) > 0, `worker 1 accepted some of ${sent} messages: ${JSON.stringify([...byWorker])}`);

    const deadline = Date.now() + 10_000;
    let now = parseProm((await get(port, '/metrics', token)).body);
    while (value(now, 'relayguard_smtp_sessions_total', { listener: 'mx' }) - value(before, 'relayguard_smtp_sessions_total', { listener: 'mx' }) < sent) {
      assert.ok(Date.now() < deadline, 'every session counted');
      await new Promise((r) => setTimeout(r, 200));
      now = parseProm((await get(port, '/metrics', token)).body);
    }
    const d = (name: string, labels: Record<string, string> = {}): number => value(now, name, labels) - value(before, name, labels);
    assert.equal(d('relayguard_messages_accepted_total'), sent, `worker 0 alone accepted ${byWorker.get(0) ?? 0}`);
    assert.equal(d('relayguard_accept_latency_seconds_count'), sent);
    assert.equal(d('relayguard_relay_decisions_total', { action: 'local', rule: 'local-domain' }), sent);
    for (const f of now.values()) for (const s of f.samples) assert.ok(s.labels['node'], `${s.name} carries node`);
    // Process metrics of both workers are summed too: the node's CPU.
    assert.ok(value(now, 'process_cpu_seconds_total') > 0);
  } finally {
    await serve.stop();
    await serve.cleanup();
  }
});
